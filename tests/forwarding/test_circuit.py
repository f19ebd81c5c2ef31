"""The per-destination circuit breaker: opens after the threshold, one probe at a time, closes on success."""

from __future__ import annotations

from bodypart_router.forwarding.circuit import CircuitBreaker
from bodypart_router.retry import Retry
from bodypart_router.states import CircuitState


def test_circuit_breaker_transitions() -> None:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(2, Retry(5, 1, 4), lambda d, s, m: changes.append((d, s)))
    breaker.failure("x", 0, "e")
    assert not breaker.is_open("x")
    breaker.failure("x", 0, "e")
    assert breaker.is_open("x") and breaker.blocked(0.5) == {"x"} and breaker.blocked(1.0) == set()
    breaker.start_probe("x")
    assert breaker.blocked(5) == {"x"}  # one probe at a time
    breaker.success("x")
    assert changes == [("x", "open"), ("x", "closed")]


def test_an_open_circuit_waits_longer_after_each_failed_probe() -> None:
    breaker = CircuitBreaker(1, Retry(5, 1, 4))
    waits = []
    for _ in range(5):
        breaker.failure("x", 0, "e")
        (due,) = [t for t in (0.5, 1.5, 2.5, 3.5, 4.5) if "x" not in breaker.blocked(t)][:1]
        waits.append(due)
    assert waits == [1.5, 2.5, 4.5, 4.5, 4.5]  # the policy's backoff: 1, 2, 4, then capped at 4
    assert breaker.states() == {"x": CircuitState.OPEN}
    assert breaker.details()["x"]["State"] is CircuitState.OPEN
