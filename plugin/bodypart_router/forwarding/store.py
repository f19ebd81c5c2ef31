"""The router's durable work list: a small transactional SQLite database (WAL mode).

Why SQLite and not the in-memory queue or Orthanc's job history: Orthanc keeps only the
last ``JobsHistorySize`` jobs and never retries a failed one, and an in-memory queue dies
with the process. Every instance the router accepts is written here *before* any work is
done on it, and every step (classified, forward submitted, delivered, retried, dead) is a
committed transaction, so a ``kill -9`` loses nothing: at the next start the adapter puts
interrupted work back in the queue and resumes tracking submitted forwards.

Two tables:

* ``instances``: one row per Orthanc instance the router has seen; ``state`` (an
  :class:`~bodypart_router.states.InstanceState`) mirrors the ``BodyPartState`` metadata.
* ``deliveries``: one row per (instance, destination, model version), with a UNIQUE
  constraint on that triple. That constraint *is* the idempotence guarantee: storing an
  instance again, by REST or C-STORE, or recovering it after a crash, can never create a
  second forward to the same destination with the same model. Only :meth:`Store.resubmit`
  (a person's decision) sends again. ``state``: a :class:`~bodypart_router.states.DeliveryState`.

A delivery is marked ``submitted`` *before* Orthanc is asked to send it, and its job ID is
added once Orthanc answers. So after a crash every forward that may have left is known:
those still ``submitted`` go to ``verify`` (outcome unknown) and are only sent again after
the destination said it does not hold the instance (see :mod:`bodypart_router.orthanc_api.destinations`).

``synchronous=NORMAL`` with WAL survives process crashes (the case that matters for a
plugin); use ``FULL`` through the constructor if power loss must be covered too.

A database that is not one, or fails SQLite's ``quick_check`` at opening, is set aside (renamed
``state.sqlite.corrupt-<time>``) and a new one is made; :attr:`Store.is_new` tells the adapter,
which then rebuilds the work list from Orthanc's changes log. Every error names the file
(:class:`StoreError`), so that a full disk or a damaged file points at the ``StateDirectory``.
This module never imports ``orthanc``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..states import DeliveryState, InstanceState
from .store_deliveries import DeliveryLedger
from .store_reports import StoreReports
from .store_schema import (SCHEMA, SCHEMA_VERSION, TAKEN_OVER, Delivery, InstanceRecord, Received, StoreError, chunks,
                           record_of)
from .transitions import after_classification, after_reroute, new_delivery

#: The store and the records it hands out (defined in store_schema.py, imported from here).
__all__ = ["Delivery", "InstanceRecord", "Received", "Store", "StoreError", "WAL_CHECKPOINT_PAGES", "WAL_SIZE_LIMIT_BYTES"]

#: Pages (4 KiB) the write-ahead log may reach before SQLite copies it into the database.
WAL_CHECKPOINT_PAGES = 128
#: Size the write-ahead log is cut back to after a checkpoint.
WAL_SIZE_LIMIT_BYTES = 1 << 20


def _set_aside(path: Path) -> Path:
    """Rename a corrupt database (and its WAL files) out of the way; returns its new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target




class Store(DeliveryLedger, StoreReports):
    """Thread-safe access to the state database (one connection guarded by a lock; every call is short).

    Its parts: the instances (here), the delivery ledger (:mod:`.store_deliveries`), the
    reports (:mod:`.store_reports`); the tables and records are in :mod:`.store_schema`."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        #: Where a corrupt database found at opening was moved to (None: it was sound).
        self.set_aside: Path | None = None
        #: No work list was there (first start, a deleted, empty or corrupt file): the adapter
        #: rebuilds what it can from Orthanc.
        self.is_new = False
        #: What was wrong with the database that was set aside.
        self.corruption: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open(synchronous)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable, disk full: not the file's content
                raise StoreError(f"cannot open the state database {self.path} (StateDirectory): {exc}") from exc
            try:  # not a database, or a damaged one
                self._db.close()
            except (AttributeError, sqlite3.Error):
                pass
            self.set_aside = _set_aside(self.path)
            self._db = self._open(synchronous)
            self.corruption = f"{exc}"
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the state database {self.path} (StateDirectory): {exc}") from exc
        version = self.get_setting("schema_version")
        self.is_new = version is None
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(instances)")}
        if "evidence" not in columns:  # schema 1: the model's full output was not kept
            self._db.execute("ALTER TABLE instances ADD COLUMN evidence TEXT")
        if "series_id" not in columns:
            self._db.execute("ALTER TABLE instances ADD COLUMN series_id TEXT")
        self._db.execute("CREATE INDEX IF NOT EXISTS instances_by_series ON instances (series_id)")
        if version is None or int(version) < SCHEMA_VERSION:
            self.set_setting("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise RuntimeError(
                f"state database {self.path} has schema {version}, newer than this router ({SCHEMA_VERSION}); "
                "upgrade the plugin or point StateDirectory elsewhere"
            )

    def _open(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db = db
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # A small write-ahead log, checkpointed often and cut back after: on a nearly full
        # StateDirectory, SQLite's default (4 MB before a checkpoint) can take all the space
        # freed, leaving none for the checkpoint that would shrink it.
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems))
        db.executescript(SCHEMA)  # idempotent (IF NOT EXISTS); executescript manages its own commit
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- settings (e.g. the changes-log checkpoint) -----------------------------------
    def get_setting(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO settings(key, value) VALUES(?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- ingest -----------------------------------------------------------------------
    def add_received(self, items: Iterable[Received]) -> list[Received]:
        """Record newly stored instances; returns only those not seen before (duplicates are ignored)."""
        now = time.time()
        added: list[Received] = []
        with self._tx() as db:
            for item in items:
                cur = db.execute(
                    "INSERT OR IGNORE INTO instances(instance_id, state, detail, received_at, updated_at) "
                    "VALUES(?, ?, ?, ?, ?)",
                    (item.instance_id, item.state, item.detail, now, now),
                )
                if cur.rowcount:
                    added.append(item)
        return added

    def known(self, instance_ids: Iterable[str]) -> set[str]:
        ids = list(instance_ids)
        found: set[str] = set()
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            found.update(r["instance_id"] for r in self._query(
                f"SELECT instance_id FROM instances WHERE instance_id IN ({marks})", chunk))
        return found

    def reset_in_flight(self) -> int:
        """At start-up: work that was being classified when the process died goes back to the queue."""
        with self._tx() as db:
            return db.execute("UPDATE instances SET state = ?, updated_at = ? WHERE state = ?",
                              (InstanceState.QUEUED, time.time(), InstanceState.PROCESSING)).rowcount

    def release(self, instance_ids: Sequence[str], detail: str) -> None:
        """Claimed instances go back to the queue, the attempt not counted: nothing about them
        failed (the classifier could not start, the store or Orthanc failed around them)."""
        with self._tx() as db:
            for chunk in chunks(list(instance_ids), 500):
                db.execute(f"UPDATE instances SET state = ?, detail = ?, attempts = MAX(0, attempts - 1), "
                           f"updated_at = ? WHERE state = ? AND instance_id IN ({','.join('?' * len(chunk))})",
                           (InstanceState.QUEUED, detail[:500], time.time(), InstanceState.PROCESSING, *chunk))

    def claim_queued(self, limit: int) -> list[str]:
        """Take up to ``limit`` queued instances, oldest first, marking them ``processing``."""
        with self._tx() as db:
            rows = db.execute(
                "UPDATE instances SET state = ?, attempts = attempts + 1, updated_at = ? WHERE instance_id IN "
                "(SELECT instance_id FROM instances WHERE state = ? ORDER BY received_at LIMIT ?) "
                "RETURNING instance_id, received_at",
                (InstanceState.PROCESSING, time.time(), InstanceState.QUEUED, limit),
            ).fetchall()
        return [r["instance_id"] for r in sorted(rows, key=lambda r: r["received_at"])]

    def queued_count(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM instances WHERE state IN (?, ?)",
                               (InstanceState.QUEUED, InstanceState.PROCESSING))[0]["n"])

    def requeue(self, instance_id: str, detail: str) -> int:
        """Put an instance back after a transient error; returns how many attempts it has had."""
        with self._tx() as db:
            db.execute("UPDATE instances SET state = ?, detail = ?, updated_at = ? WHERE instance_id = ?",
                       (InstanceState.QUEUED, detail, time.time(), instance_id))
            row = db.execute("SELECT attempts FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
        return int(row["attempts"]) if row else 0

    def set_state(self, instance_id: str, state: InstanceState, detail: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE instances SET state = ?, detail = ?, updated_at = ? WHERE instance_id = ?",
                       (state, detail, time.time(), instance_id))

    def forget(self, instance_id: str) -> None:
        """The instance was deleted from Orthanc: drop its pending work (delivered rows stay, for idempotence)."""
        with self._tx() as db:
            db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
            db.execute("DELETE FROM deliveries WHERE instance_id = ? AND state IN (?, ?, ?)",
                       (instance_id, DeliveryState.PENDING, DeliveryState.SUBMITTED, DeliveryState.VERIFY))

    def record_classification(
        self,
        instance_id: str,
        *,
        class_name: str,
        score: float,
        model: str,
        destinations: Sequence[str],
        shadow: bool = False,
        evidence: str | None = None,
        held: InstanceState | None = None,
    ) -> InstanceState:
        """Store a result and create its deliveries in one transaction; returns the instance's new state.

        A delivery that already exists for (instance, destination, model) is left alone:
        that is what makes a recovered or re-stored instance forward at most once.
        ``evidence`` (JSON: the model's full output) lets ``explain`` and ``reroute`` decide
        again later; ``held`` (``held:<reason>``) is the state of a film a quality
        requirement held back, kept until a dead letter replaces it.
        """
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT detail FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
            first = new_delivery(shadow=shadow, taken_over=row is not None and row["detail"] == TAKEN_OVER)
            for dest in destinations:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries(instance_id, destination, model, state, next_attempt_at, "
                    "created_at, updated_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                    (instance_id, dest, model, first, now, now, now),
                )
            state = after_classification(self._delivery_states(db, instance_id, model), held)
            db.execute(
                "UPDATE instances SET state = ?, class_name = ?, score = ?, model = ?, detail = NULL, "
                "updated_at = ?, evidence = COALESCE(?, evidence) WHERE instance_id = ?",
                (state, class_name, score, model, now, evidence, instance_id),
            )
        return state

    def await_series(self, instance_id: str, *, series_id: str, class_name: str, score: float, model: str,
                     evidence: str) -> None:
        """``DecisionLevel: series``: keep the film's own result until its series is decided."""
        with self._tx() as db:
            db.execute("UPDATE instances SET state = ?, class_name = ?, score = ?, model = ?, detail = NULL, "
                       "evidence = ?, series_id = ?, updated_at = ? WHERE instance_id = ?",
                       (InstanceState.AWAITING_SERIES, class_name, score, model, evidence, series_id, time.time(), instance_id))

    def series_awaiting(self) -> list[str]:
        """Series with films waiting for their series decision."""
        return [r["series_id"] for r in self._query(
            "SELECT DISTINCT series_id FROM instances WHERE state = ? AND series_id IS NOT NULL", (InstanceState.AWAITING_SERIES,))]

    def series_members(self, series_id: str) -> list[InstanceRecord]:
        """Every film of the series the router classified (awaiting or already routed), oldest first."""
        rows = self._query("SELECT * FROM instances WHERE series_id = ? AND evidence IS NOT NULL "
                           "ORDER BY received_at", (series_id,))
        return [record_of(r) for r in rows]

    def add_deliveries(self, instance_id: str, destinations: Sequence[str], *, model: str,
                       shadow: bool = False) -> list[str]:
        """Re-routing: new deliveries to the destinations that have no delivery of this instance yet,
        with whatever model (delivered, pending, in flight or dead: a dead one is resubmitted, not
        re-routed). Returns the destinations added; the instance goes back to ``classified``
        until they finish (a held film stays held)."""
        now = time.time()
        added: list[str] = []
        with self._tx() as db:
            for dest in destinations:
                if db.execute("SELECT 1 FROM deliveries WHERE instance_id = ? AND destination = ? LIMIT 1",
                              (instance_id, dest)).fetchone():
                    continue
                db.execute(
                    "INSERT INTO deliveries(instance_id, destination, model, state, next_attempt_at, created_at, "
                    "updated_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                    (instance_id, dest, model, DeliveryState.SHADOW if shadow else DeliveryState.PENDING, now, now, now))
                added.append(dest)
            current = db.execute("SELECT state FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
            if added and not shadow and current is not None:
                db.execute("UPDATE instances SET state = ?, updated_at = ? WHERE instance_id = ?",
                           (after_reroute(InstanceState(current["state"])), now, instance_id))
        return added

    def classified_since(self, since: float, limit: int = 1_000_000) -> list[str]:
        """Instances the router classified (they have a class) received at or after ``since``, oldest first."""
        return [r["instance_id"] for r in self._query(
            "SELECT instance_id FROM instances WHERE class_name IS NOT NULL AND received_at >= ? "
            "ORDER BY received_at LIMIT ?", (since, limit))]

    # -- cluster leases (see claims.py) ---------------------------------------------------
    def elsewhere_due(self, seen_before: float, limit: int = 500) -> list[tuple[str, str]]:
        """``(instance, claim seen)`` of instances other nodes own, last looked at before ``seen_before``."""
        return [(r["instance_id"], r["detail"] or "") for r in self._query(
            "SELECT instance_id, detail FROM instances WHERE state = ? AND updated_at <= ? "
            "ORDER BY updated_at LIMIT ?", (InstanceState.ELSEWHERE, seen_before, limit))]

    def observe(self, instance_id: str, claim: str) -> None:
        """Another node's claim was seen (again) now: its lease is counted from here."""
        with self._tx() as db:
            db.execute("UPDATE instances SET detail = ?, updated_at = ? WHERE instance_id = ? AND state = ?",
                       (claim, time.time(), instance_id, InstanceState.ELSEWHERE))

    def take_over(self, instance_id: str) -> None:
        """This node now owns an instance another node left: classify it (again) from the start."""
        with self._tx() as db:
            db.execute("UPDATE instances SET state = ?, detail = ?, attempts = 0, updated_at = ? "
                       "WHERE instance_id = ? AND state = ?", (InstanceState.QUEUED, TAKEN_OVER, time.time(), instance_id, InstanceState.ELSEWHERE))

    def lose(self, instance_id: str, claim: str) -> None:
        """Another node took the instance over (this one did not renew in time): leave it to that node."""
        with self._tx() as db:
            db.execute("UPDATE instances SET state = ?, detail = ?, updated_at = ? WHERE instance_id = ?",
                       (InstanceState.ELSEWHERE, claim, time.time(), instance_id))
            db.execute("DELETE FROM deliveries WHERE instance_id = ? AND state IN (?, ?)",
                       (instance_id, DeliveryState.PENDING, DeliveryState.VERIFY))

    def unfinished(self) -> list[str]:
        """Claimed instances this node still has work on (their claims need renewing): those being
        classified or waiting for their series, and those with forwards to finish. Queued ones
        are claimed when taken."""
        return [r["instance_id"] for r in self._query(
            "SELECT instance_id FROM instances WHERE state IN (?, ?) UNION "
            "SELECT instance_id FROM deliveries WHERE state IN (?, ?, ?)",
            (InstanceState.PROCESSING, InstanceState.AWAITING_SERIES, DeliveryState.PENDING, DeliveryState.SUBMITTED, DeliveryState.VERIFY))]

    def evidence(self, instance_id: str) -> str | None:
        """The JSON stored by :meth:`record_classification` (None before schema 2)."""
        rows = self._query("SELECT evidence FROM instances WHERE instance_id = ?", (instance_id,))
        return rows[0]["evidence"] if rows else None

    def instance(self, instance_id: str) -> InstanceRecord | None:
        rows = self._query("SELECT * FROM instances WHERE instance_id = ?", (instance_id,))
        if not rows:
            return None
        return record_of(rows[0])
