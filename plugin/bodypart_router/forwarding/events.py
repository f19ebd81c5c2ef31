"""Typed events of the lifecycle, and the small in-process dispatcher that delivers them.

A transition is published once, where it happens (the ingest recorder, a classification
worker, the forwarder), as one of the frozen dataclasses below. Whatever mirrors it subscribes
to its type: Orthanc's metadata and labels (the adapter's result writer), the metrics, the
header audit. Nobody mirrors a state by hand.

Subscribers run synchronously on the publisher's thread, in the order they subscribed. One that
raises is logged with its traceback and skipped: a mirror never stops the router's own work.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..states import CircuitState, InstanceState
from .store_schema import Delivery

if TYPE_CHECKING:
    from ..routing.image_facts import ImageFacts
    from ..routing.decision import RoutingDecision

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceReceived:
    """An instance was recorded at ingest (or by a backfill): ``queued`` or ``skipped:<reason>``."""

    instance_id: str
    state: InstanceState
    detail: str | None = None


@dataclass(frozen=True)
class InstanceClassified:
    """An instance got a class (its routing decision). Timings are this instance's share."""

    instance_id: str
    decision: RoutingDecision
    model: str
    tags: Mapping[str, Any] | None = None  # the header the rules read (None: not read)
    remote_aet: str | None = None
    facts: ImageFacts | None = None
    seconds: float = 0.0
    batch_size: int = 1
    decode_seconds: float = 0.0
    inference_seconds: float = 0.0


@dataclass(frozen=True)
class InstanceNotClassified:
    """An instance got a ``skipped:`` or ``failed:`` state instead of a class."""

    instance_id: str
    state: InstanceState
    detail: str = ""


@dataclass(frozen=True)
class InstanceStateChanged:
    """An instance moved on after its classification (``awaiting-series``, ``forwarded``,
    ``failed:dead-letter``, back to ``classified`` or ``queued`` on a resubmit). ``delivered``:
    the destination keys it has arrived at, when its forwards moved it (None otherwise)."""

    instance_id: str
    state: InstanceState
    delivered: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DeliverySubmitted:
    delivery: Delivery


@dataclass(frozen=True)
class DeliveryForwarded:
    """A forward arrived (``seconds``: from its submission; 0 when verified after a restart)."""

    delivery: Delivery
    seconds: float = 0.0


@dataclass(frozen=True)
class DeliveryFailed:
    """An attempt failed; it is retried, or dead-lettered (then :class:`DeadLettered` follows)."""

    delivery: Delivery
    error: str


@dataclass(frozen=True)
class DeadLettered:
    delivery: Delivery
    error: str


@dataclass(frozen=True)
class CircuitChanged:
    """A destination went down (``open``) or answers again (``closed``)."""

    destination: str
    state: CircuitState
    detail: str = ""


@dataclass(frozen=True)
class YieldedToIngest:
    """A classification batch waited ``seconds`` for Orthanc's storing to calm down."""

    seconds: float


E = TypeVar("E")


class Dispatcher:
    """Delivers each published event to the subscribers of its type."""

    def __init__(self) -> None:
        self._subscribers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, event_type: type[E], subscriber: Callable[[E], None]) -> None:
        self._subscribers[event_type].append(subscriber)

    def publish(self, event: object) -> None:
        for subscriber in self._subscribers.get(type(event), ()):
            try:
                subscriber(event)
            except Exception:  # a mirror's bug must not stop routing
                LOGGER.exception("subscriber %s of %s failed", getattr(subscriber, "__qualname__", subscriber),
                                 type(event).__name__)
