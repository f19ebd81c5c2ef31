"""The router's one state vocabulary: instance states, delivery states, circuit states, reasons.

Every state the router stores or shows (its SQLite work list, Orthanc's ``BodyPartState``
metadata, REST answers, the status page, metric labels) is a member of one of these enums.
They are :class:`~enum.StrEnum`\\ s: a member *is* the string written, so what reaches SQLite,
Orthanc and JSON is byte for byte what it always was, and a stored string is read back with
``InstanceState(text)`` (a :class:`ValueError` for anything outside the vocabulary).

An instance that gets no class carries a :class:`Reason`, written ``<kind>:<reason>``:
``skipped:`` (valid input that is not an X-ray), ``failed:`` (a broken X-ray, or a forward
given up) and ``held:`` (a rule's quality requirement failed). Each reason belongs to exactly
one kind, so ``InstanceState.of(Reason.LATERAL)`` is ``held:lateral`` and
``InstanceState("failed:dead-letter").reason`` is ``Reason.DEAD_LETTER``: code asks the enum,
it never cuts strings at the colon. SQL selects a kind with ``state IN (...)`` over
:meth:`InstanceState.of_kind`, never with ``LIKE``.

This module imports nothing from the router: every layer may use it.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """Why an instance has no (routable) class: the part of its state before the colon."""

    SKIPPED = "skipped"  # not an X-ray (CT, MR, SR, no pixel data...): out of scope, not an error
    FAILED = "failed"  # a broken X-ray, or forwards given up
    HELD = "held"  # classified, but a quality requirement of its rule failed (QualityRoutes)


class Reason(StrEnum):
    """Every reason the router gives, each of one :class:`Kind` (see :attr:`kind`)."""

    # skipped: valid input that is simply not a classifiable radiograph
    NO_PIXEL_DATA = "no-pixel-data"  # no (7FE0,0010) Pixel Data
    NON_IMAGE_SOP = "non-image-sop-class"  # SR, PR, KO, encapsulated PDF ...
    NON_PROJECTION_MODALITY = "non-projection-modality"  # CT, MR, US, NM, PT ...
    NOT_DICOM = "not-dicom"  # neither DICOM nor a readable image file
    # failed: claims to be an X-ray but cannot be decoded sanely
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported-transfer-syntax"
    UNDECODABLE_PIXELS = "undecodable-pixels"
    INCONSISTENT_PIXELS = "inconsistent-pixels"  # Rows/Columns/BitsAllocated vs data length
    IMAGE_TOO_LARGE = "image-too-large"  # over the decode-size limit
    INVALID_ATTRIBUTE = "invalid-attribute"  # a required attribute missing or absurd
    EMPTY_FILE = "empty-file"
    MODEL_ERROR = "model-error"
    # failed: the router's own work on it did not succeed
    UNREADABLE = "unreadable"  # the file or its header could not be read, attempts spent
    BACKFILL_ERROR = "backfill-error"  # a backfill could not handle it (the backfill's own record)
    DEAD_LETTER = "dead-letter"  # a forward spent its Retry.MaxAttempts
    # held: the first quality requirement the film failed (what it is, not what was required)
    FRONTAL = "frontal"
    LATERAL = "lateral"
    ROTATED_0 = "rotated-0"
    ROTATED_90 = "rotated-90"
    ROTATED_180 = "rotated-180"
    ROTATED_270 = "rotated-270"
    INVERTED = "inverted"
    NOT_INVERTED = "not-inverted"

    @property
    def kind(self) -> Kind:
        return _KIND_OF[self]

    @property
    def is_skip(self) -> bool:
        """True when the input is fine but out of scope (stored as ``skipped:``)."""
        return _KIND_OF[self] is Kind.SKIPPED

    @classmethod
    def rotated(cls, degrees: int) -> Reason:
        """The hold reason of a film stored turned by ``degrees`` (0, 90, 180, 270)."""
        return cls(f"rotated-{degrees}")


_KIND_OF: dict[Reason, Kind] = {
    **{r: Kind.SKIPPED for r in (Reason.NO_PIXEL_DATA, Reason.NON_IMAGE_SOP, Reason.NON_PROJECTION_MODALITY,
                                  Reason.NOT_DICOM)},
    **{r: Kind.HELD for r in (Reason.FRONTAL, Reason.LATERAL, Reason.ROTATED_0, Reason.ROTATED_90,
                               Reason.ROTATED_180, Reason.ROTATED_270, Reason.INVERTED, Reason.NOT_INVERTED)},
}
_KIND_OF.update({r: Kind.FAILED for r in Reason if r not in _KIND_OF})


class InstanceState(StrEnum):
    """Where an instance stands in the router (the ``state`` column and ``BodyPartState``)."""

    QUEUED = "queued"  # recorded at ingest, waiting for a worker
    PROCESSING = "processing"  # taken by a worker (back to queued if the process dies)
    BACKFILL = "backfill"  # planned by a backfill, which classifies it itself
    ELSEWHERE = "elsewhere"  # another node of a shared index claimed it (claims.py)
    AWAITING_SERIES = "awaiting-series"  # DecisionLevel series: classified, its series not decided
    CLASSIFIED = "classified"  # classified; its forwards (if any) are not all finished
    FORWARDED = "forwarded"  # every forward of its model arrived
    SKIPPED_NO_PIXEL_DATA = "skipped:no-pixel-data"
    SKIPPED_NON_IMAGE_SOP = "skipped:non-image-sop-class"
    SKIPPED_NON_PROJECTION_MODALITY = "skipped:non-projection-modality"
    SKIPPED_NOT_DICOM = "skipped:not-dicom"
    FAILED_UNSUPPORTED_TRANSFER_SYNTAX = "failed:unsupported-transfer-syntax"
    FAILED_UNDECODABLE_PIXELS = "failed:undecodable-pixels"
    FAILED_INCONSISTENT_PIXELS = "failed:inconsistent-pixels"
    FAILED_IMAGE_TOO_LARGE = "failed:image-too-large"
    FAILED_INVALID_ATTRIBUTE = "failed:invalid-attribute"
    FAILED_EMPTY_FILE = "failed:empty-file"
    FAILED_MODEL_ERROR = "failed:model-error"
    FAILED_UNREADABLE = "failed:unreadable"
    FAILED_BACKFILL_ERROR = "failed:backfill-error"
    FAILED_DEAD_LETTER = "failed:dead-letter"
    HELD_FRONTAL = "held:frontal"
    HELD_LATERAL = "held:lateral"
    HELD_ROTATED_0 = "held:rotated-0"
    HELD_ROTATED_90 = "held:rotated-90"
    HELD_ROTATED_180 = "held:rotated-180"
    HELD_ROTATED_270 = "held:rotated-270"
    HELD_INVERTED = "held:inverted"
    HELD_NOT_INVERTED = "held:not-inverted"

    @classmethod
    def of(cls, reason: Reason) -> InstanceState:
        """The state that carries ``reason``: ``of(Reason.LATERAL)`` is ``held:lateral``."""
        return _STATE_OF[reason]

    @classmethod
    def of_kind(cls, *kinds: Kind) -> tuple[InstanceState, ...]:
        """Every state of the given kinds, e.g. for ``state IN (...)`` in SQL."""
        return tuple(s for s in cls if _REASON_OF.get(s) is not None and _REASON_OF[s].kind in kinds)

    @classmethod
    def read(cls, text: str | None) -> InstanceState | None:
        """A state as another process wrote it (metadata, an older database); None when it is
        absent or not in this router's vocabulary."""
        try:
            return cls(text) if text else None
        except ValueError:
            return None

    @property
    def reason(self) -> Reason | None:
        """The reason of a ``skipped:`` / ``failed:`` / ``held:`` state, else None."""
        return _REASON_OF.get(self)

    @property
    def kind(self) -> Kind | None:
        reason = _REASON_OF.get(self)
        return None if reason is None else reason.kind

    @property
    def is_final(self) -> bool:
        """Nothing is left to do on the instance (another node's claim on it need not be watched)."""
        return self is InstanceState.FORWARDED or self.kind is not None


#: Built from the two enums: importing this module fails if a reason has no state or a state
#: carries a reason of another kind, so the vocabulary cannot drift apart.
_REASON_OF: dict[InstanceState, Reason] = {InstanceState(f"{r.kind}:{r}"): r for r in Reason}
_STATE_OF: dict[Reason, InstanceState] = {r: s for s, r in _REASON_OF.items()}


class DeliveryState(StrEnum):
    """One forward of an instance to one destination with one model (the ``deliveries`` table)."""

    PENDING = "pending"  # to be sent when its next_attempt_at comes
    SUBMITTED = "submitted"  # handed to Orthanc (a job); recorded before Orthanc is asked
    VERIFY = "verify"  # outcome unknown (crash, forgotten job): ask the destination before resending
    DELIVERED = "delivered"  # arrived
    DEAD = "dead"  # Retry.MaxAttempts spent: a dead letter, until a person resubmits it
    SHADOW = "shadow"  # what ShadowMode would have sent; never sent

    @property
    def outstanding(self) -> bool:
        """Not arrived yet and still being worked on (waiting, in flight, or to verify)."""
        return self in OUTSTANDING


#: Deliveries not arrived yet that the forwarder is still working on.
OUTSTANDING: tuple[DeliveryState, ...] = (DeliveryState.PENDING, DeliveryState.SUBMITTED, DeliveryState.VERIFY)


class CircuitState(StrEnum):
    """A destination's circuit breaker (forwarding.circuit). While ``open`` one probe at a
    time is let through; there is no separate half-open state."""

    CLOSED = "closed"
    OPEN = "open"
