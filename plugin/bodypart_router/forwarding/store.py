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
the destination said it does not hold the instance (see :mod:`bodypart_router.forwarding.verify`).

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BodyPartRouterError
from ..states import DeliveryState, InstanceState, Kind

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id  TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    class_name   TEXT,
    score        REAL,
    model        TEXT,
    detail       TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    received_at  REAL NOT NULL,
    updated_at   REAL NOT NULL,
    evidence     TEXT,
    series_id    TEXT
);
CREATE INDEX IF NOT EXISTS instances_by_state ON instances (state, received_at);
CREATE INDEX IF NOT EXISTS instances_by_update ON instances (updated_at);

CREATE TABLE IF NOT EXISTS deliveries (
    id               INTEGER PRIMARY KEY,
    instance_id      TEXT NOT NULL,
    destination      TEXT NOT NULL,
    model            TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    job_id           TEXT,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    UNIQUE (instance_id, destination, model)
);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_instance ON deliveries (instance_id);

CREATE TABLE IF NOT EXISTS settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""

#: ``detail`` of an instance taken over from a node that stopped renewing its claim: its
#: forwards are verified at the destination before they are sent (the old owner may have sent them).
TAKEN_OVER = "taken over from a node whose claim lapsed"


class StoreError(BodyPartRouterError, RuntimeError):
    """A state database operation failed; the message names the file (full disk, corruption...)."""


def _set_aside(path: Path) -> Path:
    """Rename a corrupt database (and its WAL files) out of the way; returns its new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


@dataclass(frozen=True)
class Received:
    """An instance accepted at ingest: ``state`` is ``queued`` or ``skipped:<reason>``."""

    instance_id: str
    state: InstanceState = InstanceState.QUEUED
    detail: str | None = None


@dataclass(frozen=True)
class Delivery:
    id: int
    instance_id: str
    destination: str  # Destination.key, e.g. "peer:ai-chest"
    model: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    job_id: str | None
    last_error: str | None


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    state: InstanceState
    class_name: str | None
    score: float | None
    model: str | None
    detail: str | None
    attempts: int


class Store:
    """Thread-safe access to the state database (one connection guarded by a lock; every call is short)."""

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
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems))
        db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); executescript manages its own commit
        return db

    def _error(self, exc: sqlite3.Error) -> StoreError:
        hint = ""
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
            hint = "; restart Orthanc: the router sets the damaged file aside and rebuilds it from Orthanc"
        elif "full" in str(exc):
            hint = "; free space in the StateDirectory"
        return StoreError(f"state database {self.path}: {exc}{hint}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- plumbing ---------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self.store._lock.release()
                raise self.store._error(exc) from exc
            return self.store._db

        def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
            try:
                self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.Error as error:
                if exc_type is None:
                    try:
                        self.store._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise self.store._error(error) from error
            finally:
                self.store._lock.release()
            if isinstance(exc, sqlite3.Error):
                raise self.store._error(exc) from exc
            return False

    def _tx(self) -> Store._Tx:
        return Store._Tx(self)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

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
        for chunk in _chunks(ids, 500):
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
            for chunk in _chunks(list(instance_ids), 500):
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
            first = DeliveryState.SHADOW if shadow else (DeliveryState.VERIFY if row is not None and row["detail"] == TAKEN_OVER else DeliveryState.PENDING)
            for dest in destinations:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries(instance_id, destination, model, state, next_attempt_at, "
                    "created_at, updated_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                    (instance_id, dest, model, first, now, now, now),
                )
            state = self._instance_state(db, instance_id, model, InstanceState.CLASSIFIED)
            if held is not None and state is not InstanceState.FAILED_DEAD_LETTER:
                state = held
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
        return [_record(r) for r in rows]

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
            if added and not shadow:
                held = InstanceState.of_kind(Kind.HELD)
                db.execute(f"UPDATE instances SET state = ?, updated_at = ? WHERE instance_id = ? "
                           f"AND state NOT IN ({_marks(held)})", (InstanceState.CLASSIFIED, now, instance_id, *held))
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
        return _record(rows[0])

    # -- deliveries -------------------------------------------------------------------
    def due_deliveries(self, now: float, limit: int, skip_destinations: Iterable[str] = ()) -> list[Delivery]:
        """Pending deliveries whose backoff has elapsed, oldest first, except to the given destinations."""
        return self._due(DeliveryState.PENDING, now, limit, skip_destinations)

    def to_verify(self, now: float, limit: int, skip_destinations: Iterable[str] = ()) -> list[Delivery]:
        """Deliveries of unknown outcome due for a question to their destination, oldest first."""
        return self._due(DeliveryState.VERIFY, now, limit, skip_destinations)

    def _due(self, state: str, now: float, limit: int, skip_destinations: Iterable[str]) -> list[Delivery]:
        """Deliveries in ``state`` whose ``next_attempt_at`` has come, oldest first, except to the given destinations."""
        skip = list(skip_destinations)
        clause = f" AND destination NOT IN ({','.join('?' * len(skip))})" if skip else ""
        rows = self._query(
            f"SELECT * FROM deliveries WHERE state = ? AND next_attempt_at <= ?{clause} "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (state, now, *skip, limit),
        )
        return [_delivery(r) for r in rows]

    def submitted(self) -> list[Delivery]:
        return [_delivery(r) for r in self._query("SELECT * FROM deliveries WHERE state = ? ORDER BY id", (DeliveryState.SUBMITTED,))]

    def delivery(self, delivery_id: int) -> Delivery | None:
        rows = self._query("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return _delivery(rows[0]) if rows else None

    def deliveries_of(self, instance_id: str) -> list[Delivery]:
        return [_delivery(r) for r in self._query(
            "SELECT * FROM deliveries WHERE instance_id = ? ORDER BY id", (instance_id,))]

    def mark_submitting(self, delivery_id: int) -> None:
        """Before asking Orthanc to send: from now on a crash leaves this delivery's outcome unknown."""
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state = ?, job_id = NULL, attempts = attempts + 1, updated_at = ? "
                       "WHERE id = ?", (DeliveryState.SUBMITTED, time.time(), delivery_id))

    def set_job(self, delivery_id: int, job_id: str) -> None:
        """Orthanc accepted the forward as job ``job_id`` (after :meth:`mark_submitting`)."""
        with self._tx() as db:
            db.execute("UPDATE deliveries SET job_id = ?, updated_at = ? WHERE id = ? AND state = ?",
                       (job_id, time.time(), delivery_id, DeliveryState.SUBMITTED))

    def mark_unknown(self, delivery_id: int, note: str, next_attempt_at: float | None = None) -> None:
        """The forward may or may not have arrived: ask the destination (at ``next_attempt_at``) before resending."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state = ?, job_id = NULL, last_error = ?, next_attempt_at = ?, "
                       "updated_at = ? WHERE id = ?",
                       (DeliveryState.VERIFY, note[:500], now if next_attempt_at is None else next_attempt_at, now, delivery_id))

    def unsubmit(self, delivery_id: int, note: str) -> None:
        """The job was cancelled before it ran (shutdown): back to pending, the attempt not counted."""
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state = ?, job_id = NULL, attempts = MAX(0, attempts - 1), "
                       "last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = ?",
                       (DeliveryState.PENDING, note, time.time(), time.time(), delivery_id, DeliveryState.SUBMITTED))

    def mark_delivered(self, delivery_id: int) -> InstanceState | None:
        """Record a successful forward; returns the instance's resulting state (None: no such delivery)."""
        return self._finish_delivery(delivery_id, DeliveryState.DELIVERED, None)

    def mark_retry(self, delivery_id: int, error: str, next_attempt_at: float, *, count_attempt: bool = False) -> None:
        """Back to pending after a failure. Attempts are counted at submission; a failure before
        submission (e.g. the destination refused the REST call) counts with ``count_attempt``."""
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state = ?, last_error = ?, next_attempt_at = ?, job_id = NULL, "
                f"attempts = attempts + {1 if count_attempt else 0}, updated_at = ? WHERE id = ?",
                (DeliveryState.PENDING, error[:500], next_attempt_at, time.time(), delivery_id),
            )

    def mark_dead(self, delivery_id: int, error: str) -> InstanceState | None:
        """Dead-letter a delivery; returns the instance's resulting state (``failed:dead-letter``)."""
        return self._finish_delivery(delivery_id, DeliveryState.DEAD, error)

    def _finish_delivery(self, delivery_id: int, state: DeliveryState, error: str | None) -> InstanceState | None:
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state = ?, last_error = COALESCE(?, last_error), updated_at = ? "
                       "WHERE id = ?", (state, error[:500] if error else None, now, delivery_id))
            row = db.execute("SELECT instance_id, model FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return None
            new_state = self._instance_state(db, row["instance_id"], row["model"], InstanceState.CLASSIFIED)
            current = db.execute("SELECT state FROM instances WHERE instance_id = ?", (row["instance_id"],)).fetchone()
            held = current is not None and InstanceState(current["state"]).kind is Kind.HELD
            if held and new_state is not InstanceState.FAILED_DEAD_LETTER:
                return InstanceState(current["state"])  # a held film stays held once its QualityRoutes forward arrived
            skipped = InstanceState.of_kind(Kind.SKIPPED)
            db.execute(f"UPDATE instances SET state = ?, updated_at = ? WHERE instance_id = ? "
                       f"AND state NOT IN ({_marks(skipped)})", (new_state, now, row["instance_id"], *skipped))
        return new_state

    @staticmethod
    def _instance_state(db: sqlite3.Connection, instance_id: str, model: str,
                        default: InstanceState) -> InstanceState:
        """``forwarded`` once every delivery for this model is delivered, ``failed:dead-letter`` if any is dead."""
        states = [DeliveryState(r[0]) for r in db.execute(
            "SELECT state FROM deliveries WHERE instance_id = ? AND model = ?", (instance_id, model))]
        if any(s == DeliveryState.DEAD for s in states):
            return InstanceState.FAILED_DEAD_LETTER
        if states and all(s == DeliveryState.DELIVERED for s in states):
            return InstanceState.FORWARDED
        return default

    def delivered_destinations(self, instance_id: str) -> list[str]:
        return [r["destination"] for r in self._query(
            "SELECT destination FROM deliveries WHERE instance_id = ? AND state = ? ORDER BY destination",
            (instance_id, DeliveryState.DELIVERED))]

    def failed(self, limit: int = 1000) -> list[Delivery]:
        """Dead-lettered deliveries, newest first (the ``/bodypart-router/failed`` listing)."""
        return [_delivery(r) for r in self._query(
            "SELECT * FROM deliveries WHERE state = ? ORDER BY updated_at DESC LIMIT ?", (DeliveryState.DEAD, limit))]

    def resubmit(self, *, delivery_ids: Iterable[int] | None = None, instance_ids: Iterable[str] | None = None,
                 include_delivered: bool = False) -> list[Delivery]:
        """A person asks to send again: matching dead (and, if asked, delivered) deliveries go back to
        pending with a fresh attempt count. With no ids, every dead delivery is resubmitted."""
        states = [DeliveryState.DEAD] + ([DeliveryState.DELIVERED] if include_delivered else [])
        where = [f"state IN ({','.join('?' * len(states))})"]
        params: list[object] = list(states)
        ids, insts = list(delivery_ids or []), list(instance_ids or [])
        if ids or insts:
            parts = []
            if ids:
                parts.append(f"id IN ({','.join('?' * len(ids))})")
                params.extend(ids)
            if insts:
                parts.append(f"instance_id IN ({','.join('?' * len(insts))})")
                params.extend(insts)
            where.append("(" + " OR ".join(parts) + ")")
        now = time.time()
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE deliveries SET state = ?, attempts = 0, job_id = NULL, next_attempt_at = ?, updated_at = ? "
                f"WHERE {' AND '.join(where)} RETURNING *",
                (DeliveryState.PENDING, now, now, *params),
            ).fetchall()
            for inst in {r["instance_id"] for r in rows}:
                db.execute("UPDATE instances SET state = ?, updated_at = ? WHERE instance_id = ?",
                           (InstanceState.CLASSIFIED, now, inst))
        return [_delivery(r) for r in rows]

    # -- reporting --------------------------------------------------------------------
    def counts(self) -> dict[str, dict[Any, int]]:
        """``{"instances": {state: n}, "deliveries": {state: n}}`` for status pages and tests."""
        inst = {InstanceState(r["state"]): r["n"] for r in self._query(
            "SELECT state, COUNT(*) AS n FROM instances GROUP BY state")}
        dels = {DeliveryState(r["state"]): r["n"] for r in self._query(
            "SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")}
        return {"instances": inst, "deliveries": dels}

    def waiting_count(self, destination: str, now: float) -> int:
        """Forwards to ``destination`` due now (pending or to verify), i.e. a probe is on its way."""
        return self._query("SELECT COUNT(*) AS n FROM deliveries WHERE destination = ? AND state IN (?, ?) "
                           "AND next_attempt_at <= ?", (destination, DeliveryState.PENDING, DeliveryState.VERIFY, now))[0]["n"]

    def destination_backlog(self) -> dict[str, dict[str, int]]:
        """``{destination: {"Pending": n, "DeadLetters": n}}``: forwards not arrived yet (waiting,
        in flight or of unknown outcome) and dead letters, per destination key."""
        out: dict[str, dict[str, int]] = {}
        for r in self._query(
            "SELECT destination, state, COUNT(*) AS n FROM deliveries WHERE state IN (?, ?, ?, ?) "
            "GROUP BY destination, state", (DeliveryState.PENDING, DeliveryState.SUBMITTED, DeliveryState.VERIFY, DeliveryState.DEAD)):
            entry = out.setdefault(r["destination"], {"Pending": 0, "DeadLetters": 0})
            entry["DeadLetters" if r["state"] == DeliveryState.DEAD else "Pending"] += r["n"]
        return out

    def dead_letters(self, offset: int = 0, limit: int = 50) -> tuple[int, list[tuple[Delivery, float, float]]]:
        """One page of dead letters, newest first: ``(total, [(delivery, created_at, dead_at)])``."""
        total = self._query("SELECT COUNT(*) AS n FROM deliveries WHERE state = ?", (DeliveryState.DEAD,))[0]["n"]
        rows = self._query("SELECT * FROM deliveries WHERE state = ? ORDER BY updated_at DESC, id DESC "
                           "LIMIT ? OFFSET ?", (DeliveryState.DEAD, limit, offset))
        return total, [(_delivery(r), r["created_at"], r["updated_at"]) for r in rows]

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """What the router decided since its state database was created (it outlives restarts):
        ``{"Classified": {class: n}, "Skipped": {reason: n}, "Failed": {reason: n}}``."""
        out: dict[str, dict[str, int]] = {"Classified": {}, "Skipped": {}, "Failed": {}}
        for r in self._query("SELECT class_name, COUNT(*) AS n FROM instances WHERE class_name IS NOT NULL "
                             "GROUP BY class_name"):
            out["Classified"][r["class_name"]] = r["n"]
        unclassified = InstanceState.of_kind(Kind.SKIPPED, Kind.FAILED)
        for r in self._query(f"SELECT state, COUNT(*) AS n FROM instances WHERE class_name IS NULL AND "
                             f"state IN ({_marks(unclassified)}) GROUP BY state", unclassified):
            state = InstanceState(r["state"])
            out["Skipped" if state.kind is Kind.SKIPPED else "Failed"][str(state.reason)] = r["n"]
        return out

    def recent(self, offset: int = 0, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        """One page of the latest decisions, newest first: ``(total, rows)``; each row has the
        instance's state, class, score, time, and its deliveries' destinations by state."""
        undecided = (InstanceState.QUEUED, InstanceState.PROCESSING, InstanceState.ELSEWHERE)  # not decided here (yet)
        total = self._query("SELECT COUNT(*) AS n FROM instances WHERE state NOT IN (?, ?, ?)", undecided)[0]["n"]
        rows = self._query("SELECT * FROM instances WHERE state NOT IN (?, ?, ?) ORDER BY updated_at DESC "
                           "LIMIT ? OFFSET ?", (*undecided, limit, offset))
        out = []
        for r in rows:
            by_state: dict[DeliveryState, list[str]] = {}
            for d in self._query("SELECT destination, state FROM deliveries WHERE instance_id = ? AND model = ? "
                                 "ORDER BY destination", (r["instance_id"], r["model"] or "")):
                by_state.setdefault(DeliveryState(d["state"]), []).append(d["destination"])
            out.append({"instance_id": r["instance_id"], "state": InstanceState(r["state"]), "class_name": r["class_name"],
                        "score": r["score"], "detail": r["detail"], "updated_at": r["updated_at"],
                        "evidence": r["evidence"], "deliveries": by_state})
        return total, out

    def shadow_counts(self) -> dict[str, dict[str, int]]:
        """What shadow mode would have sent: ``{destination: {class: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for r in self._query(
            "SELECT d.destination, i.class_name, COUNT(*) AS n FROM deliveries d JOIN instances i "
            "USING (instance_id) WHERE d.state = ? GROUP BY d.destination, i.class_name", (DeliveryState.SHADOW,)):
            out.setdefault(r["destination"], {})[r["class_name"]] = r["n"]
        return out


def _marks(values: Sequence[object]) -> str:
    """``?, ?, ?``: one SQL parameter per value."""
    return ",".join("?" * len(values))


def _delivery(r: sqlite3.Row) -> Delivery:
    return Delivery(r["id"], r["instance_id"], r["destination"], r["model"], DeliveryState(r["state"]), r["attempts"],
                    r["next_attempt_at"], r["job_id"], r["last_error"])


def _record(r: sqlite3.Row) -> InstanceRecord:
    return InstanceRecord(r["instance_id"], InstanceState(r["state"]), r["class_name"], r["score"], r["model"],
                          r["detail"], r["attempts"])


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
