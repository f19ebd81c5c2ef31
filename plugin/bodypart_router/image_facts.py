"""What the model says about a film besides its class: region, projection, turn and polarity.

One place turns those outputs into the values the router shows everywhere (instance metadata,
status page, Explorer panel, metrics), so that each reads the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Metadata names, in the order they are written (declared in ``UserMetadata``).
REGION_METADATA = "BodyPartRegion"
VIEW_METADATA = "BodyPartView"
ROTATION_METADATA = "BodyPartRotation"
INVERTED_METADATA = "BodyPartInverted"
METADATA_NAMES: tuple[str, ...] = (REGION_METADATA, VIEW_METADATA, ROTATION_METADATA, INVERTED_METADATA)


@dataclass(frozen=True)
class ImageFacts:
    """The model's secondary outputs for one film; ``None`` where the model has no such output."""

    region: str | None = None
    region_score: float | None = None
    view: str | None = None
    view_score: float | None = None
    rotation: int | None = None
    rotation_score: float | None = None
    inverted: bool | None = None
    inverted_score: float | None = None

    @classmethod
    def of(cls, result: Any) -> "ImageFacts":
        """From a :class:`~bodypart_router.classifier.Prediction` or an engine ``Outcome``."""
        return cls(**{name: getattr(result, name, None) for name in cls.__dataclass_fields__})

    @classmethod
    def from_evidence(cls, evidence: dict[str, Any] | None) -> "ImageFacts":
        """From the evidence the router keeps per instance (values only, no scores)."""
        evidence = evidence or {}
        return cls(region=evidence.get("region"), view=evidence.get("view"), rotation=evidence.get("rotation"),
                   inverted=evidence.get("inverted"))

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

    def as_json(self) -> dict[str, Any]:
        """The fields with a value, for the status JSON and the instance endpoint."""
        return {"Region": self.region, "RegionScore": self.region_score, "View": self.view,
                "ViewScore": self.view_score, "Rotation": self.rotation, "RotationScore": self.rotation_score,
                "Inverted": self.inverted, "InvertedScore": self.inverted_score}
