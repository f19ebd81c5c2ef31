"""Metrics: feed the router's events into :class:`~bodypart_router.ops.metrics.RouterMetrics`.

* Prometheus: every ``PUBLISH_SECONDS`` every value is pushed with ``orthanc.SetMetricsValue``,
  changed or not (Orthanc stamps a metric with the time it was last set; Prometheus drops a
  series older than its lookback window), so they appear, fresh, on Orthanc's own
  ``/tools/metrics-prometheus`` (orthanc-python 4.0 has no scrape-time callback;
  ``MetricsEnabled`` must stay true, its default). Publishing starts with Orthanc even when
  the router is disabled, so that ``bodypart_router_enabled 0`` can raise an alert.
* Status: the ``Metrics`` section of ``GET /bodypart-router/status`` (shape documented in
  :mod:`bodypart_router.ops.metrics`), read by the status page.

Other extensions reach the same registry with :func:`metrics_for`.
"""

from __future__ import annotations

import logging
import datetime as _dt
import json
import threading
import weakref
from typing import TYPE_CHECKING, Any

import orthanc  # type: ignore[import-not-found]

from ..config import Destination
from ..ops.health import HealthState
from ..forwarding.events import (CircuitChanged, DeadLettered, DeliveryFailed, DeliveryForwarded, Dispatcher,
                                 InstanceClassified, InstanceNotClassified, InstanceReceived, YieldedToIngest)
from ..routing.image_facts import ImageFacts
from ..ops.metrics import MetricsPublisher, RouterMetrics, metric_name
from ..states import OUTSTANDING, DeliveryState, InstanceState, Kind

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp

#: Seconds between two pushes to Orthanc's metrics registry.
PUBLISH_SECONDS = 5.0
#: Name prefix of the backfill thread: decisions it makes are shown with source "backfill".
BACKFILL_THREAD_PREFIX = "bodypart-router-backfill"
#: Rows per page of the status page's dead letters and recent decisions (both page through the store).
PAGE_SIZE = 50

_registries: "weakref.WeakKeyDictionary[RouterApp, RouterMetrics]" = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


def metrics_for(app: "RouterApp") -> RouterMetrics:
    """The app's one metrics registry (created on first use)."""
    with _registries_lock:
        if app not in _registries:
            _registries[app] = RouterMetrics()
        return _registries[app]


def _name(destination_key: str) -> str:
    """``peer:ai-chest`` -> ``ai-chest``: metric names and the page use configuration names."""
    return Destination.from_key(destination_key).name if ":" in destination_key else destination_key


def _source() -> str:
    return "backfill" if threading.current_thread().name.startswith(BACKFILL_THREAD_PREFIX) else "live"


def _set_metric(name: str, value: float) -> None:
    orthanc.SetMetricsValue(name, value, orthanc.MetricsType.DEFAULT)


class _Listeners:
    """Translate the lifecycle's events (:mod:`bodypart_router.forwarding.events`) into metric updates."""

    def __init__(self, app: "RouterApp", metrics: RouterMetrics) -> None:
        self.app, self.metrics = app, metrics

    def subscribe(self, events: Dispatcher) -> None:
        events.subscribe(InstanceReceived, self.received)
        events.subscribe(InstanceClassified, self.classified)
        events.subscribe(InstanceNotClassified, self.not_classified)
        events.subscribe(YieldedToIngest, lambda e: self.metrics.observe("ingest_yield", e.seconds))
        events.subscribe(DeliveryForwarded, self.delivered)
        events.subscribe(DeliveryFailed, lambda e: self.metrics.forward_failed(_name(e.delivery.destination)))
        events.subscribe(DeadLettered, self.dead_lettered)
        events.subscribe(CircuitChanged, lambda e: self.metrics.circuit(_name(e.destination), e.state))

    def received(self, event: InstanceReceived) -> None:
        if event.state.kind in (Kind.SKIPPED, Kind.FAILED):
            self.metrics.not_classified(event.state)
            self.metrics.decision(event.instance_id, class_name=None, score=None, state=event.state,
                                  source=_source())

    def classified(self, event: InstanceClassified) -> None:
        m, decision = self.metrics, event.decision
        m.classified(decision.class_name)
        m.observe("decode", event.decode_seconds)  # this instance's decode
        m.observe("inference", event.inference_seconds)  # its share of its batch's model run
        shadow = bool(self.app.config and self.app.config.shadow_mode)
        names = [d.name for d in decision.destinations]
        if shadow:
            for name in names:
                m.would_forward(name, decision.class_name)
        m.decision(event.instance_id, class_name=decision.class_name, score=decision.score,
                   state="classified (shadow)" if shadow and names else "classified",
                   destinations=names, source=_source())
        if event.facts is not None and event.facts.known:
            m.image_facts(event.remote_aet, event.facts)

    def not_classified(self, event: InstanceNotClassified) -> None:
        self.metrics.not_classified(event.state)
        if event.state.kind is Kind.FAILED and self.app.store is not None:
            record = self.app.store.instance(event.instance_id)
            self.metrics.failure(event.instance_id, event.state, (record.detail or "") if record else "")
        self.metrics.decision(event.instance_id, class_name=None, score=None, state=event.state, source=_source())

    def delivered(self, event: DeliveryForwarded) -> None:
        self.metrics.forwarded(_name(event.delivery.destination))
        self.metrics.annotate(event.delivery.instance_id, State=InstanceState.FORWARDED)

    def dead_lettered(self, event: DeadLettered) -> None:
        self.metrics.dead_lettered(_name(event.delivery.destination))
        self.metrics.annotate(event.delivery.instance_id, State=InstanceState.FAILED_DEAD_LETTER)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dead_letter_page(app: "RouterApp", offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of dead letters from the store (they outlive restarts), newest first, with times."""
    total, rows = app.require_store().dead_letters(offset, limit)
    return {"Total": total, "Offset": offset, "Items": [
        {"ID": d.id, "Instance": d.instance_id, "Destination": _name(d.destination), "Attempts": d.attempts,
         "Detail": d.last_error or "", "State": InstanceState.FAILED_DEAD_LETTER, "Time": _iso(dead_at),
         "Since": _iso(created_at)}
        for d, created_at, dead_at in rows]}


def _facts_fields(evidence: str | None) -> dict[str, Any]:
    """Region, view, rotation and polarity of a decision, from the evidence the store keeps."""
    try:
        facts = ImageFacts.from_evidence(json.loads(evidence) if evidence else None)
    except (ValueError, TypeError):
        facts = ImageFacts()
    return {"Region": facts.region, "View": facts.view, "Rotation": facts.rotation, "Inverted": facts.inverted}


def recent_page(app: "RouterApp", metrics: RouterMetrics, offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of the latest decisions from the store (they outlive restarts). ``Destinations``
    lists where the instance has *arrived*; ``Waiting`` and ``DeadLetters`` the others."""
    total, rows = app.require_store().recent(offset, limit)
    live = {r["Instance"]: r for r in metrics.snapshot()["Recent"]}  # header audit, source: this run only
    items = []
    for r in rows:
        by_state = r["deliveries"]
        seen = live.get(r["instance_id"], {})
        items.append({
            "Instance": r["instance_id"], "Time": _iso(r["updated_at"]), "Class": r["class_name"],
            "Score": None if r["score"] is None else round(float(r["score"]), 4), "State": r["state"],
            "Destinations": [_name(k) for k in by_state.get(DeliveryState.DELIVERED, [])],
            "Waiting": [_name(k) for st in OUTSTANDING for k in by_state.get(st, [])],
            "DeadLetters": [_name(k) for k in by_state.get(DeliveryState.DEAD, [])],
            "WouldSend": [_name(k) for k in by_state.get(DeliveryState.SHADOW, [])],
            "HeaderAudit": seen.get("HeaderAudit"), "Source": seen.get("Source"), "Detail": r["detail"],
            **_facts_fields(r.get("evidence")),
        })
    return {"Total": total, "Offset": offset, "Items": items}


def status_section(app: "RouterApp", metrics: RouterMetrics) -> dict[str, Any]:
    """The ``Metrics`` section. Counts, recent decisions, dead letters and the forwards waiting
    come from the store, so a restart does not reset them; circuits come from the forwarder."""
    snap = metrics.snapshot()
    if app.store is None:  # disabled: same shape, nothing in it
        snap.update({"Recent": {"Total": 0, "Offset": 0, "Items": []}, "DeadLetters": {"Total": 0, "Offset": 0, "Items": []},
                     "ForwardsPending": None, "CountsSinceStart": snap["Counts"]})
        return snap
    snap["CountsSinceStart"] = snap["Counts"]
    snap["Counts"] = app.store.outcome_counts()
    for cls in metrics.snapshot()["Counts"]["Classified"]:
        snap["Counts"]["Classified"].setdefault(cls, 0)
    backlog = destination_backlog(app)
    circuits = app.forwarder.forwarder.breaker.details() if app.forwarder else {}
    circuits_by_name = {_name(k): v for k, v in circuits.items()}
    recoveries = {_name(k): v for k, v in (app.forwarder.forwarder.recoveries if app.forwarder else {}).items()}
    for name, dest in snap["Destinations"].items():
        dest["DeadLettered"] = dest.pop("DeadLetters")  # since Orthanc started; DeadLetters: waiting now
        dest.update(backlog.get(name, {"Pending": 0, "DeadLetters": 0}))
        detail = circuits_by_name.get(name, {})
        dest["DownSince"] = _iso(detail.get("DownSince"))
        dest["LastError"] = detail.get("LastError") if dest["Circuit"] != "closed" else None
        was_down, back_at = recoveries.get(name, (None, None))
        dest["LastOutage"] = None if back_at is None else {"From": _iso(was_down), "To": _iso(back_at)}
    snap["ForwardsPending"] = sum(b["Pending"] for b in backlog.values())
    snap["Recent"] = recent_page(app, metrics)
    snap["DeadLetters"] = dead_letter_page(app)
    snap["Failures"] = [f for f in snap["Failures"] if f["State"] != InstanceState.FAILED_DEAD_LETTER]
    return snap


def register(app: "RouterApp") -> None:
    metrics = metrics_for(app)
    config = app.config
    if app.enabled and config is not None:
        metrics.set_shadow_mode(config.shadow_mode)
        metrics.register_destinations(d.name for d in config.destinations)
        model = app.model
        assert model is not None
        metrics.set_model(model.model_name, model.version, model.sha256, model.provider)
        store = app.store
        if store is not None:
            metrics.watch_queue(store.queued_count)
    _Listeners(app, metrics).subscribe(app.events)
    app.status_sections["Metrics"] = lambda: status_section(app, metrics)

    publisher = MetricsPublisher(metrics, _set_metric, interval=PUBLISH_SECONDS,
                                 on_error=lambda exc: LOGGER.warning(f"metrics: {exc!r}", exc_info=True),
                                 sources=lambda: publish_sources(app))

    def start_publishing() -> None:  # SetMetricsValue works once Orthanc has started
        publisher.start()

    app.on_orthanc_started.append(start_publishing)
    app.on_orthanc_stopped.append(publisher.stop)
    app.on_stopping.append(publisher.stop)
    app.on_stopping.append(lambda: _set_metric(metric_name("health"), HealthState.STOPPED.code))


def destination_backlog(app: "RouterApp") -> dict[str, dict[str, int]]:
    """Forwards waiting and dead letters per destination name (from the state database)."""
    out: dict[str, dict[str, int]] = {}
    if app.store is None:
        return out
    for key, counts in app.store.destination_backlog().items():
        entry = out.setdefault(_name(key), {"Pending": 0, "DeadLetters": 0})
        for k, n in counts.items():
            entry[k] += n
    return out


def publish_sources(app: "RouterApp") -> dict[str, Any]:
    """What :meth:`RouterMetrics.values` reads outside the registry."""
    return {"enabled": app.enabled, "destinations": destination_backlog(app) if app.store is not None else None,
            "health": app.health_now()[0].code}
