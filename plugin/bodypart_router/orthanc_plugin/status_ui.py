"""The status page (``status_page/``) and its one action.

* ``GET  /bodypart-router/status.html`` and ``/bodypart-router/status.js``: the page, plain
  files served by Orthanc (so behind its authentication); Orthanc Explorer links to it.
  The page polls ``GET /bodypart-router/status``.
* ``POST /bodypart-router/resubmit`` ``{"Instances": [orthanc-id, ...]}``: the page's
  "Resubmit" button. A dead-lettered forward is sent again (as
  ``POST /bodypart-router/failed/resubmit`` does); an instance whose classification failed
  goes back to the classification queue. Answers ``{"Forwards": n, "Classifications": n}``.
  (``POST /bodypart-router/failed/resubmit`` with an empty body, the page's "Resubmit all",
  resends every dead letter.)
* ``GET  /bodypart-router/dead-letters?offset=0&limit=50`` and ``GET /bodypart-router/recent?...``:
  the pages of the status page's dead letters and recent decisions, newest first, read from
  the state database: ``{"Total": n, "Offset": n, "Items": [...]}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orthanc  # type: ignore[import-not-found]

from ..forwarding.events import InstanceStateChanged
from ..ops.request_body import ORTHANC_ID, RequestRefused, only_keys, read_json_object, string_list
from ..states import InstanceState, Kind
from .http_answers import send_json, send_status
from .monitoring import PAGE_SIZE, dead_letter_page, metrics_for, recent_page

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

PAGE_DIR = Path(__file__).with_name("status_page")
FILES = {"status.html": "text/html; charset=utf-8", "status.js": "application/javascript; charset=utf-8"}


def _serve(name: str, mime: str) -> Any:
    def callback(output: Any, uri: str, **request: Any) -> None:
        if request.get("method", "GET") != "GET":
            output.SendMethodNotAllowed("GET")
            return
        output.AnswerBuffer((PAGE_DIR / name).read_bytes(), mime)

    return callback


def resubmit(app: "RouterApp", instance_ids: list[str]) -> dict[str, int]:
    """Send dead letters again and put failed classifications back in the queue."""
    store = app.require_store()
    forwards = app.resubmit_forwards(instance_ids=instance_ids)
    classifications = 0
    for instance_id in instance_ids:
        record = store.instance(instance_id)
        if record is not None and record.state.kind is Kind.FAILED and not any(
                d.instance_id == instance_id for d in forwards):
            store.requeue(instance_id, "resubmitted from the status page")
            app.events.publish(InstanceStateChanged(instance_id, InstanceState.QUEUED))
            classifications += 1
        metrics_for(app).clear_failure(instance_id)
    if classifications:
        app.wake_workers.set()
    LOGGER.warning(f"resubmitted {len(forwards)} forward(s) and {classifications} classification(s) on request")
    return {"Forwards": len(forwards), "Classifications": classifications}


def register(app: "RouterApp") -> None:
    for name, mime in FILES.items():
        orthanc.RegisterRestCallback(f"/bodypart-router/{name.replace('.', '[.]')}", _serve(name, mime))

    def on_resubmit(output: Any, uri: str, **request: Any) -> None:
        if request.get("method") != "POST":
            output.SendMethodNotAllowed("POST")
            return
        if app.store is None:
            send_status(output, 503, f"the router is disabled: {app.error or 'BodyPartRouter.Enabled is false'}")
            return
        try:
            body = read_json_object(request)
            only_keys(body, ("Instances",))
            ids = string_list(body, "Instances", pattern=ORTHANC_ID, what="Orthanc instance IDs", non_empty=True)
            send_json(output, resubmit(app, ids))
        except RequestRefused as exc:
            send_status(output, exc.status, str(exc))
        except Exception as exc:  # never let a route crash the host
            LOGGER.exception(f"POST {uri}: {exc!r}")
            send_status(output, 500, "internal error, see the Orthanc log")

    orthanc.RegisterRestCallback("/bodypart-router/resubmit", on_resubmit)

    def paged(page: Any) -> Any:
        def callback(output: Any, uri: str, **request: Any) -> None:
            if request.get("method", "GET") != "GET":
                output.SendMethodNotAllowed("GET")
                return
            if app.store is None:
                send_status(output, 503, f"the router is disabled: {app.error or 'BodyPartRouter.Enabled is false'}")
                return
            args = request.get("get") or {}
            try:
                offset = max(0, int(args.get("offset", 0)))
                limit = min(500, max(1, int(args.get("limit", PAGE_SIZE))))
            except ValueError:
                send_status(output, 400, "offset and limit must be integers")
                return
            try:
                send_json(output, page(offset, limit))
            except Exception as exc:  # never let a route crash the host
                LOGGER.exception(f"GET {uri}: {exc!r}")
                send_status(output, 500, "internal error, see the Orthanc log")

        return callback

    orthanc.RegisterRestCallback("/bodypart-router/dead-letters", paged(lambda o, n: dead_letter_page(app, o, n)))
    orthanc.RegisterRestCallback("/bodypart-router/recent", paged(lambda o, n: recent_page(app, metrics_for(app), o, n)))
