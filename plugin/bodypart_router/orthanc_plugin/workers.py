"""Classification workers: locate, classify (in batches), write results, create deliveries.

Each worker claims up to ``BatchSize`` queued instances from the store at once, so when
several are waiting they share one inference call. The decoding and inference happen in the
worker's :mod:`engine <bodypart_router.inference.engine>` (a child process by default); the worker tells
it where each file is and turns its outcomes into Orthanc metadata, store records and events. Results are written to Orthanc first and
committed to the store second: a crash in between only means the instance is classified
again at the next start (metadata writes are idempotent), never that a delivery is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from ..forwarding.claims import Claims, NoClaims
from ..config import RouterConfig
from ..orthanc_api import OrthancError
from ..forwarding.events import (Dispatcher, InstanceClassified, InstanceNotClassified, InstanceStateChanged,
                                 YieldedToIngest)
from ..inference.engine import Engine, EngineStartError, Outcome, Source
from ..ops.health import Health
from ..routing.image_facts import ImageFacts
from ..ops.ingest_gate import IngestGate
from ..inference.resources import IdleTrim
from ..retry import Retry
from ..routing.decision import SECONDARY, RoutingDecision, decide_evidence, outcome_evidence
from ..forwarding.store import Store
from ..states import InstanceState
from ..service_thread import ServiceThread
from . import footprint
from .evidence import HeaderCache, InstanceHeader, read_header, rule_keywords
from .header_audit import audit_value
from .host import OrthancRest
from .results import ResultWriter
from .series_decider import SeriesDecider
from .storage_files import StorageFiles

LOGGER = logging.getLogger(__name__)

#: A transient error (REST, I/O) is retried, without waiting, until the instance is marked failed:unreadable.
CLASSIFY_RETRY = Retry(max_attempts=3, backoff_seconds=0.0, max_backoff_seconds=0.0)
#: Seconds between two tries to start a classifier that could not start (model file gone or changed).
ENGINE_RETRY_SECONDS = 10.0


class ClassifyWorker(ServiceThread):
    """One thread; several may run (``Workers``), they share the store's queue."""

    def __init__(self, index: int, config: RouterConfig, store: Store, rest: OrthancRest, writer: ResultWriter,
                 engine: Engine, files: StorageFiles, events: Dispatcher,
                 wake: threading.Event, wake_forwarder: threading.Event, stop: threading.Event,
                 *, in_process: bool = False) -> None:
        super().__init__(f"bodypart-classify-{index}", interval=0.5, stop=stop, wake=wake)
        self.config = config
        self.store = store
        self.rest = rest
        self.writer = writer
        self.engine = engine
        self.files = files
        self.events = events
        self.wake_forwarder = wake_forwarder
        #: The engine decodes in this process: lower this thread's priority and trim the heap.
        self.in_process = in_process
        #: DICOM keywords the rules test (read from the file when Orthanc does not index them).
        self.rule_keywords = rule_keywords(config)
        #: ``DecisionLevel: series``: decides stable series between batches (set by the app).
        self.series: SeriesDecider | None = None
        #: Holds each batch back while Orthanc is busy storing instances (see ingest_gate.py).
        self.yield_to_ingest: IngestGate | None = None
        #: Hands Orthanc's free heap back once the router is idle (see footprint.py).
        self.idle_trim: IdleTrim | None = None
        #: Where nodes share an index, tells the others when an instance needs nothing more (claims.py).
        self.claims: Claims | NoClaims = NoClaims()
        #: Headers captured at ingest (evidence.py): no index read for an instance received here.
        self.headers: HeaderCache | None = None
        #: Where this worker reports what stops it (the status's ``Health``).
        self.health = Health()
        self._health_key = f"classify-{index}"
        #: Instances claimed (``processing``) whose batch an error cut short: back to the queue
        #: as soon as the store lets us, never left ``processing`` until the next start.
        self._held: list[str] = []

    def before(self) -> None:
        if self.in_process:
            footprint.lower_thread_priority()  # ingest first: see footprint.py

    def step(self) -> bool:
        """One batch (or one stable series); True when there was one."""
        self._release_held()
        if self.yield_to_ingest is not None and self.store.queued_count():
            waited = self.yield_to_ingest.wait(self.stop_event)
            if waited:
                self.events.publish(YieldedToIngest(waited))
        if self.series is not None and self.series.run(self):
            return True
        ids = self.store.claim_queued(self.config.batch_size)
        if ids:
            self._held = ids
            self.process(ids)
            self._held = []
            self.health.clear(self._health_key)
            if self.in_process:
                footprint.release_free_memory()  # bounded RSS: see footprint.py
            if self.idle_trim is not None:
                self.idle_trim.busy()
            return True
        self.health.clear(self._health_key)
        if self.idle_trim is not None:
            self.idle_trim.idle()
        return False

    def failed(self, exc: Exception) -> None:
        self.health.problem(self._health_key, f"classification stopped by an error: {exc}")
        self._release_held()

    def _release_held(self) -> None:
        if not self._held:
            return
        try:
            self.store.release(self._held, "interrupted by an error; classified again")
            self._held = []
        except Exception as exc:  # the store still fails: tried again at the next turn
            LOGGER.warning(f"classification worker: cannot put {len(self._held)} instance(s) back "
                           f"in the queue yet: {exc}", exc_info=True)

    def process(self, instance_ids: list[str]) -> None:
        """Classify a batch of claimed instances; every one ends with a state (or back in the queue)."""
        t0 = time.perf_counter()
        located: list[tuple[str, Source]] = []
        for instance_id in instance_ids:
            if self.stop_event.is_set():
                self.store.requeue(instance_id, "interrupted by shutdown")
                continue
            if not self._claim(instance_id):
                continue
            try:
                located.append((instance_id, self.files.source(instance_id)))
            except OrthancError as exc:
                if not Retry.is_retryable(exc):  # deleted meanwhile
                    self.store.forget(instance_id)
                    LOGGER.info(f"instance {instance_id} was deleted before classification")
                else:
                    self._transient(instance_id, str(exc))
        if not located:
            return
        try:
            result = self.engine.classify([source for _, source in located])
        except EngineStartError as exc:
            # Nothing of this batch is to blame (the model file is gone or no longer the one
            # verified at start-up): the instances wait in the queue, their attempts not counted.
            LOGGER.error(f"classifier unavailable, {len(located)} instance(s) wait in the queue: {exc}")
            self.health.problem("classifier", f"the classifier cannot start: {exc}")
            self.store.release([i for i, _ in located], f"classifier unavailable: {exc}")
            self.stop_event.wait(ENGINE_RETRY_SECONDS)
            return
        self.health.clear("classifier")
        classified = [(i, o) for (i, _), o in zip(located, result.outcomes, strict=True) if o.classified]
        seconds = (time.perf_counter() - t0) / max(1, len(classified))
        for (instance_id, _), outcome in zip(located, result.outcomes, strict=True):
            if outcome.classified:
                self._classified(instance_id, outcome, seconds, len(classified), result.inference_seconds)
            elif outcome.state == "retry":
                if self.stop_event.is_set():
                    self.store.requeue(instance_id, outcome.detail)
                else:
                    self._transient(instance_id, outcome.detail)
            else:  # not classified: the engine always gives the state (model-error if it did not)
                state = InstanceState(outcome.state or InstanceState.FAILED_MODEL_ERROR)
                self._not_classified(instance_id, state, outcome.detail)
        if classified:
            self.wake_forwarder.set()

    def _classified(self, instance_id: str, outcome: Outcome, seconds: float, batch_size: int,
                    inference_seconds: float) -> None:
        assert outcome.class_name is not None
        model = self.engine.info.version
        try:
            header = read_header(self.rest, instance_id, self.rule_keywords, self.headers)
        except OrthancError as exc:
            if not Retry.is_retryable(exc):
                self.store.forget(instance_id)
                LOGGER.info(f"instance {instance_id} was deleted before it could be routed")
            else:
                self._transient(instance_id, f"could not read the header: {exc}")
            return
        evidence = outcome_evidence(outcome)
        facts = ImageFacts.of(outcome)
        decision = decide_evidence(self.config, evidence["scores"], tags=header.tags,
                                   calling_aet=header.remote_aet, secondary=evidence)
        if self.series is not None and header.series_id:  # DecisionLevel: series
            self.store.await_series(instance_id, series_id=header.series_id, class_name=decision.class_name,
                                    score=decision.score, model=model, evidence=json.dumps(evidence))
            self.events.publish(InstanceStateChanged(instance_id, InstanceState.AWAITING_SERIES))
            LOGGER.info(f"instance {instance_id}: {decision.class_name} ({decision.score:.3f}), "
                        f"waiting for series {header.series_id} to be stable")
            self.series.classified(header.series_id)
        else:
            self.route(instance_id, decision, model, json.dumps(evidence), header, facts)
        self.events.publish(InstanceClassified(
            instance_id, decision, model, tags=header.tags, remote_aet=header.remote_aet, facts=facts,
            seconds=seconds, batch_size=batch_size, decode_seconds=outcome.decode_seconds,
            inference_seconds=inference_seconds))

    def route(self, instance_id: str, decision: RoutingDecision, model: str, evidence: str | None,
              header: InstanceHeader, facts: ImageFacts | None = None) -> None:
        """Write the decision and create its deliveries (the forwarder sends them)."""
        destinations = [d.key for d in decision.destinations]
        first_state = decision.state or InstanceState.CLASSIFIED
        secondary = json.loads(evidence) if evidence else {}
        forwards_pending = (first_state == InstanceState.CLASSIFIED and bool(destinations)
                            and not self.config.shadow_mode)
        self.writer.classified(instance_id, decision, model, first_state,
                               header_audit=audit_value(decision, header.tags),
                               secondary={k: secondary.get(k) for k in SECONDARY},
                               forwards_pending=forwards_pending, parents=(header.series_id, header.study_id))
        state = self.store.record_classification(
            instance_id, class_name=decision.class_name, score=decision.score, model=model,
            destinations=destinations, shadow=self.config.shadow_mode, evidence=evidence, held=decision.state)
        if state != first_state:  # e.g. already forwarded earlier with this model (stored again)
            delivered = self.store.delivered_destinations(instance_id)
            self.events.publish(InstanceStateChanged(instance_id, state, tuple(delivered) if delivered else None))
        if state == InstanceState.CLASSIFIED and (self.config.shadow_mode or not destinations):
            self._finished(instance_id)  # routed nowhere: its BodyPartState alone cannot say it is final
        LOGGER.info(f"instance {instance_id}: {decision.class_name} ({decision.score:.3f}) -> "
                    f"{', '.join(d.name for d in decision.destinations) or 'no destination'}"
                    f"{' [shadow mode]' if self.config.shadow_mode and destinations else ''}")

    def _not_classified(self, instance_id: str, state: InstanceState, detail: str) -> None:
        self.store.set_state(instance_id, state, detail)
        self.events.publish(InstanceNotClassified(instance_id, state, detail))
        if not self.writer.writes(state):
            self._finished(instance_id)
        LOGGER.info(f"instance {instance_id}: {state} ({detail})")

    def _claim(self, instance_id: str) -> bool:
        """Several nodes share the index: classify only the instances this node claims (claims.py)."""
        try:
            owner = self.claims.claim_or_owner(instance_id)
        except OrthancError as exc:
            self.store.requeue(instance_id, f"claim undecided: {exc}")
            LOGGER.warning(f"instance {instance_id}: claim undecided ({exc}); will retry")
            return False
        if owner is None:
            return True
        if owner:
            self.store.lose(instance_id, owner)  # watched, taken over if its owner stops renewing
        else:
            self.store.forget(instance_id)
            LOGGER.info(f"instance {instance_id} was deleted before classification")
        return False

    def _finished(self, instance_id: str) -> None:
        try:
            self.claims.finish(instance_id)
        except OrthancError as exc:  # another node will look at it again, and classify it once more
            LOGGER.warning(f"instance {instance_id}: could not mark its claim finished ({exc})")

    def _transient(self, instance_id: str, detail: str) -> None:
        attempts = self.store.requeue(instance_id, detail)
        if CLASSIFY_RETRY.exhausted(attempts):
            self._not_classified(instance_id, InstanceState.FAILED_UNREADABLE, detail)
        else:
            LOGGER.warning(f"instance {instance_id}: {detail}; will retry")
