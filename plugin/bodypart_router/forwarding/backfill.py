"""Backfill: classify (and optionally route) what Orthanc already stored before the router.

A site adopting the router has an archive. ``POST /bodypart-router/backfill`` takes one of

* ``{}`` - every instance;
* ``{"Since": "2024-01-01"}`` - instances of studies whose Study Date (0008,0020) is that
  day or later;
* ``{"Studies": ["<orthanc study id or StudyInstanceUID>", ...]}``;

plus ``"Route": true`` to forward as well as label (default: label only) and
``"RatePerSecond"`` (default :data:`DEFAULT_RATE`).

Why Study Date and ``/tools/find`` rather than Orthanc's changes log: a user asking for
"since January" means the clinical date of the images, and Study Date is a main DICOM tag
that Orthanc indexes in its database, so the query reads no files and behaves the same on
Orthanc 1.10 and 1.12. The changes log records when Orthanc *received* an instance, which
for a migrated or re-imported archive says nothing about the images, and Orthanc prunes it
when resources are deleted. Studies without a Study Date are only reached by "everything".

The run is planned first (instance IDs written to a checkpoint, page by page), then worked
through in order. The checkpoint is a SQLite file in the router's state directory
(:data:`CHECKPOINT_NAME`): each instance is marked done as soon as it is processed, so
after a restart the adapter calls :meth:`BackfillRunner.resume` and the run continues
where it stopped (an instance caught mid-way is processed again, which the router's
idempotence makes harmless).

Live ingest keeps priority: the runner only takes the next instance when the live queue
is empty, and never faster than a token bucket allows. Everything Orthanc-specific goes
through the injected :class:`~bodypart_router.orthanc_api.Orthanc` and ``process`` callable,
so this module is tested without Orthanc.
"""

from __future__ import annotations

import logging
import datetime as _dt
import json
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import BodyPartRouterError
from ..orthanc_api import Orthanc
from ..service_thread import OneShotThread

LOGGER = logging.getLogger(__name__)

from ..states import InstanceState

#: File name of the checkpoint inside the router's state directory.
CHECKPOINT_NAME = "backfill.sqlite3"
#: Instances per second when the request does not say.
DEFAULT_RATE = 20.0
#: Page size for listing instances and studies through the REST API.
PAGE_SIZE = 500
#: How often the runner looks at the live queue again while it yields to it.
YIELD_POLL_SECONDS = 0.2
#: Rate and ETA are measured over this recent window.
RATE_WINDOW_SECONDS = 60.0

PLANNING, RUNNING, DONE, CANCELLED, FAILED = "planning", "running", "done", "cancelled", "failed"
ACTIVE_STATES = (PLANNING, RUNNING)


#: ``process(instance_id, route)`` classifies one instance (and forwards it when ``route``)
#: and returns its resulting state, e.g. ``classified``, ``forwarded``, ``skipped:<reason>``.
Process = Callable[[str, bool], str]


class BackfillError(BodyPartRouterError, ValueError):
    """A request that cannot start a backfill; the message names the field and what to fix."""


class BackfillBusy(BodyPartRouterError, RuntimeError):
    """A backfill is already running (HTTP 409)."""


# --------------------------------------------------------------------------------------
# Scope: what to backfill
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a backfill covers. ``since`` and ``studies`` are mutually exclusive; neither = all."""

    since: _dt.date | None = None
    studies: tuple[str, ...] = ()
    route: bool = False
    rate_per_second: float = DEFAULT_RATE

    @classmethod
    def from_request(cls, body: Any) -> "Scope":
        """Validate the POST body (``{}`` means everything, label only; ``null`` is refused, so
        that nothing but an explicit request starts a backfill of the whole archive)."""
        if not isinstance(body, Mapping):
            raise BackfillError("the request body must be a JSON object, e.g. {\"Since\": \"2024-01-01\", \"Route\": false}")
        unknown = sorted(set(body) - {"Since", "Studies", "Route", "RatePerSecond"})
        if unknown:
            raise BackfillError(f"unknown field(s) {', '.join(unknown)}; use Since, Studies, Route, RatePerSecond")
        since = None
        if "Since" in body:
            if not isinstance(body["Since"], str):
                raise BackfillError(f"Since: expected a date as a string, YYYY-MM-DD, got {body['Since']!r}")
            since = _parse_since(body["Since"])
        studies: tuple[str, ...] = ()
        if "Studies" in body:
            raw = body["Studies"]
            if not isinstance(raw, list) or not raw or not all(isinstance(s, str) and s.strip() for s in raw):
                raise BackfillError("Studies: expected a non-empty list of Orthanc study IDs or StudyInstanceUIDs")
            studies = tuple(dict.fromkeys(s.strip() for s in raw))
        if since and studies:
            raise BackfillError("give either Since or Studies, not both")
        route = body.get("Route", False)
        if not isinstance(route, bool):
            raise BackfillError(f"Route: expected true or false, got {route!r}")
        rate = body.get("RatePerSecond", DEFAULT_RATE)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.01 <= rate <= 10_000:
            raise BackfillError(f"RatePerSecond: expected a number between 0.01 and 10000, got {rate!r}")
        return cls(since=since, studies=studies, route=route, rate_per_second=float(rate))

    def as_dict(self) -> dict[str, Any]:
        return {
            "Since": self.since.isoformat() if self.since else None,
            "Studies": list(self.studies),
            "Route": self.route,
            "RatePerSecond": self.rate_per_second,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scope":
        since = data.get("Since")
        return cls(
            since=_dt.date.fromisoformat(since) if since else None,
            studies=tuple(data.get("Studies") or ()),
            route=bool(data.get("Route", False)),
            rate_per_second=float(data.get("RatePerSecond", DEFAULT_RATE)),
        )

    def describe(self) -> str:
        if self.since:
            return f"studies dated {self.since.isoformat()} or later"
        if self.studies:
            return f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'}"
        return "every stored instance"


def _parse_since(value: Any) -> _dt.date:
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return _dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise BackfillError(f"Since: expected a date as YYYY-MM-DD or YYYYMMDD, got {value!r}")


# --------------------------------------------------------------------------------------
# Planning: which instances
# --------------------------------------------------------------------------------------


def _resolve_study(orthanc: Orthanc, ref: str) -> str:
    """An Orthanc study ID as is; a StudyInstanceUID (it has dots) through ``/tools/lookup``."""
    if "." not in ref:
        return ref
    matches = [m for m in orthanc.lookup(ref) if m.get("Type") == "Study"]
    if not matches:
        raise BackfillError(f"Studies: no study with StudyInstanceUID {ref} is stored")
    return str(matches[0]["ID"])


def plan(orthanc: Orthanc, scope: Scope, page_size: int = PAGE_SIZE) -> Iterator[list[str]]:
    """Yield the scope's instance IDs, one page (list) at a time."""
    if scope.studies:
        for ref in scope.studies:
            yield orthanc.study_instances(_resolve_study(orthanc, ref))
        return
    if scope.since:
        query = {"Level": "Study", "Query": {"StudyDate": scope.since.strftime("%Y%m%d") + "-"}, "Expand": False}
        offset = 0
        while True:
            studies = orthanc.find({**query, "Since": offset, "Limit": page_size})
            for study in studies:
                yield orthanc.study_instances(str(study))
            if len(studies) < page_size:
                return
            offset += page_size
    offset = 0
    while True:
        ids = orthanc.instances(offset, page_size)
        if ids:
            yield ids
        if len(ids) < page_size:
            return
        offset += page_size


# --------------------------------------------------------------------------------------
# Checkpoint: survives restarts
# --------------------------------------------------------------------------------------

#: Outcomes of a planned instance that are not its state: the router had handled it already,
#: or it was deleted before its turn.
KNOWN, DELETED = "known", "deleted"


def outcome_kind(outcome: str) -> str:
    """How a done instance is counted: the kind of its state (``skipped``, ``failed``, ``held``),
    its state (``classified``, ``forwarded``...), or ``known`` / ``deleted``."""
    state = InstanceState.read(outcome)
    if state is not None:
        return str(state.kind or state)
    return KNOWN if outcome.startswith(f"{KNOWN}:") else outcome  # "known:<state>": earlier checkpoints


class Checkpoint:
    """The current (or last) backfill, persisted in SQLite. Thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS job (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY AUTOINCREMENT, instance TEXT UNIQUE NOT NULL,"
            " done INTEGER NOT NULL DEFAULT 0, outcome TEXT)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def job(self) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM job WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def new_job(self, job: Mapping[str, Any]) -> None:
        """Replace the previous backfill (its items too)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM items")
            self._db.execute("INSERT OR REPLACE INTO job (id, data) VALUES (1, ?)", (json.dumps(dict(job)),))
            self._db.execute("COMMIT")

    def update_job(self, **changes: Any) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT data FROM job WHERE id = 1").fetchone()
            data = {**(json.loads(row[0]) if row else {}), **changes}
            self._db.execute("INSERT OR REPLACE INTO job (id, data) VALUES (1, ?)", (json.dumps(data),))
        return data

    def add(self, instances: list[str]) -> None:
        """Add planned instances; ones already planned (and maybe done) are kept as they are."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO items (instance) VALUES (?)", [(i,) for i in instances])
            self._db.execute("COMMIT")

    def pending(self, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT instance FROM items WHERE done = 0 ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    def mark_done(self, instance: str, outcome: str) -> None:
        with self._lock:
            self._db.execute("UPDATE items SET done = 1, outcome = ? WHERE instance = ?", (outcome, instance))

    def counts(self) -> tuple[int, int]:
        """``(done, total)``."""
        with self._lock:
            done, total = self._db.execute("SELECT COALESCE(SUM(done), 0), COUNT(*) FROM items").fetchone()
        return int(done), int(total)

    def outcomes(self) -> dict[str, int]:
        """Done instances per outcome kind: ``classified``, ``skipped``, ``failed`` ... (reason dropped)."""
        with self._lock:
            rows = self._db.execute("SELECT outcome, COUNT(*) FROM items WHERE done = 1 GROUP BY outcome").fetchall()
        out: dict[str, int] = {}
        for outcome, n in rows:
            kind = outcome_kind(str(outcome))
            out[kind] = out.get(kind, 0) + int(n)
        return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------
# Throttling and progress
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------


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
