"""Keep the router's CPU and memory use out of the way of Orthanc's ingest.

The router's heavy work (decoding, inference) runs in a child process by default
(:class:`bodypart_router.inference.engine.ChildEngine`), at a lower CPU priority and with its own heap,
so nothing here touches Orthanc's allocator then: inside Orthanc, even a worker that only runs
between bursts slows ingest, through page faults in the threads storing instances (figures:
``docs/decisions.md``, "Classification in a child process" and "Classifying inside Orthanc's
process").

When the child cannot start (``BodyPartRouter.ClassifyInChildProcess`` false, or no Python
interpreter of Orthanc's version on the machine), the work runs in Orthanc's process and the
measures below apply:

* **Inference takes one core, not all.** onnxruntime defaults to one intra-op thread per core;
  one inference then occupies every core at once. Each worker runs its inferences on its own
  thread (:data:`INFERENCE_THREADS`); more throughput comes from ``BodyPartRouter.Workers``.
* **Workers run at a lower CPU priority.** Linux schedules threads, and a thread may raise its
  own nice value without privileges: a worker at nice +10 still uses every idle cycle.
* **Freed buffers go back to the system.** The arenas are capped and trimmed after each batch
  (:mod:`bodypart_router.inference.resources`); without that, the RSS grows by hundreds of MB.

Either way, Orthanc's own threads allocate on the router's behalf (forward jobs read each file,
REST calls build responses) and glibc keeps what they free.
``resources.IdleTrim`` hands that back once the router's threads have been idle for a moment, never
during a burst, when the trimmed pages would have to be faulted in again by the storing threads.
"""

from __future__ import annotations

import logging
import os
import threading

from ..inference import resources as memory

LOGGER = logging.getLogger(__name__)

#: onnxruntime intra-op threads per inference in Orthanc's process (children: ``engine.child_inference_threads``).
INFERENCE_THREADS = 1
#: Nice increment applied to in-process worker threads (0 = Orthanc's priority, 19 = lowest).
WORKER_NICENESS = 10
#: glibc malloc arenas when the work runs in Orthanc's process (the default is 8 per core).
ARENA_MAX = 2


def tune_in_process_malloc() -> None:
    """Cap glibc's malloc arenas, for when images are decoded inside Orthanc's process."""
    if memory.glibc() is not None and not memory.cap_arenas(ARENA_MAX):
        LOGGER.info("glibc refused M_ARENA_MAX; memory use may grow with large images")


def release_free_memory() -> None:
    memory.release_free_memory()


def lower_thread_priority(increment: int = WORKER_NICENESS) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux threads have their own)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (AttributeError, OSError) as exc:  # other systems: the process priority applies
        LOGGER.info(f"{threading.current_thread().name} keeps Orthanc's CPU priority ({exc!r})")
