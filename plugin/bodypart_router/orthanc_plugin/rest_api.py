"""The plugin's REST routes, served by Orthanc (so they follow its authentication settings).

* ``GET  /bodypart-router/status``                 enabled?, config error, model, counts, circuits
* ``GET  /bodypart-router/instances/{id}``         the router's record of one instance and its deliveries
* ``GET  /bodypart-router/failed``                 dead-lettered forwards
* ``POST /bodypart-router/failed/resubmit``        send them again. Body (all optional):
  ``{"Deliveries": [id, ...], "Instances": [orthanc-id, ...], "IncludeDelivered": false}``;
  an empty body resubmits every dead-lettered forward. ``IncludeDelivered`` lets a person
  force a new forward of instances that already arrived.
* ``POST /bodypart-router/lifecycle/prepare-stop``  called by ``shutdown.lua`` when Orthanc stops
  (refused over HTTP); it stops the router's threads until the next start of Orthanc.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orthanc  # type: ignore[import-not-found]

from ..delivery import delivery_json
from .host import log
from .http_answers import send_json, send_status

if TYPE_CHECKING:
    from .app import RouterApp

Handler = Callable[["RouterApp", str, dict[str, Any]], Any]


def route(app: RouterApp, pattern: str, methods: tuple[str, ...], handler: Handler) -> None:
    """Register ``handler(app, method, request) -> JSON`` on ``pattern`` (a regex, Orthanc style)."""

    def callback(output: Any, uri: str, **request: Any) -> None:
        method = request.get("method", "GET")
        if method not in methods:
            output.SendMethodNotAllowed(",".join(methods))
            return
        try:
            send_json(output, handler(app, method, request))
        except BadRequest as exc:
            send_status(output, 400, str(exc))
        except Forbidden as exc:
            send_status(output, 403, str(exc))
        except Exception as exc:  # never let a route crash the host
            log("error", f"{method} {uri}: {exc!r}")
            send_status(output, 500, "internal error, see the Orthanc log")

    orthanc.RegisterRestCallback(pattern, callback)


class BadRequest(ValueError):
    pass


class Forbidden(PermissionError):
    pass


def _body(request: dict[str, Any]) -> dict[str, Any]:
    raw = request.get("body") or b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def status(app: RouterApp, method: str, request: dict[str, Any]) -> Any:
    return app.status()


def instance(app: RouterApp, method: str, request: dict[str, Any]) -> Any:
    instance_id = request["groups"][0]
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


def failed(app: RouterApp, method: str, request: dict[str, Any]) -> Any:
    return {"Failed": [delivery_json(d) for d in app.require_store().failed()]}


def resubmit(app: RouterApp, method: str, request: dict[str, Any]) -> Any:
    body = _body(request)
    unknown = set(body) - {"Deliveries", "Instances", "IncludeDelivered"}
    if unknown:
        raise BadRequest(f"unknown key(s) {sorted(unknown)}; use Deliveries, Instances, IncludeDelivered")
    deliveries = body.get("Deliveries", [])
    instances = body.get("Instances", [])
    if not all(isinstance(d, int) for d in deliveries) or not all(isinstance(i, str) for i in instances):
        raise BadRequest("Deliveries must be a list of delivery IDs (integers), Instances a list of Orthanc IDs")
    rows = app.resubmit_forwards(delivery_ids=deliveries, instance_ids=instances,
                                 include_delivered=bool(body.get("IncludeDelivered", False)))
    if rows:
        log("info", f"resubmitted {len(rows)} forward(s) on request")
    return {"Resubmitted": [delivery_json(d) for d in rows]}


def prepare_stop(app: RouterApp, method: str, request: dict[str, Any]) -> Any:
    # Orthanc's own Lua calls carry no HTTP headers; a request from the network always does.
    if request.get("headers"):
        raise Forbidden("only Orthanc's Lua Finalize() (shutdown.lua) may call this route")
    app.prepare_stop()
    return {"Stopped": True}


def register(app: RouterApp) -> None:
    route(app, "/bodypart-router/status", ("GET",), status)
    route(app, "/bodypart-router/instances/([0-9a-f-]+)", ("GET",), instance)
    route(app, "/bodypart-router/failed", ("GET",), failed)
    route(app, "/bodypart-router/failed/resubmit", ("POST",), resubmit)
    route(app, "/bodypart-router/lifecycle/prepare-stop", ("POST",), prepare_stop)
