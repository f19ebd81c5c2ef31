"""The one base class of the router's threads: it loops, survives its own bugs, wakes, and stops."""

from __future__ import annotations

import logging
import threading

import pytest
from bodypart_router.service_thread import OneShotThread, ServiceThread

WAIT = 10.0  # generous: these waits only bound a hang, they measure nothing


class Counting(ServiceThread):
    def __init__(self, fail_on: set[int] | None = None, busy_until: int = 0) -> None:
        super().__init__("bodypart-test", interval=3600)  # only a wake makes it run again
        self.steps = 0
        self.fail_on = fail_on or set()
        self.busy_until = busy_until
        self.stepped = threading.Event()
        self.events: list[str] = []

    def before(self) -> None:
        self.events.append("before")

    def step(self) -> bool:
        self.steps += 1
        self.stepped.set()
        if self.steps in self.fail_on:
            raise RuntimeError(f"bug in step {self.steps}")
        return self.steps < self.busy_until

    def failed(self, exc: Exception) -> None:
        self.events.append(f"failed: {exc}")

    def after(self) -> None:
        self.events.append("after")


def wait_for_step(thread: Counting, n: int) -> None:
    while thread.steps < n:
        assert thread.stepped.wait(WAIT), f"no step {n}"
        thread.stepped.clear()


def test_busy_steps_run_again_at_once_then_it_waits_for_a_wake() -> None:
    thread = Counting(busy_until=3)
    thread.start()
    wait_for_step(thread, 3)
    assert thread.steps == 3  # idle now: only a wake runs it again (the interval is an hour)
    thread.wake()
    wait_for_step(thread, 4)
    thread.stop()
    assert thread.join(WAIT) and not thread.running
    assert thread.events == ["before", "after"]


def test_an_exception_is_logged_with_its_traceback_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    thread = Counting(fail_on={1})
    with caplog.at_level(logging.ERROR, logger="bodypart_router"):
        thread.start()
        wait_for_step(thread, 1)
        thread.wake()
        wait_for_step(thread, 2)
        thread.stop()
        assert thread.join(WAIT)
    assert thread.events == ["before", "failed: bug in step 1", "after"]
    (record,) = [r for r in caplog.records if r.name == "bodypart_router.service_thread"]
    assert "bodypart-test" in record.getMessage() and record.exc_info is not None


def test_a_shared_stop_event_stops_every_thread_using_it() -> None:
    stop = threading.Event()
    threads = [Counting() for _ in range(3)]
    for t in threads:
        t.stop_event = stop
        t.start()
    for t in threads:
        wait_for_step(t, 1)
    stop.set()
    for t in threads:
        t.wake()
    assert all(t.join(WAIT) for t in threads)


def test_a_thread_is_a_named_daemon_so_it_never_holds_orthanc_at_exit() -> None:
    thread = Counting()
    assert thread.thread.daemon and thread.thread.name == "bodypart-test"


def test_a_one_shot_run_ends_by_itself_and_can_be_asked_to_stop_between_items() -> None:
    done: list[int] = []
    started = threading.Event()
    release = threading.Event()

    def work(thread: OneShotThread) -> None:
        for item in range(100):
            if thread.stopping:
                return
            done.append(item)
            started.set()
            release.wait(WAIT)

    run = OneShotThread("bodypart-job", work)
    run.start()
    assert started.wait(WAIT)
    run.stop()
    release.set()
    assert run.join(WAIT) and done == [0]
    whole = OneShotThread("bodypart-job", lambda thread: done.append(-1))
    whole.start()
    assert whole.join(WAIT) and done[-1] == -1


def test_the_operating_system_sees_the_threads_name() -> None:
    """``top -H`` and ``ps -T`` show which of the router's threads uses Orthanc's CPU."""
    from bodypart_router.service_thread import os_thread_name

    assert os_thread_name("bodypart-recorder") == "bp-recorder"
    assert os_thread_name("bodypart-classify-0") == "bp-classify-0"
    assert len(os_thread_name("bodypart-router-metrics")) == 15
    seen: list[str] = []

    class Naming(ServiceThread):
        def step(self) -> bool:
            with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
                seen.append(comm.read().strip())
            self.stop_event.set()
            return False

    thread = Naming("bodypart-recorder", interval=0.0)
    thread.start()
    assert thread.join(WAIT)
    assert seen == ["bp-recorder"]
