"""A model is used only if its card (or the configuration) vouches for its exact bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bodypart_router.inference.classifier import file_sha256
from bodypart_router.inference.modelcard import ModelIntegrityError, expected_sha256, verify_model


@pytest.fixture()
def model_and_card(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "bodypart_router.onnx"
    model.write_bytes(b"pretend onnx bytes" * 100)
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"# Model card\n\nSome text.\n\nSHA-256: {file_sha256(model)}\n\nMore text.\n")
    return model, card


def test_expected_sha256_reads_the_card_line(model_and_card: tuple[Path, Path]) -> None:
    model, card = model_and_card
    assert expected_sha256(card) == file_sha256(model)


def test_card_with_backticks_and_upper_case_is_read(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("- **SHA-256:** `" + "AB" * 32 + "`\n")
    assert expected_sha256(card) == "ab" * 32


def test_matching_model_passes_with_explicit_or_default_card(model_and_card: tuple[Path, Path]) -> None:
    model, card = model_and_card
    assert verify_model(model, card) == file_sha256(model)
    assert verify_model(model) == file_sha256(model)  # MODEL_CARD.md beside the model


def test_tampered_model_is_refused(model_and_card: tuple[Path, Path]) -> None:
    model, card = model_and_card
    model.write_bytes(model.read_bytes() + b"\x00")
    with pytest.raises(ModelIntegrityError, match="changed or replaced"):
        verify_model(model, card)


def test_a_hash_named_by_the_configuration_is_accepted(model_and_card: tuple[Path, Path]) -> None:
    model, card = model_and_card
    model.write_bytes(b"a locally retrained model")
    digest = file_sha256(model)
    assert verify_model(model, card, allowed_sha256=[digest.upper()]) == digest
    assert verify_model(model, None, allowed_sha256=digest) == digest


def test_model_without_card_or_allowed_hash_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "other.onnx"
    model.write_bytes(b"something")
    with pytest.raises(ModelIntegrityError, match="no model card"):
        verify_model(model)


def test_card_without_a_hash_line_is_an_error(tmp_path: Path) -> None:
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# A card that forgot its checksum\n")
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        expected_sha256(card)
