"""The second look: one more image of a film, asked about where its polarity or rotation answer
is unsure.

The image is the film's negative, turned by one quarter counter-clockwise. Its polarity answer
is the negative's (:mod:`.polarity`: the polarity head does not care how a film is turned), and
its rotation answer is a turned copy's (:mod:`.rotation`: the rotation head does not care about
polarity). One image answers both questions, so a film costs at most two runs of the model
(``docs/decisions.md``, "Second looks").
"""

from __future__ import annotations

import numpy as np

from . import polarity, rotation


def image(model_input: np.ndarray) -> np.ndarray:
    """The second-look image of ``[..., H, W]`` model input(s)."""
    return polarity.negative(rotation.turned(model_input, rotation.TURN))


def needed(p_inverted: np.ndarray | None, p_rotation: np.ndarray | None) -> np.ndarray:
    """``[N]``: the films whose polarity (``[N]`` probability of inverted) or rotation (``[N, 4]``)
    answer is unsure; an output the model does not have counts as sure."""
    masks = []
    if p_inverted is not None:
        masks.append(polarity.needs_negative(p_inverted))
    if p_rotation is not None:
        masks.append(rotation.needs_turns(p_rotation))
    if not masks:
        return np.zeros(0, dtype=bool)
    return np.logical_or.reduce(masks)
