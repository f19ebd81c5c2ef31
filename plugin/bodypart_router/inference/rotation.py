"""Rotation from a film and a turned copy: the rule that serving and training's evaluation share.

Where the rotation head is unsure of a film, it is asked again about the film turned by one
quarter counter-clockwise (as part of the second look, :mod:`.second_look`). A film that needs a
clockwise turn of ``r`` quarters to be upright needs ``r + 1`` once turned, so the copy's answer,
shifted back by one, votes for the same ``r``; the two votes are averaged. A head that leans
towards one answer whatever the film (films whose upright is a convention it learned from few
examples: cervical spines, pelvis, limbs) then no longer decides alone
(``docs/decisions.md``, "Second looks").
"""

from __future__ import annotations

import numpy as np

#: A first answer whose top probability reaches this is taken without the turned copy.
SURE = 0.8
#: Counter-clockwise quarter turns of the copy asked about.
TURN = 1


def needs_turns(p_rotation: np.ndarray) -> np.ndarray:
    """``[N]``: where the first ``[N, 4]`` rotation answer is unsure enough to ask the copy."""
    return np.asarray(p_rotation, dtype=np.float64).max(axis=-1) < SURE


def turned(model_input: np.ndarray, quarter_turns: int) -> np.ndarray:
    """A ``[..., H, W]`` model input turned ``quarter_turns`` x 90 degrees counter-clockwise."""
    return np.ascontiguousarray(np.rot90(model_input, quarter_turns, axes=(-2, -1)))


def combine(first: np.ndarray, copy: np.ndarray) -> np.ndarray:
    """``[N, 4]`` rotation probabilities from the first answer and that of the copy turned by
    ``TURN`` (both ``[N, 4]``): the copy's answer shifted back by the turn, then the two averaged."""
    shifted = np.roll(np.asarray(copy, dtype=np.float64), -TURN, axis=-1)  # shifted[r] = copy[(r + TURN) % 4]
    return (np.asarray(first, dtype=np.float64) + shifted) / 2.0


def decide(first: np.ndarray, copy: np.ndarray) -> np.ndarray:
    """The served ``[N, 4]`` rotation: the first answer where it is sure, else :func:`combine`.
    ``copy`` is read only where it is needed (it may hold anything elsewhere)."""
    first = np.asarray(first, dtype=np.float64)
    return np.where(needs_turns(first)[:, None], combine(first, copy), first)
