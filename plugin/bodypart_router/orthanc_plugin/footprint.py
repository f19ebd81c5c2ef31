"""Keep the router's CPU and memory use out of the way of Orthanc's ingest.

The router runs inside Orthanc's process and, on a small server, on the same cores. Three
measured effects (``make bench``: ``ingest_ratio`` and ``rss_mb``) are handled here:

* **Inference takes one core, not all.** onnxruntime defaults to one intra-op thread per core;
  one inference then occupies every core at once and stalls the threads storing instances.
  Each worker runs its inferences on its own thread (:data:`INFERENCE_THREADS`); more
  throughput comes from ``BodyPartRouter.Workers``.
* **Workers run at a lower CPU priority.** Linux schedules threads, and a thread may raise its
  own nice value without privileges. A worker at nice +10 still uses every idle cycle, but
  when Orthanc's threads want the core, they get it: a burst delays classification a little
  instead of slowing the modality that is sending.
* **Freed buffers go back to the system.** A radiograph passes through several 6-15 MB buffers
  (the file read back over REST, decode arrays). After the first such buffer is freed, glibc
  raises its mmap threshold and serves the next ones from per-thread arenas whose free space
  it keeps, so the resident size grows by hundreds of MB. The arenas are capped and, after each
  batch, ``malloc_trim`` hands their free pages back (1,000 instances: 580 MB instead of over
  740 MB). Fixing the mmap threshold instead would bound memory as well, but it makes every large
  buffer of Orthanc's own ingest a fresh mmap: +20 ms of CPU per 15 MB instance stored.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import threading

from .host import log

#: onnxruntime intra-op threads per inference (per worker).
INFERENCE_THREADS = 1
#: Nice increment applied to each worker thread (0 = Orthanc's priority, 19 = lowest).
WORKER_NICENESS = 10
#: glibc malloc arenas (the default is 8 per core).
ARENA_MAX = 2

_M_ARENA_MAX = -8  # from glibc's <malloc.h>


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt/malloc_trim exist), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError as exc:
        log("info", f"glibc malloc left as is ({exc!r})")
        return None


def tune_malloc() -> None:
    """Cap glibc's malloc arenas (no-op where glibc is not the allocator)."""
    libc = _glibc()
    if libc is not None and not libc.mallopt(_M_ARENA_MAX, ARENA_MAX):
        log("info", "glibc refused M_ARENA_MAX; memory use may grow with large images")


def release_free_memory() -> None:
    """Give the free pages of malloc's arenas back to the system (a few ms; call between batches)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def lower_thread_priority(increment: int = WORKER_NICENESS) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux threads have their own)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (AttributeError, OSError) as exc:  # other systems: the process priority applies
        log("info", f"{threading.current_thread().name} keeps Orthanc's CPU priority ({exc!r})")
