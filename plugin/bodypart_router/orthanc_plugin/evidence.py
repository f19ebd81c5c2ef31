"""What the rules and the header fusion read about an instance, besides its pixels.

An instance this node received gets its header from the dataset Orthanc had already parsed for
``OnStoredInstance`` (:class:`HeaderCache`): no index read at all. Otherwise (found in the
changes log, after a restart, on another node), the tags come from Orthanc's index (patient, study, series and instance main tags: one
GET each, no file read). Only when a rule names an attribute Orthanc does not index (for
example ``ViewPosition``), or the header names the chest and gives no age, is the file's
header read once (``/instances/{id}/simplified-tags``). The calling AET is the ``RemoteAET``
metadata Orthanc records for instances received by C-STORE.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..routing.audit import REGION_TAGS, Region, regions_in
from ..config import RouterConfig
from ..routing.ingest_headers import HeaderCache, InstanceHeader
from .host import OrthancRest

__all__ = ["HeaderCache", "InstanceHeader", "read_header", "rule_keywords"]


def rule_keywords(config: RouterConfig) -> frozenset[str]:
    """DICOM keywords the rules test (``Tags.<keyword>`` conditions), and View Position when a rule
    looks at the view (the header gives it when the model does not)."""
    keywords = {subject[5:] for rule in config.rules for subject, _ in rule.conditions if subject.startswith("Tags.")}
    if any(s == "View" for rule in config.rules for s, _ in rule.conditions) or \
            any(k == "View" for rule in config.rules for k, _ in rule.require):
        keywords.add("ViewPosition")
    return frozenset(keywords)


def _names_chest(tags: dict[str, Any]) -> bool:
    return any(Region.CHEST in regions_in(str(tags.get(k) or "")) for k in REGION_TAGS)


def read_header(rest: OrthancRest, instance_id: str, needed: Iterable[str] = (),
                cache: HeaderCache | None = None) -> InstanceHeader:
    """The instance's tags by keyword and its RemoteAET. Raises OrthancError (404: deleted)."""
    cached = cache.take(instance_id) if cache is not None else None
    if cached is not None:
        return cached
    instance = rest.get_json(f"/instances/{instance_id}")
    series = rest.get_json(f"/series/{instance['ParentSeries']}")
    study = rest.get_json(f"/studies/{series['ParentStudy']}")
    tags: dict[str, Any] = {
        **study.get("PatientMainDicomTags", {}),
        **study.get("MainDicomTags", {}),
        **series.get("MainDicomTags", {}),
        **instance.get("MainDicomTags", {}),
    }
    meta = rest.get_json(f"/instances/{instance_id}/metadata?expand")
    missing = {k for k in needed if k not in tags}
    if not tags.get("PatientAge") and not tags.get("PatientBirthDate") and _names_chest(tags):
        missing.add("PatientAge")  # adult versus pediatric chest
    if missing:
        full = rest.get_json(f"/instances/{instance_id}/simplified-tags")
        for k in missing:
            if isinstance(full.get(k), (str, int, float)):
                tags[k] = full[k]
    return InstanceHeader(tags, meta.get("RemoteAET"), series.get("ID"), study.get("ID"))
