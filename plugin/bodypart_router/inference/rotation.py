"""Rotation from a film and its three quarter turns: the rule that serving and training's
evaluation share.

Where the rotation head is unsure of a film, it is asked again about the film turned by 90, 180
and 270 degrees. A film that needs a clockwise turn of ``r`` quarters to be upright needs
``r + k`` once it has been turned ``k`` quarters counter-clockwise, so each copy's answer,
shifted back by ``k``, votes for the same ``r``; the four votes are averaged. A head that
leans towards one answer whatever the film (films whose upright is a convention it learned from
few examples: cervical spines, pelvis, limbs) then no longer decides alone
(``docs/decisions.md``, "Rotation from a film and its quarter turns").
"""

from __future__ import annotations

import numpy as np

#: A first answer whose top probability reaches this is taken without the turned copies.
SURE = 0.9
#: Counter-clockwise quarter turns of the copies asked about, in the order they are stacked.
TURNS = (1, 2, 3)


def needs_turns(p_rotation: np.ndarray) -> np.ndarray:
    """``[N]``: where the first ``[N, 4]`` rotation answer is unsure enough to ask the copies."""
    return np.asarray(p_rotation, dtype=np.float64).max(axis=-1) < SURE


def turned(model_input: np.ndarray, quarter_turns: int) -> np.ndarray:
    """A ``[..., H, W]`` model input turned ``quarter_turns`` x 90 degrees counter-clockwise."""
    return np.ascontiguousarray(np.rot90(model_input, quarter_turns, axes=(-2, -1)))


def combine(first: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """``[N, 4]`` rotation probabilities from the first answer ``[N, 4]`` and those of the copies
    turned by ``TURNS`` ``[len(TURNS), N, 4]``: each copy's answer shifted back by its turn,
    then the four averaged."""
    votes = [np.asarray(first, dtype=np.float64)]
    for k, p in zip(TURNS, np.asarray(copies, dtype=np.float64), strict=True):
        votes.append(np.roll(p, -k, axis=-1))  # vote[r] = p[(r + k) % 4]
    return np.mean(votes, axis=0)


def decide(first: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """The served ``[N, 4]`` rotation: the first answer where it is sure, else :func:`combine`.
    ``copies`` is read only where it is needed (it may hold anything elsewhere)."""
    first = np.asarray(first, dtype=np.float64)
    return np.where(needs_turns(first)[:, None], combine(first, copies), first)
