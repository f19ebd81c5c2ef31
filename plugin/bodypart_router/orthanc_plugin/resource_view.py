"""The router's result for one study, series or instance, on a page of its own.

Orthanc Explorer 2 (the default UI of the orthancteam images) shows labels, at study level,
and nothing of an instance's metadata; it has no script extension like Orthanc Explorer 1's,
but it opens configured *custom buttons* (``OrthancExplorer2.UiOptions.CustomButtons``, one
list per level, a URL template with ``{UUID}``). This module serves what such a button opens:

* ``GET /bodypart-router/{studies|series|instances}/{id}/summary``: JSON, per instance its
  class, score, state, where it arrived and where it still waits, plus counts per class and
  state (from the router's state database; at most ``MAX_INSTANCES`` instances);
* ``GET /bodypart-router/resource.html?level=studies&id=...``: the same as a page, with a link
  to the status page.

The buttons to add to OE2's configuration are in docs/install.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Destination
from ..orthanc_api import OrthancError
from ..states import OUTSTANDING, DeliveryState
from .rest_api import route, static_files
from .routes import HttpError, Request

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

PAGE_DIR = Path(__file__).with_name("resource_page")
FILES = {"resource.html": "text/html; charset=utf-8", "resource.js": "application/javascript; charset=utf-8"}
LEVELS = ("studies", "series", "instances")
#: A study of a thousand films is summarised on its first ones.
MAX_INSTANCES = 500


def _name(key: str) -> str:
    return Destination.from_key(key).name if ":" in key else key


def summary(app: "RouterApp", level: str, resource_id: str) -> dict[str, Any]:
    """What the router did with the instances of one resource."""
    store = app.require_store()
    if level == "instances":
        ids = [resource_id]
        app.rest.get_json(f"/instances/{resource_id}")  # 404 when it does not exist
    else:
        ids = [i["ID"] for i in app.rest.get_json(f"/{level}/{resource_id}/instances")]
    items = []
    classes: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for instance_id in ids[:MAX_INSTANCES]:
        record = store.instance(instance_id)
        by_state: dict[str, list[str]] = {}
        for d in store.deliveries_of(instance_id):
            by_state.setdefault(d.state, []).append(_name(d.destination))
        state = record.state if record else "not seen by the router"
        classes[(record.class_name if record else None) or "-"] += 1
        states[state] += 1
        items.append({"ID": instance_id, "Class": record.class_name if record else None,
                      "Score": None if not record or record.score is None else round(record.score, 4),
                      "State": state, "Detail": record.detail if record else None,
                      "ArrivedAt": by_state.get(DeliveryState.DELIVERED, []),
                      "Waiting": [n for s in OUTSTANDING for n in by_state.get(s, [])],
                      "DeadLetters": by_state.get(DeliveryState.DEAD, []),
                      "WouldSend": by_state.get(DeliveryState.SHADOW, [])})
    return {"Level": level, "ID": resource_id, "Instances": len(ids), "Shown": len(items),
            "Classes": dict(classes.most_common()), "States": dict(states.most_common()), "Items": items}


def on_summary(app: "RouterApp", request: Request) -> Any:
    level, resource_id = request.groups
    try:
        return summary(app, level, resource_id)
    except OrthancError as exc:
        raise HttpError(404 if exc.status == 404 else 502, f"{level}/{resource_id}: {exc}") from exc


def register(app: "RouterApp") -> None:
    static_files(app, PAGE_DIR, FILES)
    route(app, f"/bodypart-router/({'|'.join(LEVELS)})/([0-9a-f-]+)/summary", GET=on_summary)
