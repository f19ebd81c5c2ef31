"""Make results visible in Orthanc: instance metadata on every version, labels from Orthanc 1.12.

Metadata (declared in ``UserMetadata``): ``BodyPart``, ``BodyPartScore``, ``BodyPartModel``,
``BodyPartState``, ``BodyPartForwarded`` (comma-separated destination names), and
``BodyPartSource`` (what decided the class, see fusion.py) where it is declared.
An instance the router skips (not an X-ray: CT, MR, SR...) gets no metadata at all unless
``MarkSkipped`` is true: the reason stays in the router's store, where
``GET /bodypart-router/instances/{id}`` and the status page read it. Orthanc's index, its
changes log and the instance's metadata listing are then exactly what they are without the
router.
**One write per change.** Each metadata value is its own transaction in Orthanc's index, which
several nodes may share. Declare ``BodyPartResult`` in ``UserMetadata`` and the whole result
goes into that one JSON value (``Class``, ``Score``, ``Model``, ``State``, ``Forwarded``,
``Source``, ``HeaderAudit``, and the model's ``Region``, ``View``, ``Rotation`` and
``Inverted`` when it gives them); each other name (``BodyPart``, ``BodyPartState``,
``BodyPartRegion``...) is then written separately only where it is declared too, for
Explorer, scripts or lookups that want that value alone. Without ``BodyPartResult`` the
classic names are written one value each, as before.
**One packed write per routed instance.** The separate values of a classified instance are
written at once, but its packed result waits up to ``RESULT_WAIT_SECONDS`` for its forwards,
so that one write carries both the classification and where the instance arrived. Forwards
that take longer (a destination down) get the ``classified`` result written when the wait
ends, and the forwarded one later. The wait is in memory: a shutdown writes (or, when REST is
no longer allowed, records for the next start) what still waits, and after a crash the
packed result is rebuilt from the router's store when the forwards finish.
Labels (Orthanc >= 1.12 only, and ``Labels: true``; 1.10 has none, its Explorer gets the
JavaScript extension of :mod:`.explorer` instead): ``bodypart-<class>`` on the series and the
study, and ``bodypart-dead-letter`` on both when a forward was dead-lettered. Each label is put
once per series and study (remembered until Orthanc reports a deletion), at the IDs the header
gave, so the instances of a series after the first cost the index nothing for labels.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..inference.classes import label_for
from ..config import CLASSIC_METADATA, RESULT_METADATA, SEPARATE_METADATA, Destination
from ..orthanc_api import OrthancError
from ..forwarding.events import Dispatcher, InstanceNotClassified, InstanceReceived, InstanceStateChanged
from ..routing.decision import SECONDARY, RoutingDecision
from ..forwarding.store import InstanceRecord, Store
from ..states import InstanceState, Kind
from .host import OrthancRest

LOGGER = logging.getLogger(__name__)

DEAD_LETTER_LABEL = "bodypart-dead-letter"
#: Field of the packed result (``RESULT_METADATA``) -> the metadata holding that value alone
#: (written where declared). Every name is defined once, in config/schema.py.
SEPARATE_NAMES = SEPARATE_METADATA
#: The classic layout: these are declared (config checks it) when ``BodyPartResult`` is not.
CLASSIC_NAMES = frozenset(CLASSIC_METADATA)
#: Packed results remembered for the next change of the same instance (else read back once).
PACKED_CACHE_SIZE = 10_000
#: Store setting: the instances whose results a shutdown could not write (:meth:`ResultWriter.resync`).
RESYNC_KEY = "metadata_resync"
#: (level, resource, label) remembered as put, so that a series' later instances do not put it again.
LABELS_REMEMBERED = 10_000
#: How long a classified instance's packed result waits for its forwards (module docstring).
RESULT_WAIT_SECONDS = 5.0


def stored_state(metadata: Mapping[str, str]) -> str:
    """An instance's state as written in its metadata (``?expand``), whichever the layout."""
    if metadata.get(RESULT_METADATA):
        try:
            state = json.loads(metadata[RESULT_METADATA]).get("State")
        except (ValueError, AttributeError):
            state = None
        if state:
            return str(state)
    return str(metadata.get("BodyPartState", ""))


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.12.7"`` -> ``(1, 12, 7)``; ``"mainline"`` (a development build) counts as newest."""
    if text == "mainline":
        return (999,)
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class ResultWriter:
    """Writes the router's results onto instances (and their series and study)."""

    def __init__(self, rest: OrthancRest, orthanc_version: str, *, mark_skipped: bool = False) -> None:
        self.rest = rest
        #: Write ``skipped:<reason>`` states too (``MarkSkipped``); off, a skipped instance is untouched.
        self.mark_skipped = mark_skipped
        #: ``Labels`` of the configuration; labels are written where it is true and Orthanc is 1.12+.
        self.labels_wanted = True
        self.set_version(orthanc_version)
        self._labelled: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._suspended = False
        self._missed: set[str] = set()
        #: Metadata names declared in ``UserMetadata``: a value is written only under a declared name.
        self.declared: frozenset[str] = CLASSIC_NAMES
        self._packed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._packed_lock = threading.Lock()
        #: Packed results waiting for their instance's forwards: instance -> (due, values).
        self._waiting: dict[str, tuple[float, dict[str, Any]]] = {}
        #: What the router's store knows of an instance's result (:func:`stored_values`; set by the
        #: app): the packed result's base when Orthanc has none (its write waited, then a crash).
        self.recall: Callable[[str], dict[str, Any]] | None = None
        self.clock: Callable[[], float] = time.monotonic

    def declare(self, names: Iterable[str]) -> None:
        """The ``UserMetadata`` names of the configuration (see the module docstring)."""
        self.declared = frozenset(names)

    @property
    def packed(self) -> bool:
        return RESULT_METADATA in self.declared

    @property
    def source_metadata(self) -> bool:
        return SEPARATE_NAMES["Source"] in self.declared

    def suspend(self) -> set[str]:
        """Stop writing (Orthanc is shutting down); returns the instances whose writes were skipped,
        those whose packed result still waited for their forwards included."""
        self._suspended = True
        with self._packed_lock:
            self._missed.update(self._waiting)
            self._waiting.clear()
        return set(self._missed)

    def close(self, store: Store, *, flush: bool) -> None:
        """At shutdown: write what still waits for its forwards (``flush``: REST calls are still
        allowed), stop writing, and keep what was not written in the store for :meth:`resync`."""
        if flush:
            self.flush(everything=True)
        missed = self.suspend()
        if missed:
            store.set_setting(RESYNC_KEY, json.dumps(sorted(missed)))

    def resync(self, store: Store) -> None:
        """At start-up: write the results the last shutdown could not write."""
        pending = json.loads(store.get_setting(RESYNC_KEY) or "[]")
        for instance_id in pending:
            record = store.instance(instance_id)
            if record is not None:
                self.rewrite(record, store.delivered_destinations(instance_id))
        if pending:
            store.set_setting(RESYNC_KEY, "[]")
            LOGGER.info(f"rewrote the results of {len(pending)} instance(s) left unwritten at the last shutdown")

    def flush(self, *, everything: bool = False) -> int:
        """Write the packed results whose wait for their forwards is over (all of them with
        ``everything``, at an orderly shutdown). Returns how many were written."""
        if not self._waiting:  # after every forwarder step: nothing to look at, most of the time
            return 0
        now = self.clock()
        with self._packed_lock:
            due = [i for i, (when, _) in self._waiting.items() if everything or when <= now]
        for instance_id in due:
            self._safely(instance_id, lambda i=instance_id: self._write(i, {}, merge=True, separate=False))
        return len(due)

    def rewrite(self, record: InstanceRecord, delivered: list[str]) -> None:
        """Write everything the store knows about an instance (after a shutdown skipped it)."""
        if record.class_name is None and not self.writes(record.state):
            return
        values: dict[str, Any] = dict(self.recall(record.instance_id)) if self.recall else {}
        values["State"] = record.state
        if record.class_name is not None:
            values.update(Class=record.class_name, Score=round(record.score or 0, 4), Model=record.model or "")
        if delivered:
            values["Forwarded"] = self._names(delivered)

        def write() -> None:
            self._write(record.instance_id, values, merge=record.class_name is None)
            if record.class_name is not None and self.labels:
                self._label_parents(record.instance_id, label_for(record.class_name))

        self._safely(record.instance_id, write)

    def set_version(self, orthanc_version: str) -> None:
        """Known only once Orthanc has started (``GET /system``); labels need 1.12."""
        self.version = orthanc_version
        self.labels_supported = parse_version(orthanc_version) >= (1, 12)

    @property
    def labels(self) -> bool:
        return self.labels_wanted and self.labels_supported

    def forget_labels(self) -> None:
        """Orthanc deleted something: a series or study labelled before may be stored again, new."""
        with self._packed_lock:
            self._labelled.clear()

    def _meta(self, instance_id: str, name: str, value: str) -> None:
        self.rest.put(f"/instances/{instance_id}/metadata/{name}", value)

    @staticmethod
    def _names(delivered: list[str]) -> list[str]:
        return [Destination.from_key(k).name for k in delivered]

    @staticmethod
    def _separate_value(field: str, value: Any) -> str:
        if field == "Score":
            return f"{float(value):.4f}"
        if field == "Forwarded":
            return ",".join(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def _write(self, instance_id: str, values: Mapping[str, Any], *, merge: bool, separate: bool = True) -> None:
        """One PUT per declared separate name (unless ``separate`` is false), and one for the packed
        result. ``merge``: the values change part of a result written before (else they are the
        whole result); a packed result still waiting for its forwards is merged either way."""
        if separate:
            self._write_separate(instance_id, values)
        if not self.packed:
            return
        with self._packed_lock:
            waiting = self._waiting.pop(instance_id, None)
        if waiting is not None:
            result = dict(waiting[1])
        else:
            result = dict(self._current(instance_id) if merge else {})
        result.update({k: v for k, v in values.items() if v is not None})
        self._meta(instance_id, RESULT_METADATA, json.dumps(result, sort_keys=True))
        with self._packed_lock:
            self._packed[instance_id] = result
            self._packed.move_to_end(instance_id)
            while len(self._packed) > PACKED_CACHE_SIZE:
                self._packed.popitem(last=False)

    def _write_separate(self, instance_id: str, values: Mapping[str, Any]) -> None:
        # the state last: whoever waits for it finds the other values already written
        for field, value in sorted(values.items(), key=lambda item: item[0] == "State"):
            name = SEPARATE_NAMES[field]
            if name in self.declared:
                self._meta(instance_id, name, self._separate_value(field, value))

    def _wait(self, instance_id: str, values: Mapping[str, Any]) -> None:
        """Keep a classified instance's packed result for its forwards (see :meth:`flush`)."""
        result = {k: v for k, v in values.items() if v is not None}
        with self._packed_lock:
            self._waiting[instance_id] = (self.clock() + RESULT_WAIT_SECONDS, result)

    def _current(self, instance_id: str) -> dict[str, Any]:
        """The packed result written last (remembered, or read back once after a restart)."""
        with self._packed_lock:
            known = self._packed.get(instance_id)
        if known is not None:
            return known
        try:
            value = json.loads(self.rest.get(f"/instances/{instance_id}/metadata/{RESULT_METADATA}"))
        except OrthancError as exc:
            if exc.status != 404:
                raise
            value = None
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        return dict(self.recall(instance_id)) if self.recall else {}

    def follow(self, events: Dispatcher) -> None:
        """Mirror the lifecycle's transitions into Orthanc: each published state is written here."""
        events.subscribe(InstanceReceived, self._received)
        events.subscribe(InstanceNotClassified, lambda event: self.state(event.instance_id, event.state))
        events.subscribe(InstanceStateChanged, self._state_changed)

    def _received(self, event: InstanceReceived) -> None:
        # Only final states go to Orthanc's index at ingest: a transient "queued" for every arrival
        # would double the index writes of a burst (docs/decisions.md); the store holds it and
        # GET /bodypart-router/instances/{id} reports it.
        if event.state is not InstanceState.QUEUED:
            self.state(event.instance_id, event.state)

    def _state_changed(self, event: InstanceStateChanged) -> None:
        if event.delivered is None:
            self.state(event.instance_id, event.state)
        else:
            self.forwarded(event.instance_id, event.state, list(event.delivered))

    def writes(self, state: InstanceState) -> bool:
        """Whether a state goes to Orthanc's index: not a skip, unless ``MarkSkipped`` asks for it."""
        return self.mark_skipped or state.kind is not Kind.SKIPPED

    def state(self, instance_id: str, state: InstanceState) -> None:
        """Only the state (skipped:<reason>, failed:<reason>, forwarded...)."""
        if not self.writes(state):
            return
        self._safely(instance_id, lambda: self._write(instance_id, {"State": state}, merge=True))

    def classified(self, instance_id: str, decision: RoutingDecision, model_version: str, state: InstanceState, *,
                   header_audit: str | None = None, secondary: Mapping[str, Any] | None = None,
                   forwards_pending: bool = False, parents: tuple[str | None, str | None] = (None, None)) -> None:
        """The result of a classification: the declared separate values now, and one write of the
        packed result, which waits for the forwards when ``forwards_pending`` (module docstring).
        ``secondary``: the model's region, view, rotation and inverted; ``parents``: the IDs of
        the instance's series and study where known (for the labels)."""
        values: dict[str, Any] = {"Class": decision.class_name, "Score": round(decision.score, 4),
                                  "Model": model_version, "State": state, "Source": decision.source}
        if header_audit is not None:
            values["HeaderAudit"] = header_audit
        for key, value in (secondary or {}).items():
            field = key.capitalize()
            if field in SEPARATE_NAMES and value is not None:
                values[field] = value

        def write() -> None:
            if forwards_pending and self.packed:
                self._write_separate(instance_id, values)
                self._wait(instance_id, values)
            else:
                self._write(instance_id, values, merge=False)
            if self.labels:
                self._label_parents(instance_id, label_for(decision.class_name), parents)

        self._safely(instance_id, write)

    def forwarded(self, instance_id: str, state: InstanceState, delivered: list[str]) -> None:
        """After a delivery finished: the new state and where the instance has arrived."""

        def write() -> None:
            self._write(instance_id, {"Forwarded": self._names(delivered), "State": state}, merge=True)
            if self.labels and state == InstanceState.FAILED_DEAD_LETTER:
                self._label_parents(instance_id, DEAD_LETTER_LABEL)

        self._safely(instance_id, write)

    def _label_parents(self, instance_id: str, label: str, parents: tuple[str | None, str | None] = (None, None)) -> None:
        """Put ``label`` on the instance's series and study, unless already put. ``parents``: their
        IDs where the header gave them (else asked of the index)."""
        series, study = parents
        for level, resource, relation in (("series", series, "series"), ("studies", study, "study")):
            if resource is None:
                resource = str(self.rest.get_json(f"/instances/{instance_id}/{relation}")["ID"])
            key = (level, resource, label)
            with self._packed_lock:
                if key in self._labelled:
                    self._labelled.move_to_end(key)
                    continue
            self.rest.put(f"/{level}/{resource}/labels/{label}", "")
            with self._packed_lock:
                self._labelled[key] = None
                while len(self._labelled) > LABELS_REMEMBERED:
                    self._labelled.popitem(last=False)

    def _safely(self, instance_id: str, write: object) -> None:
        """A deleted instance or a missing UserMetadata declaration must not stop the worker."""
        if self._suspended:
            self._missed.add(instance_id)
            return
        try:
            write()  # type: ignore[operator]
        except OrthancError as exc:
            if exc.status == 404:
                LOGGER.info(f"instance {instance_id} was deleted before its results could be written")
            else:
                LOGGER.warning(f"instance {instance_id}: could not write results: {exc}")


def stored_values(store: Store, instance_id: str) -> dict[str, Any]:
    """An instance's packed result as far as the router's store knows it: the class, score and
    model, and the model's region, view, rotation and inverted (from the kept evidence)."""
    record = store.instance(instance_id)
    if record is None or record.class_name is None:
        return {}
    values: dict[str, Any] = {"Class": record.class_name, "Score": round(record.score or 0, 4),
                              "Model": record.model or ""}
    try:
        evidence = json.loads(store.evidence(instance_id) or "{}")
    except ValueError:
        evidence = {}
    if isinstance(evidence, dict):
        for key in SECONDARY:
            if evidence.get(key) is not None and key.capitalize() in SEPARATE_NAMES:
                values[key.capitalize()] = evidence[key]
    return values
