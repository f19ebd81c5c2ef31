"""Ingest first: hold classification back while Orthanc is busy storing instances.

On a small machine Orthanc's own ingest can use every core. Classification that runs during a
burst costs ingest even when the decoding happens in a child process at the lowest CPU
priority: its result writes go through Orthanc's index, and decoding competes for memory
bandwidth. Holding it back until the burst is over keeps ingest at its full rate (the figures:
``docs/decisions.md``, "Hold classification back while Orthanc stores").

"Busy" is measured two ways. The CPU time of Orthanc's own threads (this process's CPU time minus
the router's threads; the classifier child is another process) over the last fraction of a
second catches the bursts that load the machine. The rate of arrivals over the last half second
catches the bursts that do not: C-STORE senders wait for each response, so Orthanc uses little
CPU while any delay per store (an index write of the router's between two stores) costs their
rate directly. Once it was busy, it must stay quiet for :data:`QUIET_SECONDS` before a batch
goes, because the lulls between the stores of a burst are short. A steady trickle (a few films
a second) is classified at once. A batch never waits longer than ``max_wait_seconds``, so a
flood that never stops is still classified, slowly.

Nothing here imports ``orthanc``: the adapter hands in the threads to leave out.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable

from ..inference.resources import available_cores

#: Window over which Orthanc's CPU use is measured when no recent sample exists (seconds).
SAMPLE_WINDOW_SECONDS = 0.05
#: Once Orthanc was seen busy, it must stay below the threshold this long before a batch goes:
#: the lulls between the stores of a burst (a sender preparing its next file) are shorter.
QUIET_SECONDS = 0.3
#: A previous sample younger than this is reused as the start of the window (no extra wait).
SAMPLE_MAX_AGE_SECONDS = 0.5
#: Default busy threshold, as a share of the cores this process may run on (at least half a core).
BUSY_SHARE_OF_CORES = 0.25

#: Window over which the arrival rate is counted (seconds).
ARRIVAL_WINDOW_SECONDS = 0.5
#: Default arrival rate from which Orthanc counts as busy (instances per second).
BUSY_ARRIVALS_PER_SECOND = 20.0

CpuClock = Callable[[], float]


class ArrivalRate:
    """Instances stored per second over the last :data:`ARRIVAL_WINDOW_SECONDS`.

    :meth:`note` runs on Orthanc's ingest path (``OnStoredInstance``): one append to a bounded
    deque, no lock (a deque's append is atomic).
    """

    def __init__(self, window: float = ARRIVAL_WINDOW_SECONDS, clock: CpuClock = time.monotonic,
                 capacity: int = 4096) -> None:
        self.window = window
        self._clock = clock
        self._times: collections.deque[float] = collections.deque(maxlen=capacity)

    def note(self) -> None:
        self._times.append(self._clock())

    def per_second(self) -> float:
        since = self._clock() - self.window
        recent = 0
        for stamp in reversed(tuple(self._times)):  # a copy: the callback may append meanwhile
            if stamp < since:
                break
            recent += 1
        return recent / self.window


def default_busy_cores(cores: int | None = None) -> float:
    """Orthanc counts as busy from this many cores' worth of CPU: a quarter of the machine."""
    return max(0.5, BUSY_SHARE_OF_CORES * (cores if cores is not None else available_cores()))


def thread_cpu_seconds(thread: threading.Thread) -> float | None:
    """CPU seconds used so far by ``thread`` (of this process), or None if it is not running."""
    ident = thread.ident
    if ident is None or not thread.is_alive():
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, ProcessLookupError, AttributeError):
        return None


class HostCpu:
    """CPU seconds of this process's threads other than ``excluded()`` (the router's own).

    A router thread that has ended keeps its last reading, so its past CPU time is never
    counted as Orthanc's.
    """

    def __init__(self, excluded: Callable[[], Iterable[threading.Thread]]) -> None:
        self._excluded = excluded
        self._last: dict[threading.Thread, float] = {}

    def __call__(self) -> float:
        total = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
        for thread in self._excluded():
            seconds = thread_cpu_seconds(thread)
            if seconds is not None:
                self._last[thread] = seconds
        return total - sum(self._last.values())


class IngestGate:
    """``wait(stop)`` returns once Orthanc uses fewer than ``busy_cores`` and instances arrive at
    fewer than ``busy_arrivals_per_s`` (``arrivals`` given; 0 turns that test off), or after
    ``max_wait_seconds``; once it was seen busy, it must stay below both for ``quiet`` seconds.

    ``max_wait_seconds`` 0 turns yielding off. Thread-safe: several workers may wait at once.
    """

    def __init__(self, busy_cores: float, max_wait_seconds: float, *, cpu: CpuClock,
                 clock: CpuClock = time.monotonic, window: float = SAMPLE_WINDOW_SECONDS,
                 quiet: float = QUIET_SECONDS, max_age: float = SAMPLE_MAX_AGE_SECONDS,
                 arrivals: Callable[[], float] | None = None, busy_arrivals_per_s: float = 0.0) -> None:
        self.busy_cores = busy_cores
        self._arrivals = arrivals
        self.busy_arrivals_per_s = busy_arrivals_per_s
        self.max_wait_seconds = max_wait_seconds
        self._cpu, self._clock = cpu, clock
        self._window, self._quiet, self._max_age = window, quiet, max_age
        self._lock = threading.Lock()
        self._sample: tuple[float, float] | None = None  # (clock, cpu) of the last reading
        #: Orthanc's CPU use (cores) at the last reading, for the status page.
        self.last_load: float | None = None

    def load(self, stop: threading.Event, window: float | None = None) -> float:
        """Cores' worth of CPU Orthanc used since the last reading, over at least ``window``
        seconds (default: the short sampling window), waiting for the rest of it if needed."""
        window = self._window if window is None else window
        with self._lock:
            previous = self._sample
            now = self._clock()
            if previous is None or not (0 < now - previous[0] <= self._max_age):
                previous = (now, self._cpu())
                self._sample = previous
        if self._clock() - previous[0] < window:
            stop.wait(max(0.0, window - (self._clock() - previous[0])))
        with self._lock:
            now, cpu = self._clock(), self._cpu()
            elapsed = now - previous[0]
            load = max(0.0, (cpu - previous[1]) / elapsed) if elapsed > 0 else 0.0
            self._sample = (now, cpu)
            self.last_load = load
            return load

    def wait(self, stop: threading.Event) -> float:
        """Block while Orthanc is busy; returns the seconds waited (0.0 when it was not busy)."""
        if self.max_wait_seconds <= 0:
            return 0.0
        start = self._clock()
        deadline = start + self.max_wait_seconds
        busy = False
        while not stop.is_set():
            if self.load(stop, self._quiet if busy else None) < self.busy_cores and not self._arriving():
                break
            busy = True
            if self._clock() >= deadline:
                break
        return self._clock() - start if busy else 0.0

    def _arriving(self) -> bool:
        """Whether instances arrive at the busy rate (a burst that leaves the CPU idle)."""
        return (self._arrivals is not None and self.busy_arrivals_per_s > 0
                and self._arrivals() >= self.busy_arrivals_per_s)
