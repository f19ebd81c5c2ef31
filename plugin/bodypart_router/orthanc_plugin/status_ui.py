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

from ..ops.request_body import ORTHANC_ID, only_keys, string_list
from .monitoring import PAGE_SIZE, dead_letter_page, metrics_for, recent_page
from .rest_api import resubmit, route, static_files
from .routes import Request

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

PAGE_DIR = Path(__file__).with_name("status_page")
FILES = {"status.html": "text/html; charset=utf-8", "status.js": "application/javascript; charset=utf-8"}


def resubmit_instances(app: "RouterApp", request: Request) -> dict[str, int]:
    """Send dead letters again and put failed classifications back in the queue."""
    body = request.json_body()
    only_keys(body, ("Instances",))
    ids = string_list(body, "Instances", pattern=ORTHANC_ID, what="Orthanc instance IDs", non_empty=True)
    done = resubmit(app, instance_ids=ids, classifications=True)
    return {"Forwards": len(done.forwards), "Classifications": done.classifications}


def dead_letters(app: "RouterApp", request: Request) -> Any:
    return dead_letter_page(app, *request.page(PAGE_SIZE))


def recent(app: "RouterApp", request: Request) -> Any:
    return recent_page(app, metrics_for(app), *request.page(PAGE_SIZE))


def register(app: "RouterApp") -> None:
    static_files(app, PAGE_DIR, FILES)
    route(app, "/bodypart-router/resubmit", POST=resubmit_instances)
    route(app, "/bodypart-router/dead-letters", GET=dead_letters)
    route(app, "/bodypart-router/recent", GET=recent)
