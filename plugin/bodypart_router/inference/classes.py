"""The five body-part groups of the DICOM Imaging Router paper, in model output order."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Final

#: Output order of the shipped model. ``models/labels.json`` fixes the same order.
CLASS_NAMES: Final[tuple[str, ...]] = (
    "abdominal",
    "adult_chest",
    "pediatric_chest",
    "spine",
    "others",
)

#: Class given to a prediction whose score is below the configured minimum.
UNCERTAIN: Final[str] = "uncertain"


def label_for(class_name: str) -> str:
    """Orthanc label for a class, e.g. ``adult_chest`` -> ``bodypart-adult-chest``.

    Orthanc labels allow only ``[A-Za-z0-9_-]``; dashes read better in Explorer.
    """
    return "bodypart-" + class_name.replace("_", "-")


#: Fine anatomical regions of the model's region output, in output order. The five classes stay
#: the routing contract; every region belongs to exactly one class (see ``REGION_CLASS``), except
#: ``chest``, which is adult or pediatric.
REGION_NAMES: Final[tuple[str, ...]] = (
    "chest",
    "abdomen",
    "pelvis_hip",
    "cervical_spine",
    "thoracic_spine",
    "lumbar_spine",
    "whole_spine",
    "skull",
    "dental",
    "shoulder_arm",
    "elbow_forearm",
    "hand_wrist",
    "thigh_knee_leg",
    "ankle_foot",
)

#: The class a region routes as (``chest`` is split by age between the two chest classes).
REGION_CLASS: Final[dict[str, str]] = {
    "chest": "adult_chest|pediatric_chest",
    "abdomen": "abdominal",
    "pelvis_hip": "others",
    "cervical_spine": "spine",
    "thoracic_spine": "spine",
    "lumbar_spine": "spine",
    "whole_spine": "spine",
    "skull": "others",
    "dental": "others",
    "shoulder_arm": "others",
    "elbow_forearm": "others",
    "hand_wrist": "others",
    "thigh_knee_leg": "others",
    "ankle_foot": "others",
}

#: Projection output, in output order.
VIEW_NAMES: Final[tuple[str, ...]] = ("frontal", "lateral")

#: Rotation output, in output order: the clockwise turn, in degrees, that makes the film upright.
ROTATIONS: Final[tuple[int, ...]] = (0, 90, 180, 270)


def region_classes(region: str) -> tuple[str, ...]:
    """The class(es) a region belongs to, e.g. ``pelvis_hip`` -> ``("others",)``."""
    return tuple(REGION_CLASS[region].split("|"))


@dataclass(frozen=True, kw_only=True)
class SecondaryOutputs:
    """Secondary outputs of a model that has them (``None`` for a five-class-only model): the
    fine anatomical region, ``frontal``/``lateral``, the clockwise turn in degrees that would
    make the film upright, and whether its polarity is wrong (bone dark)."""

    region: str | None = None
    region_score: float | None = None
    view: str | None = None
    view_score: float | None = None
    rotation: int | None = None
    rotation_score: float | None = None
    inverted: bool | None = None
    inverted_score: float | None = None
