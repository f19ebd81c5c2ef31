"""Header audit in Orthanc: after each classification, compare the header with the pixels.

The verdict (:mod:`bodypart_router.audit`) is stored in the instance metadata
``BodyPartHeaderAudit`` (declare it in ``UserMetadata``) and counted per sending station
(the ``RemoteAET`` metadata Orthanc records) for the metrics and the status page.

The tags are those the worker read for the rules and the header fusion (see evidence.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..audit import METADATA_NAME, audit
from ..delivery import RestError
from ..routing import RoutingDecision
from .evidence import InstanceHeader, read_header
from .host import log
from .monitoring import metrics_for

if TYPE_CHECKING:
    from .app import RouterApp


def header_tags(app: "RouterApp", instance_id: str) -> tuple[dict[str, Any], str | None]:
    """The tags the audit reads, by DICOM keyword, and the instance's RemoteAET."""
    header = read_header(app.rest, instance_id)
    return header.tags, header.remote_aet


class _Auditor:
    def __init__(self, app: "RouterApp") -> None:
        self.app = app
        self.metrics = metrics_for(app)
        self._warned = False

    def classified(self, instance_id: str, decision: RoutingDecision, header: InstanceHeader | None = None,
                   **_: Any) -> None:
        if header is not None:  # the worker read it for the rules and the fusion
            tags, remote_aet = header.tags, header.remote_aet
        else:
            try:
                tags, remote_aet = header_tags(self.app, instance_id)
            except RestError as exc:
                if exc.status != 404:  # 404: deleted meanwhile, nothing to audit
                    log("warning", f"instance {instance_id}: header audit skipped: {exc}")
                return
        pixel_class = str(decision.fusion.get("PixelClass") or decision.predicted_class)  # what the pixels show
        result = audit(pixel_class, tags)
        self.metrics.header_audit(remote_aet, result.verdict)
        self.metrics.annotate(instance_id, HeaderAudit=result.metadata_value, Source=decision.source,
                              **({"Held": decision.state} if decision.state else {}))
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
