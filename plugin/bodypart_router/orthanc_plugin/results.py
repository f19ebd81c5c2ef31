"""Make results visible in Orthanc: instance metadata on every version, labels from Orthanc 1.12.

Metadata (declared in ``UserMetadata``): ``BodyPart``, ``BodyPartScore``, ``BodyPartModel``,
``BodyPartState``, ``BodyPartForwarded`` (comma-separated destination names), and
``BodyPartSource`` (what decided the class, see fusion.py) where it is declared.
An instance the router skips (not an X-ray: CT, MR, SR...) gets no metadata at all unless
``MarkSkipped`` is true: the reason stays in the router's store, where
``GET /bodypart-router/instances/{id}`` and the status page read it. Orthanc's index, its
changes log and the instance's metadata listing are then exactly what they are without the
router.
Labels (Orthanc >= 1.12 only; 1.10 has none, its Explorer gets the JavaScript extension of
:mod:`.explorer` instead): ``bodypart-<class>`` on the series and the study, and
``bodypart-dead-letter`` on both when a forward was dead-lettered.
"""

from __future__ import annotations

from ..classes import label_for
from ..config import Destination
from ..delivery import RestError
from ..fusion import METADATA_NAME as SOURCE_METADATA
from ..routing import RoutingDecision
from ..store import DEAD_LETTER_STATE, InstanceRecord
from .host import OrthancRest, log

DEAD_LETTER_LABEL = "bodypart-dead-letter"
SKIPPED_PREFIX = "skipped:"


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
        self.set_version(orthanc_version)
        self._suspended = False
        self._missed: set[str] = set()
        #: ``BodyPartSource`` is written only where it is declared in ``UserMetadata`` (optional).
        self.source_metadata = False

    def suspend(self) -> set[str]:
        """Stop writing (Orthanc is shutting down); returns the instances whose writes were skipped."""
        self._suspended = True
        return set(self._missed)

    def rewrite(self, record: InstanceRecord, delivered: list[str]) -> None:
        """Write everything the store knows about an instance (after a shutdown skipped it)."""
        if record.class_name is None and not self.writes(record.state):
            return

        def write() -> None:
            if record.class_name is not None:
                self._meta(record.instance_id, "BodyPart", record.class_name)
                self._meta(record.instance_id, "BodyPartScore", f"{record.score or 0:.4f}")
                self._meta(record.instance_id, "BodyPartModel", record.model or "")
                if self.labels:
                    self._label_parents(record.instance_id, label_for(record.class_name))
            if delivered:
                self._meta(record.instance_id, "BodyPartForwarded",
                           ",".join(Destination.from_key(k).name for k in delivered))
            self._meta(record.instance_id, "BodyPartState", record.state)

        self._safely(record.instance_id, write)

    def set_version(self, orthanc_version: str) -> None:
        """Known only once Orthanc has started (``GET /system``); labels need 1.12."""
        self.version = orthanc_version
        self.labels = parse_version(orthanc_version) >= (1, 12)

    def _meta(self, instance_id: str, name: str, value: str) -> None:
        self.rest.put(f"/instances/{instance_id}/metadata/{name}", value)

    def writes(self, state: str) -> bool:
        """Whether a state goes to Orthanc's index: not a skip, unless ``MarkSkipped`` asks for it."""
        return self.mark_skipped or not state.startswith(SKIPPED_PREFIX)

    def state(self, instance_id: str, state: str) -> None:
        """Only the state (skipped:<reason>, failed:<reason>, forwarded...)."""
        if not self.writes(state):
            return
        self._safely(instance_id, lambda: self._meta(instance_id, "BodyPartState", state))

    def classified(self, instance_id: str, decision: RoutingDecision, model_version: str, state: str) -> None:
        def write() -> None:
            self._meta(instance_id, "BodyPart", decision.class_name)
            self._meta(instance_id, "BodyPartScore", f"{decision.score:.4f}")
            self._meta(instance_id, "BodyPartModel", model_version)
            self._meta(instance_id, "BodyPartState", state)
            if self.source_metadata:
                self._meta(instance_id, SOURCE_METADATA, decision.source)
            if self.labels:
                self._label_parents(instance_id, label_for(decision.class_name))

        self._safely(instance_id, write)

    def forwarded(self, instance_id: str, state: str, delivered: list[str]) -> None:
        """After a delivery finished: the new state and where the instance has arrived."""

        def write() -> None:
            names = ",".join(Destination.from_key(k).name for k in delivered)
            self._meta(instance_id, "BodyPartForwarded", names)
            self._meta(instance_id, "BodyPartState", state)
            if self.labels and state == DEAD_LETTER_STATE:
                self._label_parents(instance_id, DEAD_LETTER_LABEL)

        self._safely(instance_id, write)

    def _label_parents(self, instance_id: str, label: str) -> None:
        series = self.rest.get_json(f"/instances/{instance_id}/series")["ID"]
        study = self.rest.get_json(f"/instances/{instance_id}/study")["ID"]
        self.rest.put(f"/series/{series}/labels/{label}", "")
        self.rest.put(f"/studies/{study}/labels/{label}", "")

    def _safely(self, instance_id: str, write: object) -> None:
        """A deleted instance or a missing UserMetadata declaration must not stop the worker."""
        if self._suspended:
            self._missed.add(instance_id)
            return
        try:
            write()  # type: ignore[operator]
        except RestError as exc:
            if exc.status == 404:
                log("info", f"instance {instance_id} was deleted before its results could be written")
            else:
                log("warning", f"instance {instance_id}: could not write results: {exc}")
