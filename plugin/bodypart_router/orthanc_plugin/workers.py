"""Classification workers: fetch, decode, classify (in batches), write results, create deliveries.

Each worker claims up to ``BatchSize`` queued instances from the store at once, so when
several are waiting they share one inference call. Results are written to Orthanc first and
committed to the store second: a crash in between only means the instance is classified
again at the next start (metadata writes are idempotent), never that a delivery is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import RouterConfig
from ..delivery import RestError
from ..errors import NotClassifiable, Reason
from ..preprocess import to_model_input
from ..routing import decide
from ..store import CLASSIFIED, Store
from . import footprint
from .events import EventBus
from .host import OrthancRest, log
from .results import ResultWriter

#: A transient error (REST, I/O) is retried this many times before the instance is marked failed.
MAX_CLASSIFY_ATTEMPTS = 3


class ClassifyWorker:
    """One thread; several may run (``Workers``), they share the store's queue."""

    def __init__(self, index: int, config: RouterConfig, store: Store, rest: OrthancRest, writer: ResultWriter,
                 classifier: Any, decode: Callable[[bytes], Any], events: EventBus,
                 wake: threading.Event, wake_forwarder: threading.Event, stop: threading.Event) -> None:
        self.config = config
        self.store = store
        self.rest = rest
        self.writer = writer
        self.classifier = classifier
        self.decode = decode
        self.events = events
        self.wake = wake
        self.wake_forwarder = wake_forwarder
        self.stop = stop
        self.thread = threading.Thread(target=self._run, name=f"bodypart-classify-{index}", daemon=True)
        #: Called before each batch to let a burst of ingest pass first (Recorder.wait_for_quiet).
        self.yield_to_ingest: Callable[[threading.Event], None] | None = None

    def _run(self) -> None:
        footprint.lower_thread_priority()  # ingest first: see footprint.py
        while not self.stop.is_set():
            try:
                if self.yield_to_ingest is not None:
                    self.yield_to_ingest(self.stop)
                ids = self.store.claim_queued(self.config.batch_size)
                if ids:
                    self.process(ids)
                    footprint.release_free_memory()  # bounded RSS: see footprint.py
                    continue
            except Exception as exc:
                log("error", f"classification worker: {exc!r}")
                self.stop.wait(1.0)
            self.wake.wait(0.5)
            self.wake.clear()

    def process(self, instance_ids: list[str]) -> None:
        """Classify a batch of claimed instances; every one ends with a state."""
        t0 = time.perf_counter()
        ready: list[tuple[str, np.ndarray]] = []
        decode_seconds: dict[str, float] = {}
        for instance_id in instance_ids:
            if self.stop.is_set():
                self.store.requeue(instance_id, "interrupted by shutdown")
                continue
            try:
                data = self.rest.get(f"/instances/{instance_id}/file")
                t_decode = time.perf_counter()
                image = self.decode(data)
                decode_seconds[instance_id] = time.perf_counter() - t_decode
                ready.append((instance_id, to_model_input(image.pixels)))
            except NotClassifiable as exc:
                self._not_classified(instance_id, exc.state, exc.detail)
            except RestError as exc:
                if exc.status == 404:
                    self.store.forget(instance_id)
                    log("info", f"instance {instance_id} was deleted before classification")
                else:
                    self._transient(instance_id, str(exc))
            except MemoryError:
                self._not_classified(instance_id, f"failed:{Reason.IMAGE_TOO_LARGE.value}",
                                     "out of memory while decoding")
            except Exception as exc:  # a decoder bug on odd input must not kill the worker
                self._not_classified(instance_id, f"failed:{Reason.UNDECODABLE_PIXELS.value}", repr(exc)[:300])
        if not ready:
            return
        try:
            t_model = time.perf_counter()
            predictions = self.classifier.predict_batch([x for _, x in ready])
        except Exception as exc:
            for instance_id, _ in ready:
                self._not_classified(instance_id, f"failed:{Reason.MODEL_ERROR.value}", repr(exc)[:300])
            return
        seconds = (time.perf_counter() - t0) / len(ready)
        inference_seconds = (time.perf_counter() - t_model) / len(ready)
        model = self.classifier.version
        for (instance_id, _), prediction in zip(ready, predictions, strict=True):
            decision = decide(self.config, prediction.class_name, float(prediction.score))
            destinations = [d.key for d in decision.destinations]
            self.writer.classified(instance_id, decision, model, CLASSIFIED)
            state = self.store.record_classification(
                instance_id, class_name=decision.class_name, score=decision.score, model=model,
                destinations=destinations, shadow=self.config.shadow_mode)
            if state != CLASSIFIED:  # e.g. already forwarded earlier with this model
                self.writer.state(instance_id, state)
            log("info", f"instance {instance_id}: {decision.class_name} ({decision.score:.3f}) -> "
                        f"{', '.join(d.name for d in decision.destinations) or 'no destination'}"
                        f"{' [shadow mode]' if self.config.shadow_mode and destinations else ''}")
            self.events.emit("classified", instance_id=instance_id, decision=decision, model=model,
                             seconds=seconds, batch_size=len(ready),
                             decode_seconds=decode_seconds[instance_id], inference_seconds=inference_seconds)
        self.wake_forwarder.set()

    def _not_classified(self, instance_id: str, state: str, detail: str) -> None:
        self.store.set_state(instance_id, state, detail)
        self.writer.state(instance_id, state)
        log("info", f"instance {instance_id}: {state} ({detail})")
        self.events.emit("not_classified", instance_id=instance_id, state=state)

    def _transient(self, instance_id: str, detail: str) -> None:
        attempts = self.store.requeue(instance_id, detail)
        if attempts >= MAX_CLASSIFY_ATTEMPTS:
            self._not_classified(instance_id, "failed:unreadable", detail)
        else:
            log("warning", f"instance {instance_id}: {detail}; will retry")
