"""What the router did, counted once and shown twice: Prometheus metrics and the status JSON.

Prometheus goes through Orthanc's own ``/tools/metrics-prometheus`` so that a site scrapes
one endpoint. The Python plugin offers ``orthanc.SetMetricsValue(name, value, type)`` (values
are 32-bit floats, exact for integers up to 16,777,216). Orthanc writes the name verbatim
into its exposition, so a name may carry Prometheus labels (``bodypart_router_forwards_total
{destination="ai-chest"}``; checked on Orthanc 1.10.1 and 1.12.7). Two facts shape this module:

* Orthanc stamps each metric with the time it was last *set*, and Prometheus drops a series
  whose newest sample is older than its lookback window (5 minutes by default). The adapter
  therefore pushes **every** value with :meth:`RouterMetrics.publish` from a
  :class:`MetricsPublisher` thread every few seconds, changed or not.
* Orthanc cannot forget a metric, so label sets are bounded (classes, configured
  destinations, reasons, at most 256 sending stations).

Metrics (all ``bodypart_router_`` + ...; ``_total`` counters count since Orthanc started):

===================================================  ===============================================
``enabled``                                          1 when the router runs, 0 when it is disabled
``classified_total{class}``                          instances classified, per class (and ``uncertain``)
``skipped_total{reason}``, ``failed_total{reason}``  instances not classified, per reason
``queue_depth``                                      instances waiting for a worker
``forwards_pending{destination}``                    forwards not yet arrived (waiting, in flight, retrying)
``decode_seconds``, ``inference_seconds``,           histograms (``_bucket{le}`` cumulative with
``ingest_yield_seconds``                             ``+Inf``, ``_sum``, ``_count``) per instance / batch
``forwards_total{destination}``                      instances delivered to a destination
``forward_failures_total{destination}``              failed delivery attempts
``dead_lettered_total{destination}``                 deliveries given up after the last retry
``dead_letters{destination}``                        dead letters waiting for a person (from the state
                                                     database: survives restarts, drops on resubmit)
``circuit_state{destination}``                       0 closed, 2 open (destination down; 1 is not used)
``execution_provider{provider}``                     1 for the onnxruntime provider in use
``shadow_mode``                                      1 when the router forwards nothing
``would_forward_total{destination,class}``           shadow mode: forwards it would have made
``header_verdicts_total{station,verdict}``           header audit verdicts per sending station
``header_mismatch_ratio{station}``                   disagree / (agree + disagree) per station
``films_checked_total{station}``, ``films_turned_``   classified films per sending station, and those
``total``, ``films_inverted_total``,                 stored turned, with inverted polarity or lateral
``films_lateral_total{station}``                     (from the model's rotation, polarity, view outputs)
``classified_regions_total{region}``                 classified films per fine anatomical region
``backfill_done_instances``, ``backfill_planned_``   backfill progress; ``backfill_rate_instances_per_
``instances``, ``backfill_eta_seconds``              second``; ``backfill_running`` 1 while one runs
``uptime_seconds``                                   since the router started
``health``                                           0 ok, 1 degraded, 2 stopped, 3 disabled (``Health`` in the status)
===================================================  ===============================================

Status JSON: the ``Metrics`` section of ``GET /bodypart-router/status``, which the status
page reads (:meth:`RouterMetrics.snapshot`)::

    {
      "Version": "0.1.0",
      "Mode": "live" | "shadow",
      "StartedAt": "2026-11-23T07:30:00Z",
      "UptimeSeconds": 12.5,
      "Model": {"Name": "...", "Version": "name@sha256[:12]", "Sha256": "...",
                "ExecutionProvider": "CPUExecutionProvider"} | null,
      "QueueDepth": 0,
      "Counts": {"Classified": {"abdominal": 0, ..., "uncertain": 0},
                 "Skipped": {"non-projection-modality": 1}, "Failed": {"undecodable-pixels": 0}},
      "Timings": {"Decode": {"Count": 3, "MeanSeconds": 0.05, "SumSeconds": 0.15},
                  "Inference": {...}},
      "Destinations": {"ai-chest": {"Forwards": 3, "Failures": 0, "DeadLetters": 0,
                                    "Circuit": "closed" | "open"}},
      "Shadow": {"ai-chest": {"adult_chest": 3}},          # would-be forwards (shadow mode)
      "HeaderAudit": {"CR_ROOM_1": {"agree": 3, "disagree": 1, "no-header": 0,
                                    "mismatch_rate": 0.25}},
      "ImageQuality": {"CR_ROOM_1": {"Films": 4, "Turned": 1, "Inverted": 0, "Lateral": 2}},
      "Regions": {"chest": 3, "pelvis_hip": 1},
      "Recent": [{"Instance": "<orthanc id>", "Time": "...Z", "Class": "adult_chest",
                  "Score": 0.97, "State": "forwarded", "Destinations": ["ai-chest"],
                  "HeaderAudit": "agree:adult_chest", "Source": "live" | "backfill"}],
      "Failures": [{"Instance": "<orthanc id>", "Time": "...Z", "State": "failed:...",
                    "Detail": "...", "Destination": "ai-chest" | null}],
      "Backfill": {...} | null                               # bodypart_router.forwarding.backfill.Progress
    }

Newest first in ``Recent`` and ``Failures``. Instances are named by Orthanc ID only: no
patient identifier ever reaches this module.
"""

from __future__ import annotations

import datetime as _dt
import functools
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .. import __version__
from ..routing.audit import AGREE, DISAGREE, NO_HEADER, StationTally
from ..inference.classes import CLASS_NAMES, UNCERTAIN
from ..routing.image_facts import ImageFacts, QualityTally
from ..states import CircuitState, InstanceState, Kind
from ..service_thread import ServiceThread

PREFIX = "bodypart_router"

#: Upper bounds (seconds) of the cumulative time buckets.
TIME_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Values of ``circuit_state``: an open circuit stays 2, as dashboards and alerts (``>= 2``) expect.
CIRCUIT_STATES: dict[CircuitState, int] = {CircuitState.CLOSED: 0, CircuitState.OPEN: 2}

#: Setter the adapter passes to :meth:`RouterMetrics.publish`, e.g.
#: ``lambda name, value: orthanc.SetMetricsValue(name, value, orthanc.MetricsType.DEFAULT)``.
MetricSetter = Callable[[str, float], None]


def _label_value(value: str) -> str:
    """Escape a label value as the exposition format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@functools.lru_cache(maxsize=4096)  # the label sets are bounded (see above): every publish asks for the same names
def _series(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return f"{PREFIX}_{name}"
    inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
    return f"{PREFIX}_{name}{{{inner}}}"


def metric_name(name: str, **labels: str) -> str:
    """``metric_name("forwards_total", destination="ai-chest")`` ->
    ``bodypart_router_forwards_total{destination="ai-chest"}``: the series as Orthanc exposes it."""
    return _series(name, tuple(labels.items()))


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Timing:
    """Sum, count and cumulative buckets of a duration, per instance."""

    sum: float = 0.0
    count: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(TIME_BUCKETS))

    def observe(self, seconds: float, instances: int = 1) -> None:
        """Record ``seconds`` spent on ``instances`` instances (a batch counts each one)."""
        if instances <= 0:
            return
        per_instance = max(0.0, seconds) / instances
        self.sum += max(0.0, seconds)
        self.count += instances
        for i, bound in enumerate(TIME_BUCKETS):
            if per_instance <= bound:
                self.buckets[i] += instances

    def as_dict(self) -> dict[str, Any]:
        return {
            "Count": self.count,
            "SumSeconds": round(self.sum, 6),
            "MeanSeconds": round(self.sum / self.count, 6) if self.count else None,
        }


@dataclass
class DestinationStats:
    forwards: int = 0
    failures: int = 0
    dead_letters: int = 0
    circuit: CircuitState = CircuitState.CLOSED


class RouterMetrics:
    """The router's counters, gauges and recent history. Every method is thread-safe."""

    def __init__(self, *, recent_size: int = 50, failures_size: int = 100, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._classified: Counter[str] = Counter({c: 0 for c in (*CLASS_NAMES, UNCERTAIN)})
        self._not_classified: Counter[InstanceState] = Counter()  # skipped:<reason> / failed:<reason>
        #: decode and inference per instance; ingest_yield per batch held back for ingest.
        self._timings = {"decode": Timing(), "inference": Timing(), "ingest_yield": Timing()}
        self._destinations: dict[str, DestinationStats] = {}
        self._would_forward: dict[str, Counter[str]] = {}
        self.stations = StationTally()
        self.quality = QualityTally()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self._failures: deque[dict[str, Any]] = deque(maxlen=failures_size)
        self._shadow_mode = False
        self._model: dict[str, Any] | None = None
        self._queue_depth: Callable[[], int] | None = None
        self._backfill: Callable[[], Mapping[str, Any] | None] | None = None

    # ---- configuration, set once at start-up ------------------------------------------
    def set_model(self, name: str, version: str, sha256: str, execution_provider: str) -> None:
        """The model in use (shown on the status page) and its onnxruntime execution provider."""
        with self._lock:
            self._model = {"Name": name, "Version": version, "Sha256": sha256, "ExecutionProvider": execution_provider}

    def set_shadow_mode(self, enabled: bool) -> None:
        with self._lock:
            self._shadow_mode = bool(enabled)

    def register_destinations(self, names: Iterable[str]) -> None:
        """Make every configured destination appear (at zero) before its first forward."""
        with self._lock:
            for name in names:
                self._destinations.setdefault(name, DestinationStats())

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """``depth()`` is read at each snapshot/publish (e.g. ``queue.qsize``)."""
        self._queue_depth = depth

    def watch_backfill(self, progress: Callable[[], Mapping[str, Any] | None]) -> None:
        """``progress()`` returns the backfill's progress dict, or ``None`` when none ever ran."""
        self._backfill = progress

    # ---- events ------------------------------------------------------------------------
    def classified(self, class_name: str) -> None:
        with self._lock:
            self._classified[class_name] += 1

    def not_classified(self, state: InstanceState) -> None:
        """An instance that got ``skipped:<reason>`` or ``failed:<reason>`` instead of a class."""
        if state.kind not in (Kind.SKIPPED, Kind.FAILED):
            raise ValueError(f"expected a 'skipped:<reason>' or 'failed:<reason>' state, got {state!r}")
        with self._lock:
            self._not_classified[state] += 1

    def observe(self, what: str, seconds: float, instances: int = 1) -> None:
        """Record a duration measured elsewhere; ``what`` is ``decode``, ``inference`` or ``ingest_yield``."""
        with self._lock:
            self._timings[what].observe(seconds, instances)

    def _dest(self, name: str) -> DestinationStats:
        return self._destinations.setdefault(name, DestinationStats())

    def forwarded(self, destination: str) -> None:
        with self._lock:
            self._dest(destination).forwards += 1

    def forward_failed(self, destination: str) -> None:
        with self._lock:
            self._dest(destination).failures += 1

    def dead_lettered(self, destination: str) -> None:
        with self._lock:
            self._dest(destination).dead_letters += 1

    def circuit(self, destination: str, state: CircuitState) -> None:
        """Circuit breaker state of a destination: ``closed`` or ``open``."""
        if state not in CIRCUIT_STATES:
            raise ValueError(f"unknown circuit state {state!r} (expected one of {', '.join(CIRCUIT_STATES)})")
        with self._lock:
            self._dest(destination).circuit = CircuitState(state)

    def would_forward(self, destination: str, class_name: str) -> None:
        """Shadow mode: count a forward that was not made."""
        with self._lock:
            self._would_forward.setdefault(destination, Counter())[class_name] += 1

    def image_facts(self, remote_aet: str | None, facts: ImageFacts) -> None:
        """Count a classified film's region, and whether it was stored turned, inverted or lateral."""
        self.quality.record(remote_aet, facts)

    def header_audit(self, remote_aet: str | None, verdict: str) -> None:
        self.stations.record(remote_aet, verdict)

    def decision(
        self,
        instance_id: str,
        *,
        class_name: str | None,
        score: float | None,
        state: str,
        destinations: Iterable[str] = (),
        header_audit: str | None = None,
        source: str = "live",
    ) -> None:
        """Remember one outcome for the status page's "recent decisions" list."""
        entry = {
            "Instance": instance_id,
            "Time": _iso(self._clock()),
            "Class": class_name,
            "Score": None if score is None else round(float(score), 4),
            "State": state,
            "Destinations": list(destinations),
            "HeaderAudit": header_audit,
            "Source": source,
        }
        with self._lock:
            self._recent.appendleft(entry)

    def annotate(self, instance_id: str, **fields: Any) -> None:
        """Add facts learnt later (e.g. ``HeaderAudit``) to the instance's latest recent decision."""
        with self._lock:
            for entry in self._recent:
                if entry["Instance"] == instance_id:
                    entry.update(fields)
                    return

    def failure(self, instance_id: str, state: str, detail: str = "", destination: str | None = None) -> None:
        """Remember a failed instance (classification or delivery) so it can be resubmitted."""
        entry = {"Instance": instance_id, "Time": _iso(self._clock()), "State": state, "Detail": detail,
                 "Destination": destination}
        with self._lock:
            self._failures.appendleft(entry)

    def clear_failure(self, instance_id: str) -> None:
        """Forget an instance's failures, e.g. once it was resubmitted."""
        with self._lock:
            kept = [f for f in self._failures if f["Instance"] != instance_id]
            self._failures.clear()
            self._failures.extend(kept)

    # ---- outputs -----------------------------------------------------------------------
    def _read_sources(self) -> tuple[int | None, Mapping[str, Any] | None]:
        """Call the watched gauges outside the lock (they take their own locks)."""
        depth = self._queue_depth() if self._queue_depth else None
        backfill = self._backfill() if self._backfill else None
        return depth, backfill

    def snapshot(self) -> dict[str, Any]:
        """The status JSON (shape in the module docstring)."""
        depth, backfill = self._read_sources()
        now = self._clock()
        with self._lock:
            skipped = {str(s.reason): n for s, n in sorted(self._not_classified.items()) if s.kind is Kind.SKIPPED}
            failed = {str(s.reason): n for s, n in sorted(self._not_classified.items()) if s.kind is Kind.FAILED}
            snap = {
                "Version": __version__,
                "Mode": "shadow" if self._shadow_mode else "live",
                "StartedAt": _iso(self._started),
                "UptimeSeconds": round(now - self._started, 1),
                "Model": dict(self._model) if self._model else None,
                "QueueDepth": depth,
                "Counts": {"Classified": dict(self._classified), "Skipped": skipped, "Failed": failed},
                "Timings": {"Decode": self._timings["decode"].as_dict(), "Inference": self._timings["inference"].as_dict()},
                "Destinations": {
                    name: {"Forwards": d.forwards, "Failures": d.failures, "DeadLetters": d.dead_letters,
                           "Circuit": d.circuit}
                    for name, d in sorted(self._destinations.items())
                },
                "Shadow": {dest: dict(sorted(c.items())) for dest, c in sorted(self._would_forward.items())},
                "Recent": list(self._recent),
                "Failures": list(self._failures),
            }
        snap["HeaderAudit"] = self.stations.snapshot()
        snap["ImageQuality"] = self.quality.stations()
        snap["Regions"] = self.quality.regions()
        snap["Backfill"] = dict(backfill) if backfill else None
        return snap

    def values(self, destinations: Mapping[str, Mapping[str, int]] | None = None,
               enabled: bool = True, health: int | None = None) -> dict[str, float]:
        """Every Prometheus series as ``{series: value}`` (series from :func:`metric_name`).

        ``destinations`` is ``{destination: {"Pending": n, "DeadLetters": n}}`` read from the
        state database (see :meth:`bodypart_router.forwarding.store.Store.destination_backlog`); ``health``
        is the code of :class:`bodypart_router.ops.health.HealthState`.
        """
        depth, backfill = self._read_sources()
        out: dict[str, float] = {metric_name("enabled"): 1.0 if enabled else 0.0}
        with self._lock:
            for cls, n in self._classified.items():
                out[metric_name("classified_total", **{"class": cls})] = n
            for state, n in self._not_classified.items():
                out[metric_name(f"{state.kind}_total", reason=str(state.reason))] = n
            for what, timing in self._timings.items():
                out[metric_name(f"{what}_seconds_sum")] = timing.sum
                out[metric_name(f"{what}_seconds_count")] = timing.count
                for bound, n in zip(TIME_BUCKETS, timing.buckets, strict=True):
                    out[metric_name(f"{what}_seconds_bucket", le=_le(bound))] = n
                out[metric_name(f"{what}_seconds_bucket", le="+Inf")] = timing.count
            names = set(self._destinations) | set(destinations or {})
            for name in sorted(names):
                d = self._destinations.get(name) or DestinationStats()
                backlog = (destinations or {}).get(name, {})
                out[metric_name("forwards_total", destination=name)] = d.forwards
                out[metric_name("forward_failures_total", destination=name)] = d.failures
                out[metric_name("dead_lettered_total", destination=name)] = d.dead_letters
                out[metric_name("circuit_state", destination=name)] = CIRCUIT_STATES[d.circuit]
                if destinations is not None:
                    out[metric_name("forwards_pending", destination=name)] = backlog.get("Pending", 0)
                    out[metric_name("dead_letters", destination=name)] = backlog.get("DeadLetters", 0)
            for dest, counts in self._would_forward.items():
                for cls, n in counts.items():
                    out[metric_name("would_forward_total", destination=dest, **{"class": cls})] = n
            out[metric_name("shadow_mode")] = 1.0 if self._shadow_mode else 0.0
            if self._model:
                out[metric_name("execution_provider", provider=self._model["ExecutionProvider"])] = 1.0
            out[metric_name("uptime_seconds")] = round(self._clock() - self._started, 1)
        if depth is not None:
            out[metric_name("queue_depth")] = depth
        for aet, findings in self.quality.stations().items():
            for finding, n in findings.items():
                name = "films_checked_total" if finding == "Films" else f"films_{finding.lower()}_total"
                out[metric_name(name, station=aet)] = n
        for region, n in self.quality.regions().items():
            out[metric_name("classified_regions_total", region=region)] = n
        if health is not None:
            out[metric_name("health")] = float(health)
        for aet, station in self.stations.snapshot().items():
            for verdict in (AGREE, DISAGREE, NO_HEADER):
                out[metric_name("header_verdicts_total", station=aet, verdict=verdict)] = station[verdict]
            if station["mismatch_rate"] is not None:
                out[metric_name("header_mismatch_ratio", station=aet)] = station["mismatch_rate"]
        if backfill:
            for key, name in (("Done", "done_instances"), ("Total", "planned_instances"),
                              ("Rate", "rate_instances_per_second"), ("EtaSeconds", "eta_seconds")):
                value = backfill.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[metric_name(f"backfill_{name}")] = float(value)
            out[metric_name("backfill_running")] = 1.0 if backfill.get("State") in ("planning", "running") else 0.0
        return {k: float(v) for k, v in out.items()}

    def publish(self, setter: MetricSetter, **sources: Any) -> int:
        """Push every series through ``setter``, changed or not; returns how many were pushed.

        Unchanged values are pushed too: Orthanc stamps a metric with the time it was last
        set, and Prometheus treats a series whose stamp is older than its lookback window
        (5 minutes by default) as gone, so a constant gauge such as ``circuit_state`` of a
        destination that stays down would vanish while the alert still matters.
        ``sources`` are passed to :meth:`values`.
        """
        values = self.values(**sources)
        for name, value in sorted(values.items()):
            setter(name, value)
        return len(values)


class MetricsPublisher(ServiceThread):
    """A thread that calls :meth:`RouterMetrics.publish` every ``interval`` seconds.

    It is a daemon thread *and* must be stopped at ``ORTHANC_STOPPED``: Orthanc waits for
    non-daemon threads, and a daemon thread calling into a stopping Orthanc is unsafe.
    A setter failure is reported through ``on_error`` and never ends the thread. ``sources()``
    gives the keyword arguments of :meth:`RouterMetrics.values` read elsewhere (the store).
    """

    def __init__(
        self,
        metrics: RouterMetrics,
        setter: MetricSetter,
        *,
        interval: float = 5.0,
        on_error: Callable[[BaseException], None] = lambda e: None,
        sources: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        super().__init__("bodypart-router-metrics", interval=interval)
        self._metrics, self._setter, self._on_error = metrics, setter, on_error
        self._sources = sources

    def start(self) -> "MetricsPublisher":  # type: ignore[override]
        super().start()
        return self

    def step(self) -> bool:
        try:
            self._metrics.publish(self._setter, **self._sources())
        except Exception as exc:  # a metrics failure must never take the router down
            self._on_error(exc)
        return False

    def stop(self, timeout: float = 2.0) -> None:  # type: ignore[override]
        super().stop()
        self.join(timeout)
