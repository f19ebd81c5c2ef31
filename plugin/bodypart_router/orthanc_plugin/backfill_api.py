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
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import orthanc  # type: ignore[import-not-found]

from ..ops.request_body import RequestRefused, check_same_origin, read_json_object
from ..forwarding.backfill import CHECKPOINT_NAME, DELETED, KNOWN, BackfillBusy, BackfillRunner, Checkpoint, Scope
from ..forwarding.events import InstanceReceived
from ..forwarding.store import Received
from ..states import InstanceState
from .http_answers import send_json, send_status
from .ingest import policy_from_index
from .monitoring import BACKFILL_THREAD_PREFIX, metrics_for
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


def handle(runner: BackfillRunner, method: str, request: dict[str, Any]) -> tuple[int, Any]:
    """One request to ``/bodypart-router/backfill`` -> (HTTP status, JSON body or message).
    A POST body must be a JSON object (``{}`` for everything), see :mod:`bodypart_router.ops.request_body`."""
    if method == "GET":
        return 200, runner.progress()
    try:
        if method == "DELETE":
            check_same_origin(request.get("headers"))
            return 200, {"Cancelled": runner.cancel(), "Progress": runner.progress()}
        return 200, runner.start(Scope.from_request(read_json_object(request)))
    except RequestRefused as exc:
        return exc.status, f"backfill: {exc}"
    except ValueError as exc:  # BackfillError
        return 400, f"backfill: {exc}"
    except BackfillBusy as exc:
        return 409, str(exc)


def register(app: "RouterApp") -> None:
    runner: BackfillRunner | None = None
    if app.enabled and app.config is not None and app.store is not None:
        runner = BackfillRunner(
            app.rest,
            Checkpoint(app.config.state_directory / CHECKPOINT_NAME),
            _Processor(app),
            live_queue_depth=app.store.queued_count,
            thread_name=BACKFILL_THREAD_PREFIX,
        )

    def callback(output: Any, uri: str, **request: Any) -> None:
        method = request.get("method", "GET")
        if method not in ("GET", "POST", "DELETE"):
            output.SendMethodNotAllowed("GET,POST,DELETE")
            return
        if runner is None:
            send_status(output, 503, f"the router is disabled: {app.error or 'BodyPartRouter.Enabled is false'}")
            return
        try:
            status, body = handle(runner, method, request)
        except Exception as exc:  # never let a route crash the host
            LOGGER.exception(f"{method} {uri}: {exc!r}")
            status, body = 500, "internal error, see the Orthanc log"
        if status == 200:
            send_json(output, body)
        else:
            send_status(output, status, body)

    orthanc.RegisterRestCallback("/bodypart-router/backfill", callback)
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
