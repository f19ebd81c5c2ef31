"""Backfill in Orthanc: classify, and optionally route, instances stored before the router.

Routes (they follow Orthanc's authentication like every REST route):

* ``POST   /bodypart-router/backfill``  start: ``{"Since": "2024-01-01"}``, ``{"Studies": [...]}``
  or ``{}`` for everything, plus ``"Route": true`` to forward too and ``"RatePerSecond"``.
  Answers the progress; 409 while another backfill runs, 400 (naming the field) for a bad request.
* ``GET    /bodypart-router/backfill``  the progress (``null`` if none ever ran).
* ``DELETE /bodypart-router/backfill``  cancel the running backfill.

Planning, the checkpoint, throttling and resuming live in :mod:`bodypart_router.forwarding.backfill`.
This module supplies what is Orthanc-specific: the in-process Orthanc and ``process``, which runs
one instance through the same :class:`~.workers.ClassifyWorker` code as live ingest, in the
backfill thread, and only while the live queue is empty. Instances the router already
knows (classified live, or by an earlier backfill) are left as they are.

``"Route": false`` uses a copy of the configuration without routes, so it labels only. The
instance is recorded in the store with the state ``backfill`` while it is processed: live
workers never pick that state up, and after a restart the resumed backfill takes it again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any

from ..forwarding.backfill import CHECKPOINT_NAME, DELETED, KNOWN, BackfillBusy, BackfillError, BackfillRunner, Checkpoint, Scope
from ..forwarding.events import InstanceReceived
from ..forwarding.store import Received
from ..states import InstanceState
from .ingest import policy_from_index
from .monitoring import BACKFILL_THREAD_PREFIX, metrics_for
from .rest_api import route
from .routes import HttpError, Request
from .workers import ClassifyWorker

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

#: At shutdown, how long to wait for the instance in hand (Orthanc must stop within 10 s).
STOP_SECONDS = 2.0


class _Processor:
    """``process(instance_id, route) -> state`` for the runner."""

    def __init__(self, app: "RouterApp") -> None:
        assert app.config is not None and app.store is not None and app.files is not None
        self.app = app
        self.config = app.config
        store, files = app.store, app.files

        def worker(config: Any) -> ClassifyWorker:  # shares the first worker's engine (it is locked)
            return ClassifyWorker(0, config, store, app.rest, app.writer, app.engines[0], files, app.events,
                                  threading.Event(), app.wake_forwarder, app.stop_event,
                                  in_process=not app.in_child_process)

        self.routing = worker(app.config)
        self.labelling = worker(dataclasses.replace(app.config, routes={}, rules=(), uncertain_routes=(), quality_routes=()))

    def __call__(self, instance_id: str, route: bool) -> str:
        store = self.app.store
        assert store is not None
        record = store.instance(instance_id)
        if record is not None and record.state != InstanceState.BACKFILL:
            return KNOWN
        if record is None:
            received = policy_from_index(self.app.rest, self.config, instance_id)
            if received is None:
                return DELETED
            if received.state != InstanceState.QUEUED:  # not an X-ray: recorded like live ingest does
                store.add_received([received])
                self.app.events.publish(InstanceReceived(instance_id, received.state, received.detail))
                return received.state
            store.add_received([Received(instance_id, InstanceState.BACKFILL)])
        (self.routing if route else self.labelling).process([instance_id])
        after = store.instance(instance_id)
        return after.state if after else DELETED


def register(app: "RouterApp") -> None:
    """``/bodypart-router/backfill``: GET the progress, POST to start (a JSON object, ``{}`` for
    everything), DELETE to cancel; 503 while the router is disabled (the route helper's check)."""
    runner: BackfillRunner | None = None
    if app.enabled and app.config is not None and app.store is not None:
        runner = BackfillRunner(
            app.rest,
            Checkpoint(app.config.state_directory / CHECKPOINT_NAME),
            _Processor(app),
            live_queue_depth=app.store.queued_count,
            thread_name=BACKFILL_THREAD_PREFIX,
        )

    def the_runner() -> BackfillRunner:
        assert runner is not None, "a disabled router answers 503 before any handler runs"
        return runner

    def progress(app: "RouterApp", request: Request) -> Any:
        return the_runner().progress()

    def start(app: "RouterApp", request: Request) -> Any:
        try:
            return the_runner().start(Scope.from_request(request.json_body()))
        except BackfillError as exc:
            raise HttpError(400, f"backfill: {exc}") from exc
        except BackfillBusy as exc:
            raise HttpError(409, str(exc)) from exc

    def cancel(app: "RouterApp", request: Request) -> Any:
        return {"Cancelled": the_runner().cancel(), "Progress": the_runner().progress()}

    route(app, "/bodypart-router/backfill", GET=progress, POST=start, DELETE=cancel)
    if runner is not None:
        _hook_up(app, runner)


def _hook_up(app: "RouterApp", runner: BackfillRunner) -> None:
    """Progress in the status and metrics; resume at start-up, pause (not cancel) at shutdown."""

    def resume() -> None:
        runner.resume()

    def pause() -> None:
        runner.stop(timeout=STOP_SECONDS)

    metrics_for(app).watch_backfill(runner.progress)
    app.status_sections["Backfill"] = runner.progress
    app.on_started.append(resume)
    app.on_stopping.append(pause)
