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

Every POST body goes through :func:`bodypart_router.ops.request_body.read_json_object` (size and
nesting checked before parsing, ``application/json`` and same-origin required, see
``docs/security.md``). ``prepare-stop`` is the exception: Orthanc's Lua sends no headers at all,
so it requires no headers and the token that this process put in its own environment
(:data:`STOP_TOKEN_VARIABLE`), which ``shutdown.lua`` reads with ``os.getenv``; no HTTP client
can know it.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orthanc  # type: ignore[import-not-found]

from ..errors import BodyPartRouterError
from ..forwarding.store import delivery_json
from ..ops.request_body import (ORTHANC_ID, RequestRefused, boolean, check_same_origin, integer_list, only_keys,
                            read_json_object, string_list)
from .http_answers import Unavailable, send_json, send_status

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

Handler = Callable[["RouterApp", str, dict[str, Any]], Any]

#: Environment variable holding the token ``shutdown.lua`` passes to ``prepare-stop``.
STOP_TOKEN_VARIABLE = "BODYPART_ROUTER_STOP_TOKEN"


def route(app: RouterApp, pattern: str, methods: tuple[str, ...], handler: Handler) -> None:
    """Register ``handler(app, method, request) -> JSON`` on ``pattern`` (a regex, Orthanc style)."""

    def callback(output: Any, uri: str, **request: Any) -> None:
        method = request.get("method", "GET")
        if method not in methods:
            output.SendMethodNotAllowed(",".join(methods))
            return
        try:
            if method != "GET":
                check_same_origin(request.get("headers"))
            send_json(output, handler(app, method, request))
        except RequestRefused as exc:
            send_status(output, exc.status, str(exc))
        except Unavailable as exc:
            send_status(output, 503, str(exc))
        except BadRequest as exc:
            send_status(output, 400, str(exc))
        except Forbidden as exc:
            send_status(output, 403, str(exc))
        except Exception as exc:  # never let a route crash the host
            LOGGER.exception(f"{method} {uri}: {exc!r}")
            send_status(output, 500, "internal error, see the Orthanc log")

    orthanc.RegisterRestCallback(pattern, callback)


class BadRequest(BodyPartRouterError, ValueError):
    pass


class Forbidden(BodyPartRouterError, PermissionError):
    pass


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
    body = read_json_object(request)
    only_keys(body, ("Deliveries", "Instances", "IncludeDelivered"))
    deliveries = integer_list(body, "Deliveries")
    instances = string_list(body, "Instances", pattern=ORTHANC_ID, what="Orthanc instance IDs")
    rows = app.resubmit_forwards(delivery_ids=deliveries, instance_ids=instances,
                                 include_delivered=boolean(body, "IncludeDelivered"))
    if rows:
        LOGGER.warning(f"resubmitted {len(rows)} forward(s) on request")
    return {"Resubmitted": [delivery_json(d) for d in rows]}


def prepare_stop(app: RouterApp, method: str, request: dict[str, Any]) -> Any:
    # Orthanc's own Lua calls carry no HTTP headers and shutdown.lua passes the token; an HTTP
    # request without headers (HTTP/1.0 allows it) cannot know the token.
    refused = Forbidden("only Orthanc's Lua Finalize() (shutdown.lua) may call this route")
    if request.get("headers"):
        raise refused
    try:
        body = read_json_object(request, require_json_content_type=False)
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
    route(app, "/bodypart-router/status", ("GET",), status)
    route(app, "/bodypart-router/instances/([0-9a-f-]+)", ("GET",), instance)
    route(app, "/bodypart-router/failed", ("GET",), failed)
    route(app, "/bodypart-router/failed/resubmit", ("POST",), resubmit)
    route(app, "/bodypart-router/lifecycle/prepare-stop", ("POST",), prepare_stop)
