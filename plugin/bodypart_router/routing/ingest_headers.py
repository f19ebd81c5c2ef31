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
