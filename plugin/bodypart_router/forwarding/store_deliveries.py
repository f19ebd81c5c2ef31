"""The delivery ledger: one row per (instance, destination, model), from ``pending`` to ``delivered`` or ``dead``.

The forwarder decides (with :mod:`bodypart_router.forwarding.transitions` and the
:class:`~bodypart_router.retry.Retry` policy); these methods only persist, each in one transaction. When a delivery finishes, the
instance's new state comes from :func:`~bodypart_router.forwarding.transitions.after_delivery`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from ..states import DeliveryState, InstanceState, Kind
from .store_schema import Database, Delivery, delivery_of
from .transitions import after_delivery, after_resubmit


class DeliveryLedger(Database):
    """The ``deliveries`` table (a part of :class:`~bodypart_router.forwarding.store.Store`)."""

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
        return [delivery_of(r) for r in rows]

    def submitted(self) -> list[Delivery]:
        return [delivery_of(r) for r in self._query("SELECT * FROM deliveries WHERE state = ? ORDER BY id",
                                                    (DeliveryState.SUBMITTED,))]

    def delivery(self, delivery_id: int) -> Delivery | None:
        rows = self._query("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return delivery_of(rows[0]) if rows else None

    def deliveries_of(self, instance_id: str) -> list[Delivery]:
        return [delivery_of(r) for r in self._query(
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
        """Persist a finished delivery and its instance's resulting state (None: no such delivery)."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state = ?, last_error = COALESCE(?, last_error), updated_at = ? "
                       "WHERE id = ?", (state, error[:500] if error else None, now, delivery_id))
            row = db.execute("SELECT instance_id, model FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return None
            current = db.execute("SELECT state FROM instances WHERE instance_id = ?", (row["instance_id"],)).fetchone()
            before = None if current is None else InstanceState(current["state"])
            after = after_delivery(before, self._delivery_states(db, row["instance_id"], row["model"]))
            # the time moves with every finished delivery (recent decisions), except on a held or
            # skipped instance that keeps its state
            if before is not None and not (after is before and before.kind in (Kind.HELD, Kind.SKIPPED)):
                db.execute("UPDATE instances SET state = ?, updated_at = ? WHERE instance_id = ?",
                           (after, now, row["instance_id"]))
        return after

    @staticmethod
    def _delivery_states(db: sqlite3.Connection, instance_id: str, model: str) -> list[DeliveryState]:
        """The states of an instance's deliveries for one model (inside a transaction)."""
        return [DeliveryState(r[0]) for r in db.execute(
            "SELECT state FROM deliveries WHERE instance_id = ? AND model = ?", (instance_id, model))]

    def delivered_destinations(self, instance_id: str) -> list[str]:
        return [r["destination"] for r in self._query(
            "SELECT destination FROM deliveries WHERE instance_id = ? AND state = ? ORDER BY destination",
            (instance_id, DeliveryState.DELIVERED))]

    def failed(self, limit: int = 1000) -> list[Delivery]:
        """Dead-lettered deliveries, newest first (the ``/bodypart-router/failed`` listing)."""
        return [delivery_of(r) for r in self._query(
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
                           (after_resubmit(), now, inst))
        return [delivery_of(r) for r in rows]
