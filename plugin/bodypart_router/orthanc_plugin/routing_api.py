"""Dry run and re-routing: ``explain`` one instance, ``reroute`` stored instances under the current rules.

* ``POST /bodypart-router/explain`` ``{"Instance": id}``: decides the instance again from what
  the router kept of its classification (every class probability and the model's secondary
  outputs) and its header as it is now, and answers the evidence (probabilities, the header's
  terms, the fusion), every rule with each condition and why it held or not, and the
  destinations, beside what was stored and delivered. It sends nothing and writes nothing.
* ``POST /bodypart-router/reroute`` ``{"Instances": [...], "Studies": [...], "Since": "2026-12-01",
  "Destinations": [...]}``: decides each instance again the same way and adds a forward to every
  destination of the decision (restricted to ``Destinations`` when given) that has no delivery
  of the instance yet, in any state and with any model: the ledger stays exactly-once, so
  re-routing twice, or re-routing what already arrived, sends nothing more. ``Since`` (a date or
  an ISO 8601 time, UTC) takes the instances the router received since then. It runs in the
  background; ``GET /bodypart-router/reroute`` and the status page's *Re-route* panel show its
  progress. Only classified instances are re-routed; the stored class is not changed. With
  several nodes on one index, each node re-routes the instances it owns (see claims.py).
"""

from __future__ import annotations

import logging
import datetime as dt
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from ..routing.audit import REGION_TAGS, age_in_years
from ..config import Destination, destination_list, known_destinations
from ..orthanc_api import OrthancError
from ..forwarding.store_schema import delivery_json
from ..forwarding.events import InstanceStateChanged
from ..ops.request_body import ORTHANC_ID, RequestRefused, only_keys, string_list
from ..routing.decision import RoutingDecision, decide_evidence
from ..states import InstanceState
from ..service_thread import OneShotThread
from .evidence import InstanceHeader, read_header, rule_keywords
from .rest_api import route
from .routes import Request

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp


def redecide(app: "RouterApp", instance_id: str) -> tuple[RoutingDecision, InstanceHeader, dict[str, Any]] | None:
    """The decision the current configuration gives the instance; None if the router never classified it."""
    store = app.require_store()
    assert app.config is not None
    record = store.instance(instance_id)
    if record is None or record.class_name is None:
        return None
    evidence = json.loads(store.evidence(instance_id) or "null") or {
        "scores": {record.class_name: float(record.score or 0.0)}}
    if record.class_name not in evidence["scores"]:  # "uncertain" kept before the full output was stored
        evidence["scores"] = evidence["scores"] or {record.class_name: float(record.score or 0.0)}
    header = read_header(app.rest, instance_id, rule_keywords(app.config))
    decision = decide_evidence(app.config, evidence["scores"], tags=header.tags, calling_aet=header.remote_aet,
                               secondary=evidence)
    return decision, header, evidence


def _shown_tags(app: "RouterApp", tags: dict[str, Any]) -> dict[str, Any]:
    """The header terms that weighed in: region tags, age, and the attributes rules test (no names or IDs)."""
    assert app.config is not None
    keys = [*REGION_TAGS, "Modality", *sorted(rule_keywords(app.config))]
    shown = {k: tags.get(k) for k in keys if tags.get(k) not in (None, "")}
    shown.pop("PatientBirthDate", None)
    shown.pop("PatientAge", None)
    age = age_in_years(tags)
    shown["AgeYears"] = None if age is None else round(age, 2)
    return shown


def explain(app: "RouterApp", request: Request) -> Any:
    body = request.json_body()
    only_keys(body, ("Instance",))
    instance_id = body.get("Instance")
    if not isinstance(instance_id, str) or not ORTHANC_ID.match(instance_id):
        raise RequestRefused(400, "Instance: expected an Orthanc instance ID")
    store = app.require_store()
    assert app.config is not None
    record = store.instance(instance_id)
    out: dict[str, Any] = {
        "Instance": instance_id,
        "Stored": None if record is None else {"State": record.state, "Class": record.class_name,
                                               "Score": record.score, "Model": record.model, "Detail": record.detail},
        "Deliveries": [delivery_json(d) for d in store.deliveries_of(instance_id)],
        "DecisionLevel": app.config.decision_level,
        "SendsNothing": True,
    }
    try:
        found = redecide(app, instance_id)
    except OrthancError as exc:
        if exc.status == 404:
            raise RequestRefused(404, f"instance {instance_id} is not in Orthanc") from exc
        raise
    if found is None:
        out["Explanation"] = ("the router has not classified this instance"
                              + (f" (state {record.state})" if record else " (it does not know it)"))
        return out
    decision, header, evidence = found
    out.update({
        "Evidence": {
            "Scores": {c: round(p, 4) for c, p in evidence["scores"].items()},
            **{k.capitalize(): evidence.get(k) for k in ("region", "view", "rotation", "inverted")},
            "Header": _shown_tags(app, header.tags),
            "CallingAet": header.remote_aet,
        },
        "Fusion": dict(decision.fusion),
        "Class": decision.class_name,
        "Score": round(decision.score, 4),
        "Source": decision.source,
        "Rules": [r.as_dict() for r in decision.rules],
        "Held": list(decision.held),
        "Destinations": [d.name for d in decision.destinations],
    })
    if record is not None and record.state == InstanceState.AWAITING_SERIES:
        out["Explanation"] = "waiting for its series to be stable: the series vote decides its class (DecisionLevel series)"
    return out


class Rerouter:
    """One re-routing job at a time, in a background thread, with progress for the status page."""

    def __init__(self, app: "RouterApp") -> None:
        self.app = app
        self._lock = threading.Lock()
        self._thread: OneShotThread | None = None
        self.progress: dict[str, Any] | None = None

    def start(self, instances: list[str], only: tuple[Destination, ...] | None, description: str) -> dict[str, Any]:
        with self._lock:
            if self._thread is not None and self._thread.running:
                raise RequestRefused(409, "a re-route is running; wait for it to finish")
            self.progress = {"State": "running", "Description": description, "Total": len(instances), "Done": 0,
                             "Forwards": 0, "AlreadySent": 0, "NotClassified": 0, "OtherNode": 0, "Errors": 0,
                             "Destinations": {}, "StartedAt": _iso(time.time()), "FinishedAt": None}
            self._thread = OneShotThread("bodypart-reroute", lambda thread: self._run(instances, only, thread))
            self._thread.start()
            return dict(self.progress)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(2.0)

    def _run(self, instances: list[str], only: tuple[Destination, ...] | None, thread: OneShotThread) -> None:
        assert self.progress is not None
        p = self.progress
        store = self.app.require_store()
        assert self.app.config is not None
        shadow = self.app.config.shadow_mode
        allowed = None if only is None else {d.key for d in only}
        for instance_id in instances:
            if thread.stopping:
                p["State"] = "interrupted"
                break
            try:
                record = store.instance(instance_id)
                if record is not None and record.state == InstanceState.ELSEWHERE:
                    p["OtherNode"] += 1  # another node sharing the index owns it: re-route it there
                    p["Done"] += 1
                    continue
                found = redecide(self.app, instance_id)
                if found is None or record is None or record.state == InstanceState.AWAITING_SERIES:
                    p["NotClassified"] += 1
                else:
                    decision = found[0]
                    wanted = [d.key for d in decision.destinations if allowed is None or d.key in allowed]
                    added = store.add_deliveries(instance_id, wanted, model=record.model or "", shadow=shadow)
                    p["AlreadySent"] += len(wanted) - len(added)
                    p["Forwards"] += len(added)
                    for key in added:
                        name = Destination.from_key(key).name
                        p["Destinations"][name] = p["Destinations"].get(name, 0) + 1
                    if added and not shadow:
                        self.app.events.publish(InstanceStateChanged(
                            instance_id, store.instance(instance_id).state))  # type: ignore[union-attr]
                        self.app.wake_forwarder.set()
            except Exception as exc:
                p["Errors"] += 1
                LOGGER.warning(f"re-route of instance {instance_id} failed: {exc!r}", exc_info=True)
            p["Done"] += 1
        if p["State"] == "running":
            p["State"] = "done"
        p["FinishedAt"] = _iso(time.time())
        LOGGER.info(f"re-route {p['State']}: {p['Forwards']} forward(s) added for {p['Done']} instance(s), "
                    f"{p['AlreadySent']} destination(s) already had them")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(value: Any) -> float:
    if not isinstance(value, str):
        raise RequestRefused(400, 'Since: expected a date or time such as "2026-12-01" or "2026-12-01T08:00:00Z"')
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RequestRefused(400, f"Since: {exc}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def reroute_progress(app: "RouterApp", request: Request) -> Any:
    return {"Reroute": app.rerouter.progress}  # type: ignore[attr-defined]


def reroute(app: "RouterApp", request: Request) -> Any:
    rerouter: Rerouter = app.rerouter  # type: ignore[attr-defined]
    body = request.json_body()
    only_keys(body, ("Instances", "Studies", "Since", "Destinations"))
    instances = string_list(body, "Instances", pattern=ORTHANC_ID, what="Orthanc instance IDs")
    studies = string_list(body, "Studies", pattern=ORTHANC_ID, what="Orthanc study IDs")
    names = string_list(body, "Destinations", what="destination names")
    if not instances and not studies and "Since" not in body:
        raise RequestRefused(400, "say what to re-route: Instances, Studies or Since")
    store = app.require_store()
    only: tuple[Destination, ...] | None = None
    if "Destinations" in body:
        problems: list[str] = []
        only = destination_list(names, "Destinations", known_destinations(app.orthanc_config), problems)
        if problems:
            raise RequestRefused(400, "; ".join(problems))
    wanted: list[str] = list(instances)
    for study in studies:
        try:
            wanted.extend(i["ID"] for i in app.rest.get_json(f"/studies/{study}/instances"))
        except OrthancError as exc:
            raise RequestRefused(404 if exc.status == 404 else 502, f"study {study}: {exc}") from exc
    if "Since" in body:
        wanted.extend(store.classified_since(_since(body["Since"])))
    unique = list(dict.fromkeys(wanted))
    description = ", ".join(filter(None, [
        f"{len(instances)} instance(s)" if instances else "", f"{len(studies)} study(ies)" if studies else "",
        f"since {body['Since']}" if "Since" in body else "",
        f"to {', '.join(d.name for d in only)}" if only is not None else ""]))
    return {"Reroute": rerouter.start(unique, only, description)}


def register(app: "RouterApp") -> None:
    app.rerouter = Rerouter(app)  # type: ignore[attr-defined]
    route(app, "/bodypart-router/explain", POST=explain)
    route(app, "/bodypart-router/reroute", GET=reroute_progress, POST=reroute)
    app.status_sections["Reroute"] = lambda: app.rerouter.progress  # type: ignore[attr-defined]
    app.on_stopping.append(app.rerouter.stop)  # type: ignore[attr-defined]


