"""Keep one Python thread state per Orthanc thread that calls the router.

Orthanc's Python plugin enters the interpreter from Orthanc's own threads (the HTTP threads that
store instances, the thread that reports changes) with ``PyGILState_Ensure`` and leaves with
``PyGILState_Release``. For a thread that Python did not create, that pair makes a new thread
state on every call and deletes it afterwards; Python 3.11 maps and unmaps a frame stack with
each one, and every unmap makes the kernel interrupt the other cores to flush their address
caches. With the router, that was about seven unmaps per stored instance, in the middle of
Orthanc's ingest (docs/decisions.md, "Python thread states of Orthanc's threads").

:func:`keep_thread_state` takes one more ``PyGILState_Ensure`` on the calling thread, once, and
never releases it: the thread's state then outlives each call, and later calls reuse it.
Orthanc's threads are long-lived pools, so this keeps a few states, not one per instance.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

LOGGER = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., object])

_kept = threading.local()  # lives in the thread state: gone with it, so set again if it was lost


def keep_thread_state() -> None:
    """Call at the start of each callback Orthanc runs on its own threads (GIL held)."""
    if getattr(_kept, "done", False):
        return
    _kept.done = True
    try:
        # ``pythonapi`` calls with the GIL held, as PyGILState_Ensure needs on a thread that has it
        ctypes.pythonapi.PyGILState_Ensure()
    except (AttributeError, OSError) as exc:  # an interpreter whose API is not reachable this way
        LOGGER.debug("thread state not kept: %r", exc)


def keeping_thread_state(callback: F) -> F:
    """``callback`` as registered with Orthanc: it keeps the calling thread's state first."""
    @functools.wraps(callback)
    def entered_from_orthanc(*args: object) -> object:
        keep_thread_state()
        return callback(*args)
    return entered_from_orthanc  # type: ignore[return-value]
