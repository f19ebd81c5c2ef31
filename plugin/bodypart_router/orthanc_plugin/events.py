"""A tiny event bus: the adapter announces what happened, extensions (metrics, audit...) listen.

Events and their keyword arguments:

* ``received``   instance_id, state ("queued" or "skipped:<reason>")
* ``classified`` instance_id, decision (RoutingDecision), model, header (evidence.InstanceHeader), seconds, batch_size,
  decode_seconds (this instance), inference_seconds (its share of the batch's model run)
* ``not_classified`` instance_id, state ("skipped:<reason>" / "failed:<reason>")
* ``yielded_to_ingest`` seconds (a batch held back while Orthanc was busy storing)
* ``submitted``  delivery (store.Delivery)
* ``delivered``  delivery, seconds (submission -> job success)
* ``forward_failed`` delivery, error
* ``dead_lettered`` delivery, error
* ``circuit``    destination, state ("open"/"closed"), detail

A listener that raises is logged and ignored: an extension never breaks routing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

LOGGER = logging.getLogger(__name__)


Listener = Callable[..., None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = defaultdict(list)

    def subscribe(self, event: str, listener: Listener) -> None:
        self._listeners[event].append(listener)

    def emit(self, event: str, **kwargs: Any) -> None:
        for listener in self._listeners.get(event, ()):
            try:
                listener(**kwargs)
            except Exception as exc:  # an extension's bug must not stop routing
                LOGGER.warning(f"listener {getattr(listener, '__qualname__', listener)} for {event} failed: {exc!r}",
                               exc_info=True)
