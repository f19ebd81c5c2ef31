"""Memory hand-back: trims once per idle period, never during work."""

from __future__ import annotations

from bodypart_router.inference.resources import IdleTrim
from support.clock import Clock



def test_idle_trim_waits_for_a_quiet_second_then_trims_once() -> None:
    clock, trims = Clock(), []
    trim = IdleTrim(1.0, clock=clock, trim=lambda: trims.append(clock.now))
    assert not trim.idle()  # nothing done yet: nothing to hand back
    trim.busy()
    clock.now += 0.5
    assert not trim.idle()  # still within the burst
    clock.now += 0.6
    assert trim.idle() and trims == [101.1]
    clock.now += 5
    assert not trim.idle() and trim.trims == 1  # once per idle period
    trim.busy()
    clock.now += 1.0
    assert trim.idle() and trim.trims == 2


def test_idle_trim_really_calls_malloc_trim() -> None:
    assert IdleTrim(0.0).idle() is False  # no work seen
    trim = IdleTrim(0.0)
    trim.busy()
    assert trim.idle() and trim.trims == 1  # glibc (or a no-op elsewhere) without raising
