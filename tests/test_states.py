"""The state vocabulary: every stored string parses back to its member, and the kinds agree."""

from __future__ import annotations

import pytest
from bodypart_router.states import CircuitState, DeliveryState, InstanceState, Kind, Reason

#: The strings the router has always stored: SQLite, BodyPartState, REST answers, metric labels.
STORED = {
    "queued", "processing", "backfill", "elsewhere", "awaiting-series", "classified", "forwarded",
    "skipped:no-pixel-data", "skipped:non-image-sop-class", "skipped:non-projection-modality", "skipped:not-dicom",
    "failed:unsupported-transfer-syntax", "failed:undecodable-pixels", "failed:inconsistent-pixels",
    "failed:image-too-large", "failed:invalid-attribute", "failed:empty-file", "failed:model-error",
    "failed:unreadable", "failed:backfill-error", "failed:dead-letter",
    "held:frontal", "held:lateral", "held:rotated-0", "held:rotated-90", "held:rotated-180", "held:rotated-270",
    "held:inverted", "held:not-inverted",
}


def test_every_stored_string_is_a_member_and_formats_back_unchanged() -> None:
    assert {s.value for s in InstanceState} == STORED
    for text in STORED:
        state = InstanceState(text)
        assert str(state) == f"{state}" == text


def test_a_reason_belongs_to_one_kind_and_names_one_state() -> None:
    for reason in Reason:
        state = InstanceState.of(reason)
        assert state.reason is reason and state.kind is reason.kind
        assert state == f"{reason.kind.value}:{reason.value}"
    with_reason = [s for s in InstanceState if s.reason is not None]
    assert len(with_reason) == len(Reason)  # no state with a reason outside the vocabulary


def test_states_without_a_reason() -> None:
    plain = [s for s in InstanceState if s.reason is None]
    assert plain == [InstanceState.QUEUED, InstanceState.PROCESSING, InstanceState.BACKFILL, InstanceState.ELSEWHERE,
                     InstanceState.AWAITING_SERIES, InstanceState.CLASSIFIED, InstanceState.FORWARDED]
    assert all(s.kind is None and ":" not in s for s in plain)


@pytest.mark.parametrize("kind, count", [(Kind.SKIPPED, 4), (Kind.FAILED, 10), (Kind.HELD, 8)])
def test_states_of_a_kind(kind: Kind, count: int) -> None:
    states = InstanceState.of_kind(kind)
    assert len(states) == count and all(s.startswith(f"{kind}:") for s in states)
    assert set(InstanceState.of_kind(Kind.SKIPPED, Kind.FAILED)) == {
        s for s in InstanceState if s.kind in (Kind.SKIPPED, Kind.FAILED)}


def test_skip_reasons_are_the_ones_that_are_not_errors() -> None:
    assert {r for r in Reason if r.is_skip} == {Reason.NO_PIXEL_DATA, Reason.NON_IMAGE_SOP,
                                                  Reason.NON_PROJECTION_MODALITY, Reason.NOT_DICOM}


def test_final_states_are_those_left_to_nobody() -> None:
    final = {s for s in InstanceState if s.is_final}
    assert final == {InstanceState.FORWARDED, *InstanceState.of_kind(Kind.SKIPPED, Kind.FAILED, Kind.HELD)}


def test_reading_what_another_process_wrote() -> None:
    assert InstanceState.read("failed:dead-letter") is InstanceState.FAILED_DEAD_LETTER
    assert InstanceState.read("") is None and InstanceState.read(None) is None
    assert InstanceState.read("failed:something-newer") is None
    with pytest.raises(ValueError):
        InstanceState("failed:something-newer")


def test_hold_reasons_from_the_models_outputs() -> None:
    assert [Reason.rotated(d) for d in (0, 90, 180, 270)] == [
        Reason.ROTATED_0, Reason.ROTATED_90, Reason.ROTATED_180, Reason.ROTATED_270]
    assert Reason("lateral") is Reason.LATERAL and Reason("frontal") is Reason.FRONTAL  # the model's views


def test_delivery_and_circuit_states_are_the_stored_strings() -> None:
    assert {s.value for s in DeliveryState} == {"pending", "submitted", "verify", "delivered", "dead", "shadow"}
    assert [s for s in DeliveryState if s.outstanding] == [
        DeliveryState.PENDING, DeliveryState.SUBMITTED, DeliveryState.VERIFY]
    assert {s.value for s in CircuitState} == {"closed", "open"}  # no half-open: it was never entered
