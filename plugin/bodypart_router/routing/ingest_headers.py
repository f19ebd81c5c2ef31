"""The header of an instance as the router reads it, captured at ingest when it can be.

``OnStoredInstance`` hands the router the dataset Orthanc has just parsed; the rules, the
header fusion and the audit need a few of its tags, its calling AET and its series and study.
Keeping them from there (:class:`HeaderCache`) spares the index the reads of
:func:`~bodypart_router.orthanc_plugin.evidence.read_header` for every instance received on
this node.

Orthanc names a patient, study, series and instance by the SHA-1 of its identifiers joined by
``|`` (Patient ID; then Study, Series and SOP Instance UIDs), written as five groups of eight
hex digits. The router uses this to know an instance's series and study from the dataset that
``OnStoredInstance`` already parsed, instead of reading them from the index. This module never
imports ``orthanc``.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InstanceHeader:
    tags: dict[str, Any]
    remote_aet: str | None
    series_id: str | None = None
    study_id: str | None = None


def orthanc_id(*identifiers: str) -> str:
    """``orthanc_id(patient_id, study_uid, series_uid)`` is the series' Orthanc ID, and so on."""
    digest = hashlib.sha1("|".join(identifiers).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


#: Longest tag value kept from an ingested dataset (the rules and the audit read short strings).
MAX_VALUE_LENGTH = 256

#: Value representations whose values are never tags the router reads (binary, sequences).
_SKIPPED_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UN"})


def _text(value: Any) -> str:
    """A value as Orthanc's "human" JSON writes it: multiple values joined by a backslash."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def header_tags(data: bytes, max_chars: int) -> dict[str, Any]:
    """The top-level public tags of the DICOM file ``data`` as ``{keyword: text}``, with values
    longer than ``max_chars`` bytes left out without being read or decoded.

    Orthanc's JSON of a dataset decodes every text value before it drops the long ones, which
    takes seconds for a text element of hundreds of megabytes, on the ingest path. pydicom skips
    such values by their length. Values are text as in Orthanc's JSON; sequences and binary
    values are left out (the router reads neither)."""
    import pydicom  # the plugin's environment has it; importing here keeps this module light

    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=max_chars, force=True)
    tags: dict[str, Any] = {}
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag, keep_deferred=True)
        if tag.is_private or tag.group in (0x0000, 0x0002) or raw is None:
            continue
        vr = getattr(raw, "VR", None)
        if vr in _SKIPPED_VRS or getattr(raw, "length", 0) > max_chars or getattr(raw, "value", b"") is None:
            continue
        try:
            element = dataset[tag]
        except Exception:  # a value pydicom cannot decode: Orthanc's JSON would not help either
            continue
        if not element.keyword or element.VR in _SKIPPED_VRS:
            continue
        tags[element.keyword] = None if element.value is None or element.value == "" else _text(element.value)
    return tags


class HeaderCache:
    """Headers of the instances this node just received, until a worker takes them (bounded).

    :meth:`put` runs in ``OnStoredInstance``, on Orthanc's ingest path: it only keeps a reference
    to the tags already parsed there; filtering them and computing the IDs wait for :meth:`take`,
    in a worker thread, once the burst of stores is over."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[Mapping[str, Any], str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, instance_id: str, tags: Mapping[str, Any], remote_aet: str | None) -> None:
        """From ``OnStoredInstance``'s simplified tags (which the caller no longer changes)."""
        with self._lock:
            self._items[instance_id] = (tags, remote_aet)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def take(self, instance_id: str) -> InstanceHeader | None:
        """The header, once; None when unknown, or when the IDs computed from its tags are not
        Orthanc's own (then the series and study IDs could not be trusted)."""
        with self._lock:
            entry = self._items.pop(instance_id, None)
        if entry is None:
            return None
        tags, remote_aet = entry
        uids = [str(tags.get(k) or "") for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                                  "SOPInstanceUID")]
        if orthanc_id(*uids) != instance_id:
            return None
        kept = {k: v for k, v in tags.items()
                if isinstance(v, (int, float)) or isinstance(v, str) and len(v) <= MAX_VALUE_LENGTH}
        return InstanceHeader(kept, remote_aet or None, orthanc_id(*uids[:3]), orthanc_id(*uids[:2]))
