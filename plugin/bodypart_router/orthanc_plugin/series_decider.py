"""``DecisionLevel: series`` in Orthanc: route a series' films together once Orthanc reports it stable.

A classified film waits in the state ``awaiting-series``. Its series is decided (see
:mod:`bodypart_router.routing.series`) when Orthanc's ``STABLE_SERIES`` change arrives, or at once if
the series was already stable when the film was classified (a backlog), or at start-up for
series left waiting by the previous run (Orthanc forgets unstable series when it restarts, so
they are stable then). The decision runs on a classification worker's thread, never in
Orthanc's change callback; it reads each film's header again (the rules and the fusion need
it) and routes every waiting film of the series in one pass, so they are forwarded together.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..orthanc_api import OrthancError
from ..routing.fusion import fuse
from ..routing.image_facts import ImageFacts
from ..routing.decision import SECONDARY, decide
from ..routing.series import Member, vote
from ..forwarding.store import Store
from ..states import InstanceState
from .evidence import InstanceHeader, read_header
from .host import OrthancRest

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .workers import ClassifyWorker

#: A series whose decision failed is tried again after this long.
RETRY_SECONDS = 10.0


class SeriesDecider:
    """Series due for a decision (thread-safe); workers run them between batches."""

    def __init__(self, store: Store, rest: OrthancRest, wake: threading.Event) -> None:
        self.store = store
        self.rest = rest
        self.wake = wake
        self._lock = threading.Lock()
        self._due: set[str] = set()
        #: Series whose decision failed (e.g. a REST error): not tried again before this time.
        self._retry_at: dict[str, float] = {}

    def stable(self, series_id: str) -> None:
        """Orthanc's STABLE_SERIES change (cheap: called from Orthanc's change callback)."""
        with self._lock:
            self._due.add(series_id)
        self.wake.set()

    def classified(self, series_id: str | None) -> None:
        """A film of the series was classified: decide now if the series is already stable."""
        if series_id and self._is_stable(series_id):
            self.stable(series_id)

    def recover(self) -> None:
        """At start: series left waiting by the previous run."""
        for series_id in self.store.series_awaiting():
            self.classified(series_id)

    def _is_stable(self, series_id: str) -> bool:
        try:
            return bool(self.rest.get_json(f"/series/{series_id}").get("IsStable", False))
        except OrthancError as exc:
            if exc.status != 404:
                LOGGER.warning(f"series {series_id}: cannot tell whether it is stable: {exc}")
            return False

    def run(self, worker: "ClassifyWorker") -> int:
        """Decide every due series; returns how many films were routed."""
        now = time.monotonic()
        with self._lock:
            due = {s for s in self._due if self._retry_at.get(s, 0.0) <= now}
            self._due -= due
        routed = 0
        for series_id in sorted(due):
            try:
                routed += self.decide(series_id, worker)
                self._retry_at.pop(series_id, None)
            except Exception as exc:
                LOGGER.exception(f"series {series_id}: decision failed, it is tried again in {RETRY_SECONDS:g} s: {exc!r}")
                with self._lock:
                    self._due.add(series_id)
                    self._retry_at[series_id] = now + RETRY_SECONDS
        return routed

    def decide(self, series_id: str, worker: "ClassifyWorker") -> int:
        config = worker.config
        members = self.store.series_members(series_id)
        if not any(m.state == InstanceState.AWAITING_SERIES for m in members):
            return 0
        voters: list[Member] = []
        facts: dict[str, tuple[Any, InstanceHeader, dict[str, Any]]] = {}
        for record in members:
            raw = self.store.evidence(record.instance_id)
            try:
                header = read_header(self.rest, record.instance_id, worker.rule_keywords)
            except OrthancError as exc:
                if exc.status == 404:
                    if record.state == InstanceState.AWAITING_SERIES:
                        self.store.forget(record.instance_id)
                    continue
                raise
            evidence = json.loads(raw or "{}")
            fused = fuse(evidence.get("scores") or {record.class_name: record.score or 0.0}, header.tags,
                         mode=config.header_evidence, minimum_score=config.minimum_score,
                         header_error_rate=config.header_error_rate)
            voters.append(Member(record.instance_id, fused.class_name, fused.score, fused.scores))
            facts[record.instance_id] = (fused, header, evidence)
        if not voters:
            return 0
        result = vote(voters, config.series_confident_score)
        routed = 0
        for assignment in result.assignments:
            record = next(m for m in members if m.instance_id == assignment.instance_id)
            if record.state != InstanceState.AWAITING_SERIES:
                continue  # routed by an earlier decision of this series: it voted, nothing more
            fused, header, evidence = facts[assignment.instance_id]
            decision = decide(config, assignment.class_name, assignment.score, tags=header.tags,
                              calling_aet=header.remote_aet, source=fused.source,
                              fusion={**fused.as_dict(), "Series": result.as_dict(),
                                      "KeptOwnClass": assignment.kept_own},
                              **{k: evidence.get(k) for k in SECONDARY})
            worker.route(assignment.instance_id, decision, record.model or "", None, header,
                         ImageFacts.from_evidence(evidence))
            routed += 1
        LOGGER.info(f"series {series_id}: {result.class_name} ({result.score:.3f}) from {len(voters)} film(s); "
                    f"{routed} routed")
        worker.wake_forwarder.set()
        return routed
