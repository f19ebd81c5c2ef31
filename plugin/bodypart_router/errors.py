"""The package's exception base, and typed reasons why an input cannot be classified.

Every exception the router defines derives from :class:`BodyPartRouterError` (most also from
the built-in class they always were, ``ValueError``, ``RuntimeError``...), so a caller can catch
the router's own errors apart from everything else.

Every failure the core can meet on real-world input is turned into a
:class:`NotClassifiable` carrying a short machine-readable ``reason`` (stored in
Orthanc metadata as ``skipped:<reason>`` or ``failed:<reason>``) and a human
``detail`` that names the DICOM tag involved, like pydicom's messages do.
Details never contain patient identifiers.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Machine-readable reasons. ``skipped`` ones are not X-rays; ``failed`` ones are broken X-rays."""

    # --- skipped: valid input that is simply not a classifiable radiograph
    NO_PIXEL_DATA = "no-pixel-data"          # no (7FE0,0010) Pixel Data
    NON_IMAGE_SOP = "non-image-sop-class"    # SR, PR, KO, encapsulated PDF ...
    NON_PROJECTION_MODALITY = "non-projection-modality"  # CT, MR, US, NM, PT ...
    NOT_DICOM = "not-dicom"                  # neither DICOM nor a readable image file
    # --- failed: claims to be an X-ray but cannot be decoded sanely
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported-transfer-syntax"
    UNDECODABLE_PIXELS = "undecodable-pixels"
    INCONSISTENT_PIXELS = "inconsistent-pixels"  # Rows/Columns/BitsAllocated vs data length
    IMAGE_TOO_LARGE = "image-too-large"      # over the decode-size limit
    INVALID_ATTRIBUTE = "invalid-attribute"  # a required attribute missing or absurd
    EMPTY_FILE = "empty-file"
    MODEL_ERROR = "model-error"

    @property
    def is_skip(self) -> bool:
        """True when the input is fine but out of scope (stored as ``skipped:``)."""
        return self in _SKIPS


_SKIPS = {Reason.NO_PIXEL_DATA, Reason.NON_IMAGE_SOP, Reason.NON_PROJECTION_MODALITY, Reason.NOT_DICOM}


class BodyPartRouterError(Exception):
    """Base of every exception bodypart-router defines."""


class NotClassifiable(BodyPartRouterError):
    """An input that gets a reason instead of a class."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type, tuple[Reason, str]]:
        """Rebuild from (reason, detail) so the error survives a trip through a process pool."""
        return (type(self), (self.reason, self.detail))

    @property
    def state(self) -> str:
        """Value for the ``BodyPartState`` metadata, e.g. ``skipped:non-projection-modality``."""
        return ("skipped:" if self.reason.is_skip else "failed:") + self.reason.value
