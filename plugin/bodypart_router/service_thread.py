"""One base class for the router's long-running threads.

Every service thread (the recorder, the classification workers, the forwarder, the metrics
publisher, a backfill or re-route run) needs the same scaffolding, and each piece of it was
learnt the hard way: a named daemon thread, named for the operating system too (``top -H``,
``ps -T`` and ``py-spy`` then show ``bp-recorder``, ``bp-classify-0``... inside Orthanc's
process instead of one more "Orthanc"); a stop event and a wake event; a loop that never
dies of an exception (it is logged with its traceback, and the loop pauses a moment so a
persistent fault does not spin); and a :meth:`join` bounded by a deadline, because Orthanc
must stop within 10 seconds and a thread not stopped at ``ORTHANC_STOPPED`` hangs its
shutdown. Subclasses write :meth:`step` (one pass of work) and, when they need them,
:meth:`before` and :meth:`after`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)

#: Seconds a thread pauses after an exception, so that a persistent fault does not spin.
ERROR_PAUSE_SECONDS = 1.0
#: ``prctl`` option that names the calling thread (Linux; at most 15 bytes).
_PR_SET_NAME = 15


def os_thread_name(name: str) -> str:
    """The name the operating system shows for a service thread: ``bodypart-recorder`` ->
    ``bp-recorder`` (Linux keeps 15 bytes)."""
    short = name[len("bodypart-"):] if name.startswith("bodypart-") else name
    return ("bp-" + short)[:15]


def name_os_thread(name: str) -> None:
    """Name the calling thread for the operating system; silently nothing where that fails."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, os_thread_name(name).encode(), 0, 0, 0)
    except (OSError, AttributeError):
        pass


class ServiceThread:
    """Runs :meth:`step` until stopped: at once again when it did work, else after ``interval``
    seconds or as soon as :meth:`wake` is called."""

    def __init__(self, name: str, *, interval: float, stop: threading.Event | None = None,
                 wake: threading.Event | None = None) -> None:
        self.name = name
        self.interval = interval
        #: Shared by the threads the adapter stops together; one of its own otherwise.
        self.stop_event = stop if stop is not None else threading.Event()
        self.wake_event = wake if wake is not None else threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- control ----------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self) -> None:
        """Ask the thread to stop (it finishes the step in hand, then :meth:`after`)."""
        self.stop_event.set()
        self.wake_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread at most ``timeout`` seconds; True if it ended."""
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    # -- what subclasses write --------------------------------------------------------------
    def before(self) -> None:
        """Once, on the thread, before the first step."""

    def step(self) -> bool:
        """One pass of work; True when it did some (the next pass starts at once)."""
        raise NotImplementedError

    def failed(self, exc: Exception) -> None:
        """A step raised ``exc`` (already logged): e.g. remember to catch up."""

    def after(self) -> None:
        """Once, on the thread, after the loop ended (a last drain at shutdown)."""

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        name_os_thread(self.name)
        self._guarded(self.before, "start")
        while not self.stop_event.is_set():
            try:
                if self.step():
                    continue
            except Exception as exc:  # a service thread never dies of one bad pass
                LOGGER.exception("%s: step failed", self.name)
                self.failed(exc)
                self.stop_event.wait(ERROR_PAUSE_SECONDS)
            self.wake_event.wait(self.interval)
            self.wake_event.clear()
        self._guarded(self.after, "stop")

    def _guarded(self, hook: object, when: str) -> None:
        try:
            hook()  # type: ignore[operator]
        except Exception:
            LOGGER.exception("%s: %s failed", self.name, when)


class OneShotThread(ServiceThread):
    """A run of work that ends by itself (a backfill, a re-route), with the same start, stop and
    join as the service threads. :meth:`work` checks :attr:`stopping` between items."""

    def __init__(self, name: str, work: Callable[["OneShotThread"], None]) -> None:
        super().__init__(name, interval=0.0)
        self._work = work

    def step(self) -> bool:
        try:
            self._work(self)
        finally:
            self.stop_event.set()
        return False
