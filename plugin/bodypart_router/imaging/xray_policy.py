"""Which DICOM instances count as classifiable radiographs.

Shared by the CLI (checks the dataset it decodes) and the Orthanc adapter (a
cheap check on tags inside OnStoredInstance, before anything is queued), so
both skip the same things for the same reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import NotClassifiable, Reason

#: Projection radiography modalities routed by default (DICOM PS3.3 C.7.3.1.1.1).
DEFAULT_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "DR", "RG", "PX", "OT"})

#: Modalities that are images but not projection radiographs.
NON_PROJECTION_MODALITIES: frozenset[str] = frozenset(
    {"CT", "MR", "US", "NM", "PT", "XA", "RF", "MG", "IO", "ES", "OP", "OCT", "SM", "IVUS", "ECG", "RTIMAGE"}
)

#: SOP classes that never hold a classifiable image (SR, PR, KO, encapsulated documents, RT plans...).
NON_IMAGE_SOP_CLASS_PREFIXES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.88.",    # Structured Reports and Key Object Selection
    "1.2.840.10008.5.1.4.1.1.11.",    # Presentation States
    "1.2.840.10008.5.1.4.1.1.104.",   # Encapsulated PDF / CDA / STL
    "1.2.840.10008.5.1.4.1.1.481.",   # RT objects
    "1.2.840.10008.5.1.4.1.1.9.",     # Waveforms
    "1.2.840.10008.5.1.4.1.1.66",     # Raw data, spatial registration, segmentation surfaces
)

#: Projection X-ray image storage SOP classes (CR, DX, digital intra-oral/mammo excluded, secondary capture).
DEFAULT_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",      # Computed Radiography Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",    # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
        "1.2.840.10008.5.1.4.1.1.7",      # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.2",    # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",    # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",    # Multi-frame True Color Secondary Capture
    }
)


#: What a Modality code and a UID look like; other values are not quoted in messages.
_MODALITY_SHAPE = re.compile(r"[A-Z_]{1,16}")
_UID_SHAPE = re.compile(r"[012](\.(0|[1-9][0-9]*))+")


def _quoted(value: str, shape: re.Pattern[str]) -> str:
    """A tag value fit for a message (messages reach logs): shown only when it has the shape of the
    code or UID it should be. A broken sender may shift fields, so anything else could be a
    patient's name, ID or birth date and is described by its length instead."""
    if shape.fullmatch(value) and len(value) <= 64:
        return value
    return f"an invalid value ({len(value)} characters)"


@dataclass(frozen=True)
class XrayPolicy:
    """What the router accepts.

    ``sop_classes`` empty means "any image SOP class that is not on the non-image list".
    A missing Modality (0008,0060) is accepted only when ``accept_missing_modality``.
    """

    modalities: frozenset[str] = DEFAULT_MODALITIES
    sop_classes: frozenset[str] = field(default=DEFAULT_SOP_CLASSES)
    accept_missing_modality: bool = True

    def check(self, modality: str | None, sop_class_uid: str | None) -> None:
        """Raise :class:`NotClassifiable` (a ``skipped`` reason) unless this is an X-ray to classify."""
        uid = (sop_class_uid or "").strip()
        if uid and uid.startswith(NON_IMAGE_SOP_CLASS_PREFIXES):
            raise NotClassifiable(Reason.NON_IMAGE_SOP, f"SOP Class UID (0008,0016) {_quoted(uid, _UID_SHAPE)} "
                                                        "holds no image")
        mod = (modality or "").strip().upper()
        if not mod:
            if not self.accept_missing_modality:
                raise NotClassifiable(Reason.NON_PROJECTION_MODALITY, "Modality (0008,0060) is missing")
        elif mod not in self.modalities:
            raise NotClassifiable(
                Reason.NON_PROJECTION_MODALITY,
                f"Modality (0008,0060) is {_quoted(mod, _MODALITY_SHAPE)}, not one of {', '.join(sorted(self.modalities))}",
            )
        if uid and self.sop_classes and uid not in self.sop_classes:
            raise NotClassifiable(
                Reason.NON_IMAGE_SOP,
                f"SOP Class UID (0008,0016) {_quoted(uid, _UID_SHAPE)} is not a configured X-ray storage class",
            )
