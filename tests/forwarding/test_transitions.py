"""The lifecycle's pure transitions, over every combination of the states they take."""

from __future__ import annotations

import itertools

import pytest
from bodypart_router.retry import Retry
from bodypart_router.states import DeliveryState, InstanceState, Kind
from bodypart_router.forwarding.transitions import (
    Next,
    after_classification,
    after_delivery,
    after_failure,
    after_lost_attempt,
    after_resubmit,
    after_reroute,
    after_unanswered,
    new_delivery,
    settled,
)

D = DeliveryState
I = InstanceState
#: Every multiset of up to three delivery states (one instance's forwards for one model).
COMBINATIONS = [c for n in range(4) for c in itertools.combinations_with_replacement(list(D), n)]
HELD = InstanceState.of_kind(Kind.HELD)


def expected_settled(deliveries: tuple[DeliveryState, ...]) -> InstanceState | None:
    if D.DEAD in deliveries:
        return I.FAILED_DEAD_LETTER
    if deliveries and set(deliveries) == {D.DELIVERED}:
        return I.FORWARDED
    return None


@pytest.mark.parametrize("deliveries", COMBINATIONS)
def test_settled(deliveries: tuple[DeliveryState, ...]) -> None:
    assert settled(deliveries) is expected_settled(deliveries)
    assert settled(iter(deliveries)) is expected_settled(deliveries)  # any iterable, read once


def test_settled_examples() -> None:
    assert settled([]) is None  # routed nowhere: nothing says it is forwarded
    assert settled([D.DELIVERED, D.PENDING]) is None
    assert settled([D.DELIVERED, D.DEAD]) is I.FAILED_DEAD_LETTER
    assert settled([D.SHADOW]) is None  # shadow mode forwards nothing


@pytest.mark.parametrize("deliveries", COMBINATIONS)
@pytest.mark.parametrize("held", (None, *HELD))
def test_after_classification(deliveries: tuple[DeliveryState, ...], held: InstanceState | None) -> None:
    state = after_classification(deliveries, held)
    base = expected_settled(deliveries) or I.CLASSIFIED
    if base is I.FAILED_DEAD_LETTER:
        assert state is I.FAILED_DEAD_LETTER  # a dead letter shows, held or not
    else:
        assert state is (held or base)


@pytest.mark.parametrize("deliveries", COMBINATIONS)
@pytest.mark.parametrize("current", (None, *InstanceState))
def test_after_delivery(deliveries: tuple[DeliveryState, ...], current: InstanceState | None) -> None:
    state = after_delivery(current, deliveries)
    base = expected_settled(deliveries) or I.CLASSIFIED
    if current is not None and current.kind is Kind.SKIPPED:
        assert state is current
    elif current is not None and current.kind is Kind.HELD:
        assert state is (I.FAILED_DEAD_LETTER if base is I.FAILED_DEAD_LETTER else current)
    else:
        assert state is base


@pytest.mark.parametrize("current", list(InstanceState))
def test_after_reroute(current: InstanceState) -> None:
    assert after_reroute(current) is (current if current.kind is Kind.HELD else I.CLASSIFIED)


def test_after_resubmit() -> None:
    assert after_resubmit() is I.CLASSIFIED  # a held film too: a person asked for the forwards


@pytest.mark.parametrize("shadow", (False, True))
@pytest.mark.parametrize("taken_over", (False, True))
def test_new_delivery(shadow: bool, taken_over: bool) -> None:
    expected = D.SHADOW if shadow else D.VERIFY if taken_over else D.PENDING
    assert new_delivery(shadow=shadow, taken_over=taken_over) is expected


RETRY = Retry(max_attempts=3, backoff_seconds=1, max_backoff_seconds=3)


@pytest.mark.parametrize("attempts", range(1, 6))
def test_after_failure_backs_off_then_dead_letters(attempts: int) -> None:
    expected = Next(D.DEAD, None) if attempts >= 3 else Next(D.PENDING, 100 + min(3, 2 ** (attempts - 1)))
    assert after_failure(RETRY, attempts, 100.0) == expected


@pytest.mark.parametrize("attempts", range(0, 6))
def test_after_lost_attempt_resends_at_once_until_spent(attempts: int) -> None:
    assert after_lost_attempt(RETRY, attempts, 100.0) == (
        Next(D.DEAD, None) if attempts >= 3 else Next(D.PENDING, 100.0))


@pytest.mark.parametrize("questions", range(1, 6))
def test_after_unanswered_asks_again_then_sends(questions: int) -> None:
    assert after_unanswered(RETRY, questions, 100.0) == (
        Next(D.PENDING, 100.0) if questions >= 3 else Next(D.VERIFY, 100 + RETRY.delay(questions)))
