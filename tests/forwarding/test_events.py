"""Typed events: the dispatcher delivers each event to the subscribers of its type, and a
subscriber that fails never stops the publisher."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from bodypart_router.forwarding.events import (CircuitChanged, DeadLettered, DeliveryFailed, DeliveryForwarded, Dispatcher,
                                    InstanceNotClassified, InstanceStateChanged)
from bodypart_router.states import CircuitState, DeliveryState, InstanceState
from bodypart_router.forwarding.store_schema import Delivery

DELIVERY = Delivery(1, "a", "peer:x", "m@1", DeliveryState.DEAD, 3, 0.0, None, "refused")


def test_each_event_goes_to_the_subscribers_of_its_type_in_order() -> None:
    events, seen = Dispatcher(), []
    events.subscribe(InstanceStateChanged, lambda e: seen.append(("first", e)))
    events.subscribe(InstanceStateChanged, lambda e: seen.append(("second", e)))
    events.subscribe(DeadLettered, lambda e: seen.append(("dead", e)))
    changed = InstanceStateChanged("a", InstanceState.FAILED_DEAD_LETTER, ())
    events.publish(changed)
    events.publish(CircuitChanged("peer:x", CircuitState.OPEN, "refused"))  # nobody listens: fine
    assert seen == [("first", changed), ("second", changed)]


def test_a_failing_subscriber_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    events, seen = Dispatcher(), []

    def broken(event: DeliveryFailed) -> None:
        raise RuntimeError("bug in a mirror")

    events.subscribe(DeliveryFailed, broken)
    events.subscribe(DeliveryFailed, seen.append)
    with caplog.at_level(logging.ERROR, logger="bodypart_router.events"):
        events.publish(DeliveryFailed(DELIVERY, "refused"))
    assert seen == [DeliveryFailed(DELIVERY, "refused")]
    (record,) = caplog.records
    assert "broken" in record.getMessage() and "DeliveryFailed" in record.getMessage()
    assert record.exc_info is not None and "bug in a mirror" in str(record.exc_info[1])  # with its traceback


def test_events_are_immutable_values() -> None:
    event = InstanceNotClassified("a", InstanceState.FAILED_UNREADABLE, "could not read the file")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.state = InstanceState.QUEUED  # type: ignore[misc]
    assert event == InstanceNotClassified("a", InstanceState.FAILED_UNREADABLE, "could not read the file")
    assert DeliveryForwarded(DELIVERY).seconds == 0.0
