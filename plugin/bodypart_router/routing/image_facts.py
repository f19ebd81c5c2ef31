"""What the model says about a film besides its class: region, projection, turn and polarity.

One place turns those outputs into the values the router shows everywhere (instance metadata,
status page, Explorer panel, metrics), so that each reads the same words.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..config import SEPARATE_METADATA
from ..inference.classes import SecondaryOutputs
from .audit import MAX_STATIONS, NO_AET, OTHER_AETS

#: Metadata names, in the order they are written (declared in ``UserMetadata``; see config/schema.py).
REGION_METADATA = SEPARATE_METADATA["Region"]
VIEW_METADATA = SEPARATE_METADATA["View"]
ROTATION_METADATA = SEPARATE_METADATA["Rotation"]
INVERTED_METADATA = SEPARATE_METADATA["Inverted"]
METADATA_NAMES: tuple[str, ...] = (REGION_METADATA, VIEW_METADATA, ROTATION_METADATA, INVERTED_METADATA)


@dataclass(frozen=True)
class ImageFacts(SecondaryOutputs):
    """The model's secondary outputs for one film; ``None`` where the model has no such output."""

    @classmethod
    def of(cls, result: Any) -> "ImageFacts":
        """From a :class:`~bodypart_router.inference.classifier.Prediction` or an engine ``Outcome``."""
        return cls(**{name: getattr(result, name, None) for name in cls.__dataclass_fields__})

    @classmethod
    def from_evidence(cls, evidence: dict[str, Any] | None) -> "ImageFacts":
        """From the evidence the router keeps per instance (values only, no scores)."""
        evidence = evidence or {}
        return cls(region=evidence.get("region"), view=evidence.get("view"), rotation=evidence.get("rotation"),
                   inverted=evidence.get("inverted"))

    @property
    def known(self) -> bool:
        """The model gave at least one of these outputs."""
        return any(v is not None for v in (self.region, self.view, self.rotation, self.inverted))

    @property
    def turned(self) -> bool:
        """Stored turned by a quarter or more (not upright as a radiologist hangs it)."""
        return self.rotation not in (None, 0)

    def metadata(self) -> dict[str, str]:
        """``{metadata name: value}`` for the outputs the model has."""
        out: dict[str, str] = {}
        if self.region is not None:
            out[REGION_METADATA] = self.region
        if self.view is not None:
            out[VIEW_METADATA] = self.view
        if self.rotation is not None:
            out[ROTATION_METADATA] = str(self.rotation)
        if self.inverted is not None:
            out[INVERTED_METADATA] = "true" if self.inverted else "false"
        return out


class QualityTally:
    """Per sending station (RemoteAET): films seen, and how many were stored turned, inverted or
    lateral; per region: films classified. Thread-safe, at most ``MAX_STATIONS`` stations."""

    FINDINGS = ("Films", "Turned", "Inverted", "Lateral")

    def __init__(self, max_stations: int = MAX_STATIONS) -> None:
        self._lock = threading.Lock()
        self._stations: dict[str, Counter[str]] = {}
        self._regions: Counter[str] = Counter()
        self._max = max_stations

    def record(self, remote_aet: str | None, facts: ImageFacts) -> None:
        station = (remote_aet or "").strip() or NO_AET
        with self._lock:
            if station not in self._stations and len(self._stations) >= self._max:
                station = OTHER_AETS
            counts = self._stations.setdefault(station, Counter(dict.fromkeys(self.FINDINGS, 0)))
            counts["Films"] += 1
            counts["Turned"] += int(facts.turned)
            counts["Inverted"] += int(bool(facts.inverted))
            counts["Lateral"] += int(facts.view == "lateral")
            if facts.region is not None:
                self._regions[facts.region] += 1

    def stations(self) -> dict[str, dict[str, int]]:
        """``{aet: {"Films": n, "Turned": n, "Inverted": n, "Lateral": n}}``, sorted by station."""
        with self._lock:
            return {aet: {k: int(c[k]) for k in self.FINDINGS} for aet, c in sorted(self._stations.items())}

    def regions(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._regions.items()))
