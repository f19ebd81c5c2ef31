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
  raises its mmap threshold and serves the next ones from per-thread arenas that it never
  returns to the system, so the resident size grows by hundreds of MB. Fixing the threshold at
  1 MB and capping the arenas keeps large buffers mmapped and returned on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

from .host import log

#: onnxruntime intra-op threads per inference (per worker).
INFERENCE_THREADS = 1
#: Nice increment applied to each worker thread (0 = Orthanc's priority, 19 = lowest).
WORKER_NICENESS = 10
#: Allocations at least this large are always mmapped, hence returned to the system when freed.
MMAP_THRESHOLD_BYTES = 1 << 20
#: glibc malloc arenas (the default is 8 per core).
ARENA_MAX = 2

_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
_M_ARENA_MAX = -8


def tune_malloc() -> None:
    """Make glibc return large freed buffers to the system (no-op where glibc is not the allocator)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and libc.mallopt(_M_ARENA_MAX, ARENA_MAX)
    except (OSError, AttributeError) as exc:
        log("info", f"glibc malloc left as is ({exc!r})")
        return
    if not ok:
        log("info", "glibc refused the malloc settings; memory use may grow with large images")


def lower_thread_priority(increment: int = WORKER_NICENESS) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux threads have their own)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (AttributeError, OSError) as exc:  # other systems: the process priority applies
        log("info", f"{threading.current_thread().name} keeps Orthanc's CPU priority ({exc!r})")
