"""Per-destination circuit breaker: stop submitting to a destination that keeps failing.

After ``CircuitBreaker.FailureThreshold`` consecutive failures a destination's circuit opens:
nothing is submitted to it but one probe at a time, each after the :class:`~.retry.Retry`
policy's backoff, so an outage costs the other deliveries no attempts and the log gets one
line when it opens and one when it closes. There is no separate half-open state: an open
circuit with a probe in flight is still ``open``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..retry import Retry
from ..states import CircuitState


@dataclass
class _Circuit:
    failures: int = 0  # consecutive
    open_until: float = 0.0
    is_open: bool = False
    probing: bool = False
    opened_at: float | None = None  # when it last opened: "down since" on the status page
    last_error: str = ""


class CircuitBreaker:
    """Per-destination circuit breaker.

    ``on_change(destination, CircuitState, detail)`` fires once per transition.
    """

    def __init__(self, threshold: int, retry: Retry,
                 on_change: Callable[[str, CircuitState, str], None] = lambda d, s, m: None) -> None:
        self.threshold = threshold
        self.retry = retry
        self.on_change = on_change
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, destination: str) -> _Circuit:
        return self._circuits.setdefault(destination, _Circuit())

    def is_open(self, destination: str) -> bool:
        return self._get(destination).is_open

    def blocked(self, now: float) -> set[str]:
        """Destinations that must not get a new submission now (open and not yet due for a probe,
        or with a probe in flight)."""
        return {d for d, c in self._circuits.items() if c.is_open and (c.probing or now < c.open_until)}

    def start_probe(self, destination: str) -> bool:
        """Mark the destination's one probe in flight; False if the circuit is closed (no probe)."""
        c = self._get(destination)
        if c.is_open:
            c.probing = True
        return c.is_open

    def end_probe(self, destination: str) -> None:
        """The probe ended without an outcome (an error of our own, not the destination's):
        the next due delivery may probe again."""
        self._get(destination).probing = False

    def success(self, destination: str) -> None:
        c = self._get(destination)
        was_open = c.is_open
        self._circuits[destination] = _Circuit()
        if was_open:
            self.on_change(destination, CircuitState.CLOSED, "")

    def failure(self, destination: str, now: float, detail: str) -> None:
        c = self._get(destination)
        c.failures += 1
        c.probing = False
        c.last_error = detail
        if c.failures >= self.threshold:
            c.open_until = now + self.retry.delay(c.failures - self.threshold + 1)
            if not c.is_open:
                c.is_open = True
                c.opened_at = now
                self.on_change(destination, CircuitState.OPEN, detail)

    def states(self) -> dict[str, CircuitState]:
        return {d: _state(c) for d, c in self._circuits.items()}

    def details(self) -> dict[str, dict[str, Any]]:
        """Per destination: state, when it went down, consecutive failures and the last error."""
        return {d: {"State": _state(c), "DownSince": c.opened_at if c.is_open else None,
                    "ConsecutiveFailures": c.failures, "LastError": c.last_error or None}
                for d, c in self._circuits.items()}

    def idle_probes_due(self, now: float) -> list[str]:
        """Open circuits due for a probe (their backoff elapsed, no probe in flight)."""
        return [d for d, c in self._circuits.items() if c.is_open and not c.probing and now >= c.open_until]


def _state(circuit: _Circuit) -> CircuitState:
    return CircuitState.OPEN if circuit.is_open else CircuitState.CLOSED
