"""Forwarding: submit each delivery as an Orthanc job, track it to its outcome, retry, dead-letter.

Orthanc does the actual sending (``POST /modalities/{m}/store``, ``/peers/{p}/store`` or
``/dicom-web/servers/{s}/stow`` with ``"Asynchronous"``), so C-STORE, HTTP and STOW details,
TLS and credentials all stay in Orthanc's configuration. Orthanc never retries a failed job
and forgets old jobs (``JobsHistorySize``), so the retry state lives in the
:class:`~bodypart_router.forwarding.store.Store`, not in the job registry:

* a failed job goes back to ``pending`` after the :class:`~bodypart_router.retry.Retry`
  policy's backoff, and is dead-lettered once its attempts are spent
  (:mod:`~bodypart_router.forwarding.transitions` decides, the store records);
* a per-destination :class:`~bodypart_router.forwarding.circuit.CircuitBreaker` stops
  submitting to a destination that keeps failing, one probe at a time;
* a forward whose outcome is unknown (Orthanc stopped or crashed while it was in flight, or
  forgot its job) is not sent again blindly: with a :class:`Lookup` (``VerifyBeforeResend``)
  the destination is first asked whether it already holds the instance, so a crash does not
  deliver anything twice (:mod:`bodypart_router.orthanc_api.destinations`).

This module never imports ``orthanc``: it asks Orthanc through the typed
:class:`~bodypart_router.orthanc_api.Orthanc` interface (in process in the plugin, a
``FakeOrthanc`` in the unit tests).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Destination, RouterConfig
from ..retry import Retry
from ..states import CircuitState, DeliveryState, InstanceState
from .circuit import CircuitBreaker
from .events import (CircuitChanged, DeadLettered, DeliveryFailed, DeliveryForwarded, DeliverySubmitted, Dispatcher,
                     InstanceStateChanged)
from ..orthanc_api import CannotAsk, Orthanc, OrthancError
from ..orthanc_api.interface import NOT_STARTED_JOB_STATES, Job
from .store import Store
from .store_schema import Delivery
from .transitions import after_failure, after_lost_attempt, after_unanswered

LOGGER = logging.getLogger(__name__)

#: Submitted-but-unfinished jobs allowed per destination, so a backlog does not flood Orthanc's job engine.
MAX_IN_FLIGHT_PER_DESTINATION = 8
#: Dead letters are logged as one summary line per this many seconds (an outage would flood the log).
DEAD_LETTER_LOG_SECONDS = 60.0
#: Seconds between cancelling a job Orthanc reloaded at start-up (``SaveJobs``) and asking the
#: destination whether it arrived: a cancelled job may still be finishing its transfer.
RELOADED_JOB_GRACE_SECONDS = 10.0


class Lookup(Protocol):
    """Asks a destination whether it already holds an instance (see :mod:`bodypart_router.orthanc_api.destinations`)."""

    def holds(self, destination: Destination, instance_id: str) -> bool:
        """True or False, or raises :class:`Unreachable` / :class:`CannotAsk` (or another :class:`OrthancError`)."""
        ...




@dataclass
class Forwarder:
    """One pass of :meth:`step` submits what is due and checks every submitted job.

    Called in a loop by the adapter's forwarding thread; all state lives in the store,
    so a fresh Forwarder after a restart carries on where the last one stopped. Each
    transition is published on ``events`` (:mod:`bodypart_router.forwarding.events`): Orthanc's metadata
    and labels and the metrics follow them there.
    """

    store: Store
    orthanc: Orthanc
    config: RouterConfig
    events: Dispatcher = field(default_factory=Dispatcher)
    clock: Callable[[], float] = time.time
    #: Asks destinations before a forward of unknown outcome is resent; None resends blindly.
    lookup: Lookup | None = None

    def __post_init__(self) -> None:
        #: The one retry policy (``Retry``): backoff, attempts, what is worth trying again.
        self.retry: Retry = self.config.retry
        self.breaker = CircuitBreaker(self.config.breaker_threshold, self.retry, self._circuit_changed)
        self._submitted_at: dict[int, float] = {}
        self._verify_failures: dict[int, int] = {}
        self._cannot_ask_logged: set[str] = set()
        self._dead_window: Counter[str] = Counter()  # dead letters per destination not logged yet
        self._dead_errors: dict[str, str] = {}
        self._dead_window_start = 0.0
        #: destination -> (down since, back at) of its last outage, for the status page.
        self.recoveries: dict[str, tuple[float | None, float]] = {}
        self._down_since: dict[str, float | None] = {}

    def _circuit_changed(self, destination: str, state: CircuitState, detail: str) -> None:
        # Both at warning level: Orthanc's default log level shows warnings, not info.
        if state is CircuitState.OPEN:
            LOGGER.warning(f"destination {destination} is down, pausing forwards to it ({detail})")
        else:
            self.recoveries[destination] = (self._down_since.get(destination), self.clock())
            LOGGER.warning(f"destination {destination} is reachable again, resuming forwards")
        self._down_since[destination] = self.clock() if state is CircuitState.OPEN else None
        self.events.publish(CircuitChanged(destination, state, detail))

    def step(self, limit: int = 64) -> int:
        """Check submitted jobs, verify forwards of unknown outcome, submit due deliveries, probe
        destinations that are down with nothing to send. Returns how many things changed."""
        changed = self._poll_submitted() + self._verify_due(limit) + self._submit_due(limit) + self._probe_idle()
        self._log_dead_letters()
        return changed

    # -- a destination that is down and has nothing due ------------------------------------
    def _probe_idle(self) -> int:
        """Ask a destination that is down whether it answers again, when no forward to it is due
        (all of them dead-lettered, or waiting out their backoff): otherwise its circuit would
        stay open after it recovered, until someone resubmits. A C-STORE destination gets a
        C-ECHO, an Orthanc peer ``GET /peers/{name}/system``; a DICOMweb server is probed by its
        next forward only."""
        now = self.clock()
        changed = 0
        for key in self.breaker.idle_probes_due(now):
            if self.store.waiting_count(key, now):
                continue  # a due forward is the probe
            try:
                if not self.orthanc.probe(Destination.from_key(key)):
                    continue  # a kind that cannot be probed without sending (DICOMweb)
            except OrthancError as exc:
                self.breaker.failure(key, self.clock(), f"probe: {exc}")
                continue
            self.breaker.success(key)
            changed += 1
        return changed

    def _log_dead_letters(self, *, flush: bool = False) -> None:
        """One ERROR line per minute with the dead letters of that minute, instead of one per forward."""
        if not self._dead_window or (not flush and self.clock() - self._dead_window_start < DEAD_LETTER_LOG_SECONDS):
            return
        total = sum(self._dead_window.values())
        per = ", ".join(f"{dest} {n}" for dest, n in sorted(self._dead_window.items()))
        last = "; ".join(f"{dest}: {err}" for dest, err in sorted(self._dead_errors.items()))
        LOGGER.error(f"{total} forward(s) dead-lettered after {self.retry.max_attempts} attempts "
                     f"in the last {DEAD_LETTER_LOG_SECONDS / 60:g} min ({per}); last error {last}; "
                     "resubmit them from /bodypart-router/status.html")
        self._dead_window.clear()
        self._dead_errors.clear()

    def recover(self) -> int:
        """At start-up, before the first :meth:`step`: forwards the previous run left in flight.

        Their outcome is unknown, so they are verified before anything is resent. A job that
        Orthanc reloaded (``SaveJobs`` is true) and has not finished is cancelled first: left
        alone, it would send again behind the router's back. A reloaded job that had already
        finished is recorded by the next :meth:`step`. Returns how many forwards are in doubt.
        """
        in_doubt = 0
        for d in self.store.submitted():
            delay = 0.0
            if d.job_id:
                try:
                    job: Job | None = self.orthanc.job(d.job_id)
                except OrthancError:
                    job = None  # not reloaded (SaveJobs false): the usual case
                if job is not None:
                    if job.outcome != "running":
                        continue
                    try:
                        self.orthanc.cancel_job(d.job_id)
                    except OrthancError:
                        pass
                    delay = RELOADED_JOB_GRACE_SECONDS
            self._unknown(d, "in flight when Orthanc stopped", delay)
            in_doubt += 1
        if in_doubt:
            LOGGER.info(f"{in_doubt} forward(s) were in flight when Orthanc stopped; "
                        + ("asking their destinations before sending again" if self.lookup
                           else "sending them again (VerifyBeforeResend is false)"))
        return in_doubt

    def drain(self, deadline: float, sleep: Callable[[float], None] = time.sleep) -> int:
        """At shutdown, after the forwarding loop stopped: leave nothing whose outcome we would not see.

        Jobs that have not started are cancelled and their deliveries go back to pending
        (resubmitted at the next start, attempt not counted). Running ones are watched
        until they finish or ``deadline`` (``clock()`` time) passes, so a forward that
        completes during shutdown is recorded and never sent twice. Returns how many
        deliveries are still submitted at the deadline.
        """
        for d in self.store.submitted():
            if not d.job_id:
                continue  # left by a crash: verified at the next start
            try:
                if self.orthanc.job(d.job_id).state in NOT_STARTED_JOB_STATES:
                    self.orthanc.cancel_job(d.job_id)
                    self.store.unsubmit(d.id, "job cancelled at shutdown, to be sent again")
            except OrthancError:
                continue  # left submitted: resolved at the next start
        while self.store.submitted() and self.clock() < deadline:
            self._poll_submitted()
            sleep(0.1)
        self._log_dead_letters(flush=True)
        return len(self.store.submitted())

    # -- submission -----------------------------------------------------------------------
    def _batch_size(self, destination: str) -> int:
        """Deliveries one job may carry. A failed job of several instances may have sent some of
        them, so batches need a destination that can be asked afterwards (``VerifyBeforeResend``);
        a destination being probed gets one instance at a time."""
        if self.lookup is None or self.breaker.is_open(destination):
            return 1
        return self.config.forward_batch_size

    def _submit_due(self, limit: int) -> int:
        now = self.clock()
        in_flight: dict[str, int] = {}  # jobs, not instances
        for _, destination in {(d.job_id, d.destination) for d in self.store.submitted()}:
            in_flight[destination] = in_flight.get(destination, 0) + 1
        busy = {dest for dest, n in in_flight.items() if n >= MAX_IN_FLIGHT_PER_DESTINATION}
        by_destination: dict[str, list[Delivery]] = {}
        for d in self.store.due_deliveries(now, limit, skip_destinations=self.breaker.blocked(now) | busy):
            by_destination.setdefault(d.destination, []).append(d)
        changed = 0
        for destination, due in by_destination.items():
            while due:
                if destination in self.breaker.blocked(now):
                    break  # opened by an earlier submission in this same pass
                if in_flight.get(destination, 0) >= MAX_IN_FLIGHT_PER_DESTINATION:
                    break
                size = self._batch_size(destination)
                batch = [due.pop(0)]
                # a delivery sent before goes alone, so that one bad instance does not fail the others again
                while not batch[0].attempts and due and len(batch) < size and not due[0].attempts:
                    batch.append(due.pop(0))
                probe = self.breaker.start_probe(destination)
                try:
                    changed += self._submit(destination, batch)
                except Exception:
                    # A failure of our own (the state database: disk full...) says nothing about the
                    # destination; a probe left marked in flight would block it until a restart.
                    if probe:
                        self.breaker.end_probe(destination)
                    raise
                in_flight[destination] = in_flight.get(destination, 0) + 1
        return changed

    def _submit(self, destination: str, batch: list[Delivery]) -> int:
        """One job for ``batch`` (deliveries to one destination). Returns how many changed."""
        # Recorded before Orthanc is asked: a crash from here on leaves an outcome to verify.
        for d in batch:
            self.store.mark_submitting(d.id)
        try:
            job_id = self.orthanc.forward(Destination.from_key(destination), [d.instance_id for d in batch])
        except (OrthancError, KeyError, TypeError, ValueError) as exc:
            if not isinstance(exc, OrthancError):  # Orthanc answered, but not with a job
                LOGGER.exception(f"{destination}: unexpected answer to a forward")
            for d in batch:
                self.store.unsubmit(d.id, f"submission refused: {exc}")  # nothing was sent
            if isinstance(exc, OrthancError) and not Retry.is_retryable(exc):
                gone = [d for d in batch if self._instance_gone(d.instance_id)]
                for d in gone:
                    self.store.forget(d.instance_id)
                if gone:
                    return len(gone)  # the others are submitted again at the next pass, uncounted
            for d in batch:
                self._failed(d, f"submission refused: {exc}", counted=False)
            return len(batch)
        for d in batch:
            self.store.set_job(d.id, job_id)
            self._submitted_at[d.id] = self.clock()
            self.events.publish(DeliverySubmitted(d))
        return len(batch)


    def _instance_gone(self, instance_id: str) -> bool:
        try:
            return not self.orthanc.exists(instance_id)
        except OrthancError:
            return False

    # -- tracking -------------------------------------------------------------------------
    def _poll_submitted(self) -> int:
        submitted = self.store.submitted()
        if not submitted:
            return 0
        changed = 0
        jobs: dict[str, Job | OrthancError] = {}  # one question per job, whatever it carries
        batch_sizes: dict[str, int] = {}
        for d in submitted:
            if d.job_id:
                batch_sizes[d.job_id] = batch_sizes.get(d.job_id, 0) + 1
        failed_jobs: set[str] = set()
        for d in submitted:
            if not d.job_id:  # submissions happen on this thread: this one was cut short by a crash
                self._unknown(d, "Orthanc stopped before it answered the forward request")
                changed += 1
                continue
            if d.job_id not in jobs:
                try:
                    jobs[d.job_id] = self.orthanc.job(d.job_id)
                except OrthancError as exc:
                    jobs[d.job_id] = exc
            job = jobs[d.job_id]
            if isinstance(job, OrthancError):
                if not Retry.is_retryable(job):
                    # The job left Orthanc's history (restart, or JobsHistorySize too small).
                    self._unknown(d, f"job {d.job_id} is no longer known to Orthanc")
                    changed += 1
                continue
            outcome, detail = job.outcome, job.error or job.state
            if outcome == "running":
                continue
            if outcome == "failure" and batch_sizes[d.job_id] > 1:
                # Some of the job's instances may have arrived before it failed: ask, do not resend blindly.
                if d.job_id not in failed_jobs:
                    failed_jobs.add(d.job_id)
                    self.breaker.failure(d.destination, self.clock(), detail)
                    self.events.publish(DeliveryFailed(d, detail))
                self._unknown(d, f"a forward of {batch_sizes[d.job_id]} instances failed: {detail}",
                              self.retry.delay(1))
                changed += 1
                continue
            if outcome == "success":
                self.breaker.success(d.destination)
                state = self.store.mark_delivered(d.id)
                started = self._submitted_at.pop(d.id, None)
                self.events.publish(DeliveryForwarded(d, self.clock() - started if started else 0.0))
                self._moved(d.instance_id, state)
            else:
                self._failed(d, detail, counted=True)
            changed += 1
        return changed

    # -- outcome unknown: verify before resend ----------------------------------------------
    def _unknown(self, d: Delivery, note: str, delay: float = 0.0) -> None:
        """The forward may or may not have arrived: verify it, or resend if there is no lookup."""
        self._submitted_at.pop(d.id, None)
        if self.lookup is None:
            self._resend(d, f"{note}; sent again without asking the destination")
            return
        self.store.mark_unknown(d.id, note, self.clock() + delay)

    def _verify_due(self, limit: int) -> int:
        """Ask destinations whether they hold the instances whose forward outcome is unknown."""
        now = self.clock()
        changed = 0
        for d in self.store.to_verify(now, limit, skip_destinations=self.breaker.blocked(now)):
            if d.destination in self.breaker.blocked(now):
                continue  # found down by an earlier question in this same pass
            destination = Destination.from_key(d.destination)
            if self.lookup is None:  # VerifyBeforeResend was turned off since the crash
                self._resend(d, f"{d.last_error}; sent again without asking the destination")
                changed += 1
                continue
            try:
                holds = self.lookup.holds(destination, d.instance_id)
            except CannotAsk as exc:
                if d.destination not in self._cannot_ask_logged:
                    self._cannot_ask_logged.add(d.destination)
                    LOGGER.warning(f"cannot ask {d.destination} whether a forward interrupted by a "
                                   f"stop arrived, so it is sent again and may arrive twice ({exc})")
                self._resend(d, f"{d.last_error}; destination cannot be asked, sent again")
                changed += 1
                continue
            except OrthancError as exc:  # Unreachable, or Orthanc itself did not answer
                if not Retry.is_retryable(exc) and self._instance_gone(d.instance_id):
                    self.store.forget(d.instance_id)
                    continue
                failures = self._verify_failures.get(d.id, 0) + 1
                self._verify_failures[d.id] = failures
                self.breaker.failure(d.destination, now, str(exc))
                then = after_unanswered(self.retry, failures, now)
                if then.state is DeliveryState.PENDING:  # never answers: send rather than hold forever
                    self._verify_failures.pop(d.id, None)
                    LOGGER.warning(f"instance {d.instance_id}: {d.destination} did not answer "
                                   f"{failures} questions about a forward interrupted by a stop; "
                                   "sending it again, it may arrive twice")
                    self._resend(d, f"{d.last_error}; destination did not answer, sent again")
                    changed += 1
                    continue
                self.store.mark_unknown(d.id, d.last_error or "outcome unknown", then.due_at)  # type: ignore[arg-type]
                continue
            self._verify_failures.pop(d.id, None)
            self.breaker.success(d.destination)
            if holds:
                state = self.store.mark_delivered(d.id)
                LOGGER.info(f"instance {d.instance_id}: {d.destination} already holds it "
                            f"({d.last_error}); not sent again")
                self.events.publish(DeliveryForwarded(d, 0.0))
                self._moved(d.instance_id, state)
            else:
                LOGGER.info(f"instance {d.instance_id}: {d.destination} does not hold it "
                            f"({d.last_error}); sending again")
                self._resend(d, f"{d.last_error}; not at the destination, sent again")
            changed += 1
        return changed

    def _moved(self, instance_id: str, state: InstanceState | None) -> None:
        """A delivery finished: publish where it left its instance (None: the delivery is gone)."""
        if state is not None:
            self.events.publish(InstanceStateChanged(instance_id, state,
                                                     tuple(self.store.delivered_destinations(instance_id))))

    def _resend(self, d: Delivery, note: str) -> None:
        """Back to pending at once (the lost attempt was counted at submission), unless attempts are spent."""
        then = after_lost_attempt(self.retry, d.attempts, self.clock())
        if then.state is DeliveryState.DEAD:
            self._failed(d, note, counted=True)
            return
        assert then.due_at is not None
        self.store.mark_retry(d.id, note, then.due_at, count_attempt=False)

    def _failed(self, d: Delivery, error: str, *, counted: bool) -> None:
        """A submission or a job failed: retry with backoff, or dead-letter after MaxAttempts."""
        now = self.clock()
        attempts = d.attempts + (0 if counted else 1)
        self.breaker.failure(d.destination, now, error)
        self._submitted_at.pop(d.id, None)
        self.events.publish(DeliveryFailed(d, error))
        then = after_failure(self.retry, attempts, now)
        if then.state is DeliveryState.DEAD:
            state = self.store.mark_dead(d.id, error)
            LOGGER.info(f"instance {d.instance_id}: forward to {d.destination} dead-lettered "
                        f"after {attempts} attempts ({error})")
            if not self._dead_window:
                self._dead_window_start = now
            self._dead_window[d.destination] += 1
            self._dead_errors[d.destination] = error
            self.events.publish(DeadLettered(d, error))
            self._moved(d.instance_id, state)
            return
        assert then.due_at is not None
        self.store.mark_retry(d.id, error, then.due_at, count_attempt=not counted)
        delay = then.due_at - now
        if not self.breaker.is_open(d.destination):
            LOGGER.info(f"instance {d.instance_id}: forward to {d.destination} failed "
                        f"(attempt {attempts}), retrying in {delay:.1f} s: {error}")
