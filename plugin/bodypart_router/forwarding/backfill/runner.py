"""The backfill's run: one at a time, in a thread of its own, yielding to live ingest and throttled."""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from ...errors import BodyPartRouterError
from ...orthanc_api import Orthanc
from ...service_thread import OneShotThread
from ...states import InstanceState
from .checkpoint import Checkpoint
from .scope import BackfillError, Scope, plan

LOGGER = logging.getLogger(__name__)

#: How often the runner looks at the live queue again while it yields to it.
YIELD_POLL_SECONDS = 0.2
#: Rate and ETA are measured over this recent window.
RATE_WINDOW_SECONDS = 60.0

PLANNING, RUNNING, DONE, CANCELLED, FAILED = "planning", "running", "done", "cancelled", "failed"
ACTIVE_STATES = (PLANNING, RUNNING)


#: ``process(instance_id, route)`` classifies one instance (and forwards it when ``route``)
#: and returns its resulting state, e.g. ``classified``, ``forwarded``, ``skipped:<reason>``.
Process = Callable[[str, bool], str]


class BackfillBusy(BodyPartRouterError, RuntimeError):
    """A backfill is already running (HTTP 409)."""


class TokenBucket:
    """At most ``rate`` takes per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def wait_time(self) -> float:
        """Take a token and return 0, or return how long to wait before trying again."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateMeter:
    """Instances per second over the recent window, for the rate and the ETA."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._window, self._clock = window, clock
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> None:
        now = self._clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def _iso_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class BackfillRunner:
    """Plans and works through one backfill at a time in a background thread.

    Args:
        orthanc: where the instances are (the adapter's in-process implementation).
        checkpoint: where progress survives restarts.
        process: classifies one instance (see :data:`Process`); an exception is recorded as
            ``failed:backfill-error`` for that instance and the run goes on.
        live_queue_depth: the live ingest queue's length; the runner waits while it is > 0.
    """

    def __init__(
        self,
        orthanc: Orthanc,
        checkpoint: Checkpoint,
        process: Process,
        *,
        live_queue_depth: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
        thread_name: str = "bodypart-router-backfill",
    ) -> None:
        self._orthanc, self._checkpoint, self._process = orthanc, checkpoint, process
        self._live_depth, self._clock = live_queue_depth, clock
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._thread: OneShotThread | None = None
        self._stop = threading.Event()
        self._meter = RateMeter(clock=clock)
        self._yielded = 0.0

    # ---- control -----------------------------------------------------------------------
    def start(self, scope: Scope) -> dict[str, Any]:
        """Start a new backfill, replacing a finished one. Raises :class:`BackfillBusy`."""
        with self._lock:
            if self.running:
                raise BackfillBusy("a backfill is already running; cancel it first (DELETE /bodypart-router/backfill)")
            self._checkpoint.new_job(
                {"State": PLANNING, "Scope": scope.as_dict(), "Description": scope.describe(),
                 "StartedAt": _iso_now(), "FinishedAt": None, "Planned": False, "Error": None}
            )
            self._launch()
        LOGGER.info(f"backfill started: {scope.describe()}, route={scope.route}")
        return self.progress() or {}

    def resume(self) -> bool:
        """Continue a backfill the last Orthanc run left unfinished; ``True`` if one was resumed."""
        job = self._checkpoint.job()
        with self._lock:
            if not job or job.get("State") not in ACTIVE_STATES or self.running:
                return False
            self._launch()
        done, total = self._checkpoint.counts()
        LOGGER.info(f"backfill resumed at {done}/{total}: {job.get('Description')}")
        return True

    def cancel(self) -> bool:
        """Stop the running backfill for good; ``True`` if one was running."""
        with self._lock:
            job = self._checkpoint.job()
            if not job or job.get("State") not in ACTIVE_STATES:
                return False
            self._stop.set()  # the thread ends after the instance in hand; no need to wait for it
            self._checkpoint.update_job(State=CANCELLED, FinishedAt=_iso_now())
        LOGGER.info("backfill cancelled")
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Halt the thread (Orthanc is stopping) but keep the checkpoint, so it resumes later."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.running

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread ends; ``True`` if it did (for tests and the CLI)."""
        if self._thread:
            self._thread.join(timeout)
        return not self.running

    def _launch(self) -> None:
        self._meter = RateMeter(clock=self._clock)
        self._yielded = 0.0
        self._thread = OneShotThread(self._thread_name, lambda thread: self._run())
        self._stop = self._thread.stop_event  # set by cancel() and stop(), read between instances
        self._thread.start()

    # ---- status ------------------------------------------------------------------------
    def progress(self) -> dict[str, Any] | None:
        """``None`` if no backfill ever ran here, else its progress (the status page's ``Backfill``)::

            {"State": "planning|running|done|cancelled|failed", "Description": "...",
             "Scope": {"Since", "Studies", "Route", "RatePerSecond"}, "Planned": bool,
             "Done": 120, "Total": 400, "Rate": 18.5, "EtaSeconds": 15.1,
             "Outcomes": {"classified": 100, "skipped": 20}, "YieldedSeconds": 1.2,
             "StartedAt": "...Z", "FinishedAt": "...Z" | null, "Error": null | "..."}

        ``Rate`` (instances per second over the last minute) and ``EtaSeconds`` are ``null``
        until measurable; ``Total`` grows while the run is being planned.
        """
        job = self._checkpoint.job()
        if job is None:
            return None
        done, total = self._checkpoint.counts()
        active = job.get("State") in ACTIVE_STATES and self.running
        rate = self._meter.rate() if active else None
        eta = (total - done) / rate if rate and job.get("Planned") else None
        return {
            **job,
            "Done": done,
            "Total": total,
            "Rate": None if rate is None else round(rate, 3),
            "EtaSeconds": None if eta is None else round(eta, 1),
            "Outcomes": self._checkpoint.outcomes(),
            "YieldedSeconds": round(self._yielded, 1),
        }

    # ---- work --------------------------------------------------------------------------
    def _run(self) -> None:
        job = self._checkpoint.job() or {}
        scope = Scope.from_dict(job.get("Scope") or {})
        try:
            if not job.get("Planned"):
                for page in plan(self._orthanc, scope):
                    if self._stop.is_set():
                        return
                    self._checkpoint.add(page)
                if not self._update_unless_stopped(State=RUNNING, Planned=True):
                    return
            self._work(scope)
        except BackfillError as exc:
            self._fail(str(exc))
        except Exception as exc:  # never let the thread die silently: the status page says why
            self._fail(f"{type(exc).__name__}: {exc}", traceback=True)

    def _update_unless_stopped(self, **changes: Any) -> bool:
        """Record a state change, unless a cancel or stop came first (it has the last word)."""
        with self._lock:
            if self._stop.is_set():
                return False
            self._checkpoint.update_job(**changes)
            return True

    def _fail(self, message: str, traceback: bool = False) -> None:
        """Record the failure; ``traceback``: an unexpected exception is being handled, log it whole."""
        if self._update_unless_stopped(State=FAILED, Error=message, FinishedAt=_iso_now()):
            if traceback:
                LOGGER.exception(f"backfill failed: {message}")
            else:
                LOGGER.info(f"backfill failed: {message}")

    def _work(self, scope: Scope) -> None:
        bucket = TokenBucket(scope.rate_per_second, clock=self._clock)
        # Counted here, not re-read: counts() scans every planned row, once per instance it
        # would make a large backfill quadratic. Only this thread marks items done.
        done = self._checkpoint.counts()[0]
        self._meter.add(done)
        while not self._stop.is_set():
            batch = self._checkpoint.pending(64)
            if not batch:
                done, total = self._checkpoint.counts()
                if self._update_unless_stopped(State=DONE, FinishedAt=_iso_now()):
                    LOGGER.info(f"backfill done: {done}/{total} instances")
                return
            for instance in batch:
                if not self._wait_turn(bucket):
                    return
                try:
                    outcome = self._process(instance, scope.route)
                except Exception as exc:
                    outcome = InstanceState.FAILED_BACKFILL_ERROR
                    LOGGER.exception(f"backfill: instance {instance}: {type(exc).__name__}: {exc}")
                self._checkpoint.mark_done(instance, str(outcome))
                done += 1
                self._meter.add(done)

    def _wait_turn(self, bucket: TokenBucket) -> bool:
        """Wait until live ingest is idle and the rate allows; ``False`` if asked to stop."""
        while not self._stop.is_set():
            if self._live_depth() > 0:
                started = self._clock()
                self._stop.wait(YIELD_POLL_SECONDS)
                self._yielded += self._clock() - started
                continue
            delay = bucket.wait_time()
            if delay <= 0:
                return True
            self._stop.wait(delay)
        return False
