"""Pure transition functions: what an instance or a delivery becomes after each step.

The store persists what these functions decide and the forwarder acts on it; neither decides
a state itself. Each function takes the states it needs and returns the next one, without I/O,
so the whole lifecycle is tested here exhaustively (``tests/forwarding/test_transitions.py``).

Instance, as its forwards finish: ``classified`` until every forward of its model arrived
(``forwarded``) or one was given up (``failed:dead-letter``); a film held by a quality
requirement stays ``held:<reason>`` (its QualityRoutes forwards do not change that) unless a
forward was given up; a skipped instance never changes.

Delivery, after an attempt failed: ``pending`` again at the backoff the :class:`Retry` gives,
or ``dead`` once its attempts are spent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..retry import Retry
from ..states import DeliveryState, InstanceState, Kind


def settled(deliveries: Iterable[DeliveryState]) -> InstanceState | None:
    """What the forwards of one model say of their instance: ``failed:dead-letter`` if any was
    given up, ``forwarded`` once all arrived, None while some are still owed (or there are none)."""
    states = list(deliveries)
    if DeliveryState.DEAD in states:
        return InstanceState.FAILED_DEAD_LETTER
    if states and all(s is DeliveryState.DELIVERED for s in states):
        return InstanceState.FORWARDED
    return None


def after_classification(deliveries: Iterable[DeliveryState], held: InstanceState | None = None) -> InstanceState:
    """An instance just classified, whose deliveries (for its model) are ``deliveries``: usually
    ``classified``; ``forwarded`` or ``failed:dead-letter`` when they were all settled before
    (the same instance stored again); ``held`` (a ``held:`` state) unless a forward was given up."""
    state = settled(deliveries) or InstanceState.CLASSIFIED
    if held is not None and state is not InstanceState.FAILED_DEAD_LETTER:
        return held
    return state


def after_delivery(current: InstanceState | None, deliveries: Iterable[DeliveryState]) -> InstanceState:
    """An instance one of whose forwards just arrived or was given up (``deliveries``: all of its
    model's, that one included). ``current`` None: the instance's record is gone (deleted)."""
    state = settled(deliveries) or InstanceState.CLASSIFIED
    if current is None:
        return state
    if current.kind is Kind.SKIPPED:
        return current
    if current.kind is Kind.HELD and state is not InstanceState.FAILED_DEAD_LETTER:
        return current  # a held film stays held once its QualityRoutes forward arrived
    return state


def after_reroute(current: InstanceState) -> InstanceState:
    """Forwards to new destinations were added (reroute): ``classified`` until they finish; a
    held film stays held."""
    return current if current.kind is Kind.HELD else InstanceState.CLASSIFIED


def after_resubmit() -> InstanceState:
    """A person sent dead (or delivered) forwards again: ``classified`` until they finish, held or not."""
    return InstanceState.CLASSIFIED


@dataclass(frozen=True)
class Next:
    """What a delivery becomes: its state and when it is next due (None: never by itself)."""

    state: DeliveryState
    due_at: float | None


def after_failure(retry: Retry, attempts: int, now: float) -> Next:
    """A forward failed after ``attempts`` attempts (this one counted): tried again after the
    policy's backoff, or dead-lettered once the attempts are spent."""
    if retry.exhausted(attempts):
        return Next(DeliveryState.DEAD, None)
    return Next(DeliveryState.PENDING, now + retry.delay(attempts))


def after_lost_attempt(retry: Retry, attempts: int, now: float) -> Next:
    """A forward whose attempt may not have arrived (a crash, a forgotten job; the destination
    does not hold it or cannot say): sent again at once, unless its attempts are spent."""
    if retry.exhausted(attempts):
        return Next(DeliveryState.DEAD, None)
    return Next(DeliveryState.PENDING, now)


def after_unanswered(retry: Retry, questions: int, now: float) -> Next:
    """The destination did not answer ``questions`` questions about a forward of unknown
    outcome: asked again after the backoff, or, once the policy's attempts are spent, sent
    again (``pending`` now) rather than held forever."""
    if retry.exhausted(questions):
        return Next(DeliveryState.PENDING, now)
    return Next(DeliveryState.VERIFY, now + retry.delay(questions))


def new_delivery(*, shadow: bool, taken_over: bool) -> DeliveryState:
    """A delivery just created: ``shadow`` in shadow mode (never sent); ``verify`` for an instance
    taken over from a node whose claim lapsed (that node may have sent it); else ``pending``."""
    if shadow:
        return DeliveryState.SHADOW
    return DeliveryState.VERIFY if taken_over else DeliveryState.PENDING
