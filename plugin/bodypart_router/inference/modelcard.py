"""Tie a model file to its model card: the card's ``SHA-256:`` line must match the file.

A model that differs from its card (tampered, corrupted, or simply another
model dropped in its place) is refused unless the configuration explicitly
names its hash, so nobody routes patients' images with a model whose figures
nobody has published.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import BodyPartRouterError
from .classifier import file_sha256

#: ``SHA-256: <hex>``, tolerating Markdown emphasis and code spans (``**SHA-256:** `<hex>` ``).
_SHA_LINE = re.compile(r"SHA-?256[*_\s]*[:=][*_\s]*`?([0-9a-fA-F]{64})\b")


class ModelIntegrityError(BodyPartRouterError, RuntimeError):
    """The model file does not match its model card or the hashes allowed by the configuration."""


def expected_sha256(card_path: str | os.PathLike) -> str:
    """The hex digest on the card's ``SHA-256: <64 hex>`` line (lower case)."""
    path = Path(card_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read the model card {path}: {exc.strerror or exc}") from exc
    match = _SHA_LINE.search(text)
    if match is None:
        raise ModelIntegrityError(f"model card {path} has no 'SHA-256: <64 hex digits>' line")
    return match.group(1).lower()


#: File name of the model card, expected beside the model.
CARD_NAME = "MODEL_CARD.md"


def verify_model(
    model_path: str | os.PathLike,
    card_path: str | os.PathLike | None = None,
    allowed_sha256: Iterable[str] | str | None = None,
) -> str:
    """Return the model's SHA-256 if its card (or ``allowed_sha256``) vouches for it, else raise.

    ``card_path`` defaults to ``MODEL_CARD.md`` beside the model.
    ``allowed_sha256`` are extra digests the operator accepts on purpose (for
    example a locally retrained model); a model matching one of them passes
    whatever its card says.
    """
    if card_path is None:
        beside = Path(model_path).with_name(CARD_NAME)
        card_path = beside if beside.is_file() else None
    try:
        actual = file_sha256(model_path)
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read the model {model_path}: {exc.strerror or exc}") from exc
    allowed = {allowed_sha256} if isinstance(allowed_sha256, str) else set(allowed_sha256 or ())
    if actual in {a.strip().lower() for a in allowed}:
        return actual
    if card_path is None:
        raise ModelIntegrityError(
            f"model {model_path} (sha256 {actual}) has no model card and its hash is not in the allowed list; "
            "add it to the configuration's allowed model hashes to use it on purpose"
        )
    expected = expected_sha256(card_path)
    if actual != expected:
        raise ModelIntegrityError(
            f"model {model_path} has sha256 {actual} but its card {card_path} says {expected}: the file was "
            "changed or replaced. Restore the published model, or allow this hash explicitly in the configuration"
        )
    return actual
