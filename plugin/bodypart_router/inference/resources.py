"""What the classification work takes from the machine: the cores it may use, and glibc malloc controls.

:func:`available_cores` is this process's CPU affinity (the engine sizes its inference threads
by it, the ingest gate its idea of "busy"). The rest gives freed image buffers back to the system.

A radiograph passes through several buffers of tens of MB (the file, decode arrays). After the
first such buffer is freed, glibc raises its mmap threshold and serves the next ones from
per-thread arenas whose free space it keeps, so a long-running process grows by hundreds of MB.
Trimming hands those pages back, but pages handed back must be faulted in and zeroed again by
the next image, which costs a busy process much of its throughput. The child therefore keeps its
freed memory for reuse while it works (:func:`reuse_freed_memory`) and trims once it is idle
(figures: ``docs/decisions.md``, "Memory").
Everything here is a no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import threading
import time
from collections.abc import Callable


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.lru_cache(maxsize=1)
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt/malloc_trim exist), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def cap_arenas(arenas: int) -> bool:
    """Limit glibc's malloc arenas (the default is 8 per core); False if refused or not glibc."""
    libc = glibc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas))


def reuse_freed_memory(threshold_bytes: int = 256 << 20) -> bool:
    """Serve buffers up to ``threshold_bytes`` from the heap and keep up to that much freed
    memory for reuse (instead of returning it to the system at every ``free``)."""
    libc = glibc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, min(threshold_bytes, 32 << 20))
                and libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes))


def release_free_memory() -> None:
    """Give the free pages of malloc's arenas back to the system (a few ms; call between batches)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: Seconds without work after which a long-running process's free heap goes back to the system.
IDLE_TRIM_SECONDS = 1.0


class IdleTrim:
    """Trim the heap once per idle period: threads call ``busy()`` after work and
    ``idle()`` when they find none; thread-safe."""

    def __init__(self, idle_seconds: float = IDLE_TRIM_SECONDS, *, clock: Callable[[], float] = time.monotonic,
                 trim: Callable[[], None] | None = None) -> None:
        self.idle_seconds = idle_seconds
        self._clock, self._trim = clock, trim or release_free_memory
        self._lock = threading.Lock()
        self._last_busy: float | None = None  # None: trimmed since the last work
        #: Trims done, for tests and the status page.
        self.trims = 0

    def busy(self) -> None:
        with self._lock:
            self._last_busy = self._clock()

    def idle(self) -> bool:
        """Trim if the last work is ``idle_seconds`` old and not yet followed by a trim."""
        with self._lock:
            if self._last_busy is None or self._clock() - self._last_busy < self.idle_seconds:
                return False
            self._last_busy = None
        self._trim()
        self.trims += 1
        return True
