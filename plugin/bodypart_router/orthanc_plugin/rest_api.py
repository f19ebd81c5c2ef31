"""The plugin's REST routes, served by Orthanc (so they follow its authentication settings).

* ``GET  /bodypart-router/status``                 enabled?, config error, model, counts, circuits
* ``GET  /bodypart-router/instances/{id}``         the router's record of one instance and its deliveries
* ``GET  /bodypart-router/failed``                 dead-lettered forwards
* ``POST /bodypart-router/failed/resubmit``        send them again. Body, every field optional:
  ``{"Deliveries": [id, ...], "Instances": [orthanc-id, ...], "IncludeDelivered": false}``;
  ``{}`` resubmits every dead-lettered forward. ``IncludeDelivered`` lets a person force a new
  forward of instances that already arrived.
* ``POST /bodypart-router/lifecycle/prepare-stop``  called by ``shutdown.lua`` when Orthanc stops;
  it stops the router's threads until the next start of Orthanc.

Every route goes through :func:`route` (the one helper of :mod:`.routes`: method check,
same-origin check, strict body reader, JSON answers and errors, see ``docs/security.md``).
``prepare-stop`` takes no headers at all: Orthanc's Lua sends none, so it requires none and
the token that this process put in its own environment (:data:`STOP_TOKEN_VARIABLE`), which
``shutdown.lua`` reads with ``os.getenv``; no HTTP client can know it.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orthanc  # type: ignore[import-not-found]

from ..forwarding.events import InstanceStateChanged
from ..forwarding.store_schema import Delivery, delivery_json
from ..ops.request_body import ORTHANC_ID, RequestRefused, boolean, integer_list, only_keys, string_list
from ..states import InstanceState, Kind
from .monitoring import metrics_for
from . import routes
from .routes import File, HttpError, Request, Route

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

#: Environment variable holding the token ``shutdown.lua`` passes to ``prepare-stop``.
STOP_TOKEN_VARIABLE = "BODYPART_ROUTER_STOP_TOKEN"

AppHandler = Callable[["RouterApp", Request], Any]


def route(app: RouterApp, pattern: str, *, needs_router: bool = True, **handlers: AppHandler) -> Route:
    """Register ``handlers`` (by HTTP method: ``GET=...``, ``POST=...``) on ``pattern``, a regex as
    Orthanc takes it. ``needs_router``: answer 503 while the router is disabled."""
    bound = {method: functools.partial(handler, app) for method, handler in handlers.items()}
    return routes.register(orthanc.RegisterRestCallback,
                           Route(pattern, bound, functools.partial(disabled_reason, app) if needs_router
                                 else (lambda: None)))


def disabled_reason(app: RouterApp) -> str | None:
    """Why the router's routes answer 503 now, or None when they can be served."""
    return None if app.enabled and app.store is not None else (app.error or "BodyPartRouter.Enabled is false")


def static_files(app: RouterApp, directory: Path, files: Mapping[str, str]) -> None:
    """Serve ``/bodypart-router/{name}`` from ``directory`` for each ``name -> MIME type``."""
    for name, mime in files.items():
        def page(app: RouterApp, request: Request, name: str = name, mime: str = mime) -> File:
            return File((directory / name).read_bytes(), mime)

        route(app, f"/bodypart-router/{name.replace('.', '[.]')}", needs_router=False, GET=page)


# -- resubmission: both endpoints (the REST API's and the status page's) ----------------------
@dataclass(frozen=True)
class Resubmitted:
    forwards: list[Delivery]
    classifications: int


def resubmit(app: RouterApp, *, delivery_ids: list[int] | None = None, instance_ids: list[str] | None = None,
             include_delivered: bool = False, classifications: bool = False) -> Resubmitted:
    """Send forwards again (dead letters, or delivered ones with ``include_delivered``); with
    ``classifications``, also put the named instances whose classification failed back in the queue."""
    store = app.require_store()
    forwards = app.resubmit_forwards(delivery_ids=delivery_ids, instance_ids=instance_ids,
                                     include_delivered=include_delivered)
    requeued = 0
    if classifications:
        resent = {d.instance_id for d in forwards}
        for instance_id in instance_ids or []:
            record = store.instance(instance_id)
            if record is not None and record.state.kind is Kind.FAILED and instance_id not in resent:
                store.requeue(instance_id, "resubmitted from the status page")
                app.events.publish(InstanceStateChanged(instance_id, InstanceState.QUEUED))
                requeued += 1
            metrics_for(app).clear_failure(instance_id)
        if requeued:
            app.wake_workers.set()
    if forwards or classifications:
        LOGGER.warning(f"resubmitted {len(forwards)} forward(s)"
                       + (f" and {requeued} classification(s)" if classifications else "") + " on request")
    return Resubmitted(forwards, requeued)


# -- handlers ---------------------------------------------------------------------------------
def status(app: RouterApp, request: Request) -> Any:
    return app.status()


def instance(app: RouterApp, request: Request) -> Any:
    instance_id = request.groups[0]
    store = app.require_store()
    record = store.instance(instance_id)
    return {
        "Instance": instance_id,
        "Known": record is not None,
        "State": record.state if record else None,
        "Class": record.class_name if record else None,
        "Score": record.score if record else None,
        "Model": record.model if record else None,
        "Detail": record.detail if record else None,
        "Deliveries": [delivery_json(d) for d in store.deliveries_of(instance_id)],
    }


def failed(app: RouterApp, request: Request) -> Any:
    return {"Failed": [delivery_json(d) for d in app.require_store().failed()]}


def resubmit_failed(app: RouterApp, request: Request) -> Any:
    body = request.json_body()
    only_keys(body, ("Deliveries", "Instances", "IncludeDelivered"))
    done = resubmit(app, delivery_ids=integer_list(body, "Deliveries"),
                    instance_ids=string_list(body, "Instances", pattern=ORTHANC_ID, what="Orthanc instance IDs"),
                    include_delivered=boolean(body, "IncludeDelivered"))
    return {"Resubmitted": [delivery_json(d) for d in done.forwards]}


def prepare_stop(app: RouterApp, request: Request) -> Any:
    # Orthanc's own Lua calls carry no HTTP headers and shutdown.lua passes the token; an HTTP
    # request without headers (HTTP/1.0 allows it) cannot know the token.
    refused = HttpError(403, "only Orthanc's Lua Finalize() (shutdown.lua) may call this route")
    if request.headers:
        raise refused
    try:
        body = request.json_body(require_json_content_type=False)
    except RequestRefused as exc:
        raise refused from exc
    token = body.get("Token")
    if not app.stop_token or not isinstance(token, str) or not hmac.compare_digest(token.encode(), app.stop_token.encode()):
        raise refused
    app.prepare_stop()
    return {"Stopped": True}


def register(app: RouterApp) -> None:
    app.stop_token = secrets.token_urlsafe(32)
    os.environ[STOP_TOKEN_VARIABLE] = app.stop_token  # read by shutdown.lua's os.getenv
    route(app, "/bodypart-router/status", needs_router=False, GET=status)
    route(app, "/bodypart-router/instances/([0-9a-f-]+)", GET=instance)
    route(app, "/bodypart-router/failed", GET=failed)
    route(app, "/bodypart-router/failed/resubmit", POST=resubmit_failed)
    route(app, "/bodypart-router/lifecycle/prepare-stop", needs_router=False, POST=prepare_stop)
