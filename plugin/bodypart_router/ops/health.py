"""The router's health in one word and a reason: ``ok``, ``degraded:<why>``, ``stopped``, ``disabled:<why>``.

Why one field: ``Enabled: true, Error: null`` used to be all the status said while the router
was stopped by ``prepare-stop``, rebuilding a lost state database, unable to restart its
classifier, writing to a full disk or unable to reach a destination. Each part of the router
reports what goes wrong (and clears it when it works again) under its own key; the status,
the status page and the ``health`` metric read the summary. This module never imports
``orthanc``.
"""

from __future__ import annotations

import threading
from enum import Enum


class HealthState(Enum):
    OK = "ok"
    DEGRADED = "degraded"
    STOPPED = "stopped"
    DISABLED = "disabled"

    @property
    def code(self) -> int:
        """The value of the ``health`` metric: 0 ok, 1 degraded, 2 stopped, 3 disabled."""
        return list(HealthState).index(self)


class Health:
    """Problems the router's parts report, by key (``store``, ``classifier``, ``forwarder``...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}

    def problem(self, key: str, why: str) -> None:
        with self._lock:
            self._problems[key] = why

    def clear(self, key: str) -> None:
        with self._lock:
            self._problems.pop(key, None)

    def problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._problems)


def summarize(*, disabled: str | None, stopped: bool, problems: list[str]) -> tuple[HealthState, str]:
    """``(state, "ok" | "degraded:<why>; <why>" | "stopped" | "disabled:<why>")``."""
    if disabled is not None:
        return HealthState.DISABLED, f"disabled:{disabled}"
    if stopped:
        return HealthState.STOPPED, "stopped"
    if problems:
        return HealthState.DEGRADED, "degraded:" + "; ".join(problems)
    return HealthState.OK, "ok"
