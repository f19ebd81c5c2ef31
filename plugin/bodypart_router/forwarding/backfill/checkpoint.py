"""The current (or last) backfill and its planned instances, in SQLite: a backfill survives restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Mapping

from ...states import InstanceState

#: File name of the checkpoint inside the router's state directory.
CHECKPOINT_NAME = "backfill.sqlite3"


#: Outcomes of a planned instance that are not its state: the router had handled it already,
#: or it was deleted before its turn.
KNOWN, DELETED = "known", "deleted"


def outcome_kind(outcome: str) -> str:
    """How a done instance is counted: the kind of its state (``skipped``, ``failed``, ``held``),
    its state (``classified``, ``forwarded``...), or ``known`` / ``deleted``."""
    state = InstanceState.read(outcome)
    if state is not None:
        return str(state.kind or state)
    return KNOWN if outcome.startswith(f"{KNOWN}:") else outcome  # "known:<state>": earlier checkpoints


class Checkpoint:
    """The current (or last) backfill, persisted in SQLite. Thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS job (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, instance TEXT UNIQUE NOT NULL,"
            " done INTEGER NOT NULL DEFAULT 0, outcome TEXT)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def job(self) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM job WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def new_job(self, job: Mapping[str, Any]) -> None:
        """Replace the previous backfill (its items too)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM items")
            self._db.execute("INSERT OR REPLACE INTO job (id, data) VALUES (1, ?)", (json.dumps(dict(job)),))
            self._db.execute("COMMIT")

    def update_job(self, **changes: Any) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT data FROM job WHERE id = 1").fetchone()
            data = {**(json.loads(row[0]) if row else {}), **changes}
            self._db.execute("INSERT OR REPLACE INTO job (id, data) VALUES (1, ?)", (json.dumps(data),))
        return data

    def add(self, instances: list[str]) -> None:
        """Add planned instances; ones already planned (and maybe done) are kept as they are."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO items (instance) VALUES (?)", [(i,) for i in instances])
            self._db.execute("COMMIT")

    def pending(self, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT instance FROM items WHERE done = 0 ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    def mark_done(self, instance: str, outcome: str) -> None:
        with self._lock:
            self._db.execute("UPDATE items SET done = 1, outcome = ? WHERE instance = ?", (outcome, instance))

    def counts(self) -> tuple[int, int]:
        """``(done, total)``."""
        with self._lock:
            done, total = self._db.execute("SELECT COALESCE(SUM(done), 0), COUNT(*) FROM items").fetchone()
        return int(done), int(total)

    def outcomes(self) -> dict[str, int]:
        """Done instances per outcome kind: ``classified``, ``skipped``, ``failed`` ... (reason dropped)."""
        with self._lock:
            rows = self._db.execute("SELECT outcome, COUNT(*) FROM items WHERE done = 1 GROUP BY outcome").fetchall()
        out: dict[str, int] = {}
        for outcome, n in rows:
            kind = outcome_kind(str(outcome))
            out[kind] = out.get(kind, 0) + int(n)
        return dict(sorted(out.items()))
