"""The package's exception base, and typed reasons why an input cannot be classified.

Every exception the router defines derives from :class:`BodyPartRouterError` (most also from
the built-in class they always were, ``ValueError``, ``RuntimeError``...), so a caller can catch
the router's own errors apart from everything else.

Every failure the core can meet on real-world input is turned into a
:class:`NotClassifiable` carrying a short machine-readable ``reason`` (a member of the
router's one reason vocabulary, :class:`bodypart_router.states.Reason`, stored as
``skipped:<reason>`` or ``failed:<reason>``) and a human ``detail`` that names the DICOM tag
involved, like pydicom's messages do. Details never contain patient identifiers.
"""

from __future__ import annotations

from .states import InstanceState, Reason

__all__ = ["BodyPartRouterError", "NotClassifiable", "Reason"]


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
    def state(self) -> InstanceState:
        """Value for the ``BodyPartState`` metadata, e.g. ``skipped:non-projection-modality``."""
        return InstanceState.of(self.reason)
