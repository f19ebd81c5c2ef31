"""Read-only figures for the status page, metrics and tests, straight from the state database
(so they outlive restarts)."""

from __future__ import annotations

from typing import Any

from ..states import DeliveryState, InstanceState, Kind
from .store_schema import Database, Delivery, delivery_of, marks


class StoreReports(Database):
    """Counts and pages over both tables (a part of :class:`~bodypart_router.forwarding.store.Store`)."""

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
        return total, [(delivery_of(r), r["created_at"], r["updated_at"]) for r in rows]

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """What the router decided since its state database was created (it outlives restarts):
        ``{"Classified": {class: n}, "Skipped": {reason: n}, "Failed": {reason: n}}``."""
        out: dict[str, dict[str, int]] = {"Classified": {}, "Skipped": {}, "Failed": {}}
        for r in self._query("SELECT class_name, COUNT(*) AS n FROM instances WHERE class_name IS NOT NULL "
                             "GROUP BY class_name"):
            out["Classified"][r["class_name"]] = r["n"]
        unclassified = InstanceState.of_kind(Kind.SKIPPED, Kind.FAILED)
        for r in self._query(f"SELECT state, COUNT(*) AS n FROM instances WHERE class_name IS NULL AND "
                             f"state IN ({marks(unclassified)}) GROUP BY state", unclassified):
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
