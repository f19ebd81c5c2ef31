"""Ingest first: a batch waits while the host is busy, goes at once when it is not, and never
waits past its limit; the router's own threads do not count as the host's load."""

from __future__ import annotations

import threading
import time

import pytest

from bodypart_router.ops.ingest_gate import ArrivalRate, HostCpu, IngestGate, default_busy_cores, thread_cpu_seconds
from support.clock import Clock


class Load:
    """A fake CPU clock that runs at ``cores`` CPU seconds per second (changeable at any time)."""

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self._t = time.monotonic()
        self._cpu = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._cpu += self.cores * (now - self._t)
            self._t = now
            return self._cpu


def _gate(load: Load, busy: float = 1.0, max_wait: float = 5.0) -> IngestGate:
    return IngestGate(busy, max_wait, cpu=load, window=0.01, max_age=0.2)


def test_an_idle_host_lets_the_batch_go_at_once() -> None:
    gate = _gate(Load(0.05))
    t0 = time.monotonic()
    assert gate.wait(threading.Event()) == 0.0
    assert time.monotonic() - t0 < 0.5
    assert gate.last_load == pytest.approx(0.05, abs=0.05)


def test_a_busy_host_holds_the_batch_until_it_is_quiet() -> None:
    load = Load(1.8)
    gate = _gate(load)
    threading.Timer(0.3, lambda: setattr(load, "cores", 0.1)).start()
    waited = gate.wait(threading.Event())
    assert 0.25 <= waited < 2.0
    assert gate.last_load is not None and gate.last_load < 1.0


def test_short_lulls_in_a_burst_do_not_let_the_batch_go() -> None:
    load = Load(3.0)
    gate = IngestGate(1.0, 5.0, cpu=load, window=0.01, quiet=0.3, max_age=0.5)
    stop_flapping = threading.Event()

    def flap() -> None:  # busy 0.15 s, quiet 0.1 s, ... then quiet for good
        for _ in range(4):  # any 0.3 s window holds 0.15 s or more of a burst: 1.5 cores or more
            load.cores = 3.0
            stop_flapping.wait(0.15)
            load.cores = 0.0
            stop_flapping.wait(0.1)
        load.cores = 0.0

    threading.Thread(target=flap, daemon=True).start()
    waited = gate.wait(threading.Event())
    stop_flapping.set()
    assert waited >= 0.9  # past the four bursts (1 s), not at the first 0.1 s lull
    assert waited < 3.0


def test_a_batch_never_waits_past_the_limit() -> None:
    gate = _gate(Load(2.0), max_wait=0.2)
    waited = gate.wait(threading.Event())
    assert 0.2 <= waited < 1.0


def test_max_wait_zero_never_waits_nor_measures() -> None:
    def no_cpu() -> float:
        raise AssertionError("the gate measured the load although yielding is off")

    assert IngestGate(1.0, 0, cpu=no_cpu).wait(threading.Event()) == 0.0


def test_stop_ends_the_wait() -> None:
    gate = _gate(Load(2.0), max_wait=30)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    gate.wait(stop)
    assert time.monotonic() - t0 < 2.0


def test_default_threshold_is_a_quarter_of_the_cores_and_at_least_half_a_core() -> None:
    assert default_busy_cores(1) == 0.5
    assert default_busy_cores(2) == 0.5
    assert default_busy_cores(16) == 4.0


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def test_host_cpu_leaves_out_the_routers_threads() -> None:
    stop = threading.Event()
    router = threading.Thread(target=_spin, args=(stop,), name="bodypart-test-spin", daemon=True)
    router.start()
    try:
        host = HostCpu(lambda: [router])
        cpu_before, router_before = host(), thread_cpu_seconds(router)
        time.sleep(0.3)
        host_used = host() - cpu_before
        router_used = (thread_cpu_seconds(router) or 0.0) - (router_before or 0.0)
    finally:
        stop.set()
        router.join()
    assert router_used > 0.05  # the spinning thread did use CPU...
    assert host_used < router_used / 2  # ...and it is not counted as the host's
    assert thread_cpu_seconds(router) is None  # an ended thread has no clock
    assert host() >= 0.0  # and the reading it left is kept, so it never counts as the host's



def test_arrival_rate_counts_the_last_half_second() -> None:
    clock = Clock()
    rate = ArrivalRate(window=0.5, clock=clock)
    assert rate.per_second() == 0.0
    for _ in range(10):  # 10 stores 20 ms apart: 50 a second
        rate.note()
        clock.now += 0.02
    assert rate.per_second() == pytest.approx(20.0)  # all 10 within the last 0.5 s: 10 / 0.5
    clock.now += 0.4
    assert rate.per_second() == pytest.approx(10.0, abs=2.0)  # only the last five remain
    clock.now += 1.0
    assert rate.per_second() == 0.0


def test_arrival_rate_is_bounded() -> None:
    clock = Clock()
    rate = ArrivalRate(window=0.5, clock=clock, capacity=8)
    for _ in range(100):
        rate.note()
    assert rate.per_second() == 16.0  # the newest 8, not an ever-growing list


def test_a_burst_of_arrivals_holds_the_batch_even_with_the_cpu_idle() -> None:
    """C-STORE senders wait for each response: Orthanc's CPU stays low while a burst arrives."""
    arriving = {"rate": 60.0}
    gate = IngestGate(1.0, 5.0, cpu=Load(0.1), window=0.01, quiet=0.1, max_age=0.2,
                      arrivals=lambda: arriving["rate"], busy_arrivals_per_s=20.0)
    threading.Timer(0.3, lambda: arriving.update(rate=5.0)).start()
    waited = gate.wait(threading.Event())
    assert 0.25 <= waited < 2.0


def test_a_trickle_of_arrivals_or_the_test_turned_off_does_not_hold_the_batch() -> None:
    for rate, threshold in ((10.0, 20.0), (500.0, 0.0)):
        gate = IngestGate(1.0, 5.0, cpu=Load(0.1), window=0.01, max_age=0.2,
                          arrivals=lambda: rate, busy_arrivals_per_s=threshold)
        assert gate.wait(threading.Event()) == 0.0
