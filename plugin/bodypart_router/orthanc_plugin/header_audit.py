"""Header audit in Orthanc: after each classification, compare the header with the pixels.

The verdict (:mod:`bodypart_router.routing.audit`) is counted here per sending station (the
``RemoteAET`` metadata Orthanc records) for the metrics and the status page; the worker writes
it with the rest of the result (``HeaderAudit`` in ``BodyPartResult``, and
``BodyPartHeaderAudit`` where it is declared in ``UserMetadata``), in the same write.

The tags are those the worker read for the rules and the header fusion (see evidence.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..routing.audit import audit
from ..orthanc_api import OrthancError
from ..forwarding.events import InstanceClassified
from ..routing.decision import RoutingDecision
from .evidence import read_header
from .monitoring import metrics_for

LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .app import RouterApp


def audit_value(decision: RoutingDecision, tags: dict[str, Any]) -> str:
    """The verdict as stored in the result: what the pixels show against what the header says."""
    return header_verdict(decision, tags).metadata_value


def header_verdict(decision: RoutingDecision, tags: dict[str, Any]) -> Any:
    pixel_class = str(decision.fusion.get("PixelClass") or decision.predicted_class)  # what the pixels show
    return audit(pixel_class, tags)


def header_tags(app: "RouterApp", instance_id: str) -> tuple[dict[str, Any], str | None]:
    """The tags the audit reads, by DICOM keyword, and the instance's RemoteAET."""
    header = read_header(app.rest, instance_id)
    return header.tags, header.remote_aet


class _Auditor:
    def __init__(self, app: "RouterApp") -> None:
        self.app = app
        self.metrics = metrics_for(app)

    def classified(self, event: InstanceClassified) -> None:
        instance_id, decision = event.instance_id, event.decision
        if event.tags is not None:  # the worker read the header for the rules and the fusion
            tags, remote_aet = dict(event.tags), event.remote_aet
        else:
            try:
                tags, remote_aet = header_tags(self.app, instance_id)
            except OrthancError as exc:
                if exc.status != 404:  # 404: deleted meanwhile, nothing to audit
                    LOGGER.warning(f"instance {instance_id}: header audit skipped: {exc}")
                return
        result = header_verdict(decision, tags)
        self.metrics.header_audit(remote_aet, result.verdict)
        self.metrics.annotate(instance_id, HeaderAudit=result.metadata_value, Source=decision.source,
                              **({"Held": decision.state} if decision.state else {}))


def register(app: "RouterApp") -> None:
    if app.enabled:
        app.events.subscribe(InstanceClassified, _Auditor(app).classified)
