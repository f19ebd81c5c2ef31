"""A clock that stands still until a test moves it: ``clock.now += 0.5``."""

from __future__ import annotations


class Clock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
