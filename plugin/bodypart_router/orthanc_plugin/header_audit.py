"""Header audit in Orthanc: after each classification, compare the header with the pixels.

The verdict (:mod:`bodypart_router.audit`) is stored in the instance metadata
``BodyPartHeaderAudit`` (declare it in ``UserMetadata``) and counted per sending station
(the ``RemoteAET`` metadata Orthanc records) for the metrics and the status page.

The tags come from Orthanc's index, not from the file: Body Part Examined, Protocol Name
and Series Description are main series tags, Study Description and Study Date main study
tags, Patient's Birth Date a main patient tag. Patient's Age is not indexed, so the file is
read for it only when the header names the chest and the birth date gives no age.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..audit import METADATA_NAME, Region, audit, regions_in
from ..delivery import RestError
from ..routing import RoutingDecision
from .host import log
from .monitoring import metrics_for

if TYPE_CHECKING:
    from .app import RouterApp


def header_tags(app: "RouterApp", instance_id: str) -> tuple[dict[str, Any], str | None]:
    """The tags the audit reads, by DICOM keyword, and the instance's RemoteAET."""
    rest = app.rest
    series = rest.get_json(f"/instances/{instance_id}/series")
    study = rest.get_json(f"/instances/{instance_id}/study")
    tags: dict[str, Any] = {
        **study.get("PatientMainDicomTags", {}),
        **study.get("MainDicomTags", {}),
        **series.get("MainDicomTags", {}),
    }
    meta = rest.get_json(f"/instances/{instance_id}/metadata?expand")
    if not tags.get("PatientAge") and not tags.get("PatientBirthDate") and _names_chest(tags):
        try:
            raw = rest.get(f"/instances/{instance_id}/content/0010-1010")
            tags["PatientAge"] = raw.decode("ascii", "replace").strip("\x00 ")
        except RestError:
            pass  # Patient's Age (0010,1010) absent: either chest class agrees
    return tags, meta.get("RemoteAET")


def _names_chest(tags: dict[str, Any]) -> bool:
    return any(Region.CHEST in regions_in(str(tags.get(k) or "")) for k in
               ("BodyPartExamined", "SeriesDescription", "ProtocolName", "StudyDescription"))


class _Auditor:
    def __init__(self, app: "RouterApp") -> None:
        self.app = app
        self.metrics = metrics_for(app)
        self._warned = False

    def classified(self, instance_id: str, decision: RoutingDecision, **_: Any) -> None:
        try:
            tags, remote_aet = header_tags(self.app, instance_id)
        except RestError as exc:
            if exc.status != 404:  # 404: deleted meanwhile, nothing to audit
                log("warning", f"instance {instance_id}: header audit skipped: {exc}")
            return
        result = audit(decision.predicted_class, tags)
        self.metrics.header_audit(remote_aet, result.verdict)
        self.metrics.annotate(instance_id, HeaderAudit=result.metadata_value)
        try:
            self.app.rest.put(f"/instances/{instance_id}/metadata/{METADATA_NAME}", result.metadata_value)
        except RestError as exc:
            if exc.status != 404 and not self._warned:
                self._warned = True
                log("warning", f"cannot store the {METADATA_NAME} metadata ({exc}); declare "
                               f'"{METADATA_NAME}" in the UserMetadata section of the Orthanc configuration')


def register(app: "RouterApp") -> None:
    if app.enabled:
        app.events.subscribe("classified", _Auditor(app).classified)
