"""The state database's tables and records, and the one locked connection the store's parts share.

Schema history: 1, the first; 2 added ``instances.evidence`` (the model's full output, for
``explain`` and ``reroute``) and ``instances.series_id`` (``DecisionLevel: series``). States are
stored as the strings of :mod:`bodypart_router.states`, unchanged since schema 1.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import Destination
from ..errors import BodyPartRouterError
from ..states import DeliveryState, InstanceState

SCHEMA_VERSION = 2

SCHEMA = """
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


def delivery_json(d: Delivery) -> dict[str, Any]:
    """The public JSON shape of a delivery (REST listing of failed forwards)."""
    return {
        "ID": d.id,
        "Instance": d.instance_id,
        "Destination": Destination.from_key(d.destination).name,
        "DestinationKind": Destination.from_key(d.destination).kind,
        "Model": d.model,
        "State": d.state,
        "Attempts": d.attempts,
        "LastError": d.last_error,
    }


class Database:
    """One SQLite connection guarded by a lock (every call is short), opened by
    :class:`~.store.Store`; every error names the file (:class:`StoreError`)."""

    path: Path
    _lock: threading.Lock
    _db: sqlite3.Connection

    def _error(self, exc: sqlite3.Error) -> StoreError:
        hint = ""
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
            hint = "; restart Orthanc: the router sets the damaged file aside and rebuilds it from Orthanc"
        elif "full" in str(exc):
            hint = "; free space in the StateDirectory"
        return StoreError(f"state database {self.path}: {exc}{hint}")

    class _Tx:
        def __init__(self, database: Database) -> None:
            self.database = database

        def __enter__(self) -> sqlite3.Connection:
            self.database._lock.acquire()
            try:
                self.database._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self.database._lock.release()
                raise self.database._error(exc) from exc
            return self.database._db

        def __exit__(self, exc_type: object, exc: object, tb: object) -> Literal[False]:
            try:
                self.database._db.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.Error as error:
                if exc_type is None:
                    try:
                        self.database._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise self.database._error(error) from error
            finally:
                self.database._lock.release()
            if isinstance(exc, sqlite3.Error):
                raise self.database._error(exc) from exc
            return False

    def _tx(self) -> Database._Tx:
        return Database._Tx(self)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc


def marks(values: Sequence[object]) -> str:
    """``?, ?, ?``: one SQL parameter per value."""
    return ",".join("?" * len(values))


def delivery_of(r: sqlite3.Row) -> Delivery:
    return Delivery(r["id"], r["instance_id"], r["destination"], r["model"], DeliveryState(r["state"]), r["attempts"],
                    r["next_attempt_at"], r["job_id"], r["last_error"])


def record_of(r: sqlite3.Row) -> InstanceRecord:
    return InstanceRecord(r["instance_id"], InstanceState(r["state"]), r["class_name"], r["score"], r["model"],
                          r["detail"], r["attempts"])


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
