"""The five body-part groups of the DICOM Imaging Router paper, in model output order."""

from __future__ import annotations

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
