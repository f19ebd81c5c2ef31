"""The rotation rule shared by serving and training: the film's answer where sure, else the vote
of the film and its copy turned by a quarter."""

from __future__ import annotations

import numpy as np
import pytest

from bodypart_router.inference import rotation


def leaning_head(needed: int, lean: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Answers of a head that sees a film needing ``needed`` quarters but always leans to
    "upright": for the film, and for the film turned by ``rotation.TURN``."""
    answers = []
    for k in (0, rotation.TURN):
        logits = np.zeros(4)
        logits[(needed + k) % 4] += 1.0
        logits[0] += lean
        answers.append(np.exp(logits) / np.exp(logits).sum())
    return answers[0], answers[1]


def test_only_unsure_answers_ask_for_the_turned_copy() -> None:
    assert rotation.SURE == 0.8
    p = np.array([[0.95, 0.05, 0, 0], [0.81, 0.19, 0, 0], [0.79, 0.21, 0, 0], [0.4, 0.3, 0.2, 0.1]])
    assert rotation.needs_turns(p).tolist() == [False, False, True, True]


def test_turned_turns_counter_clockwise_like_training() -> None:
    x = np.arange(4, dtype=np.float32).reshape(1, 2, 2)  # [[0, 1], [2, 3]]
    assert rotation.turned(x, 1).tolist() == [[[1, 3], [0, 2]]]
    assert rotation.turned(x, 4).tolist() == x.tolist()


@pytest.mark.parametrize("needed", [0, 1, 2, 3])
def test_the_vote_outweighs_a_lean_towards_upright(needed: int) -> None:
    first, copy = leaning_head(needed)
    if needed:
        assert first.argmax() == 0  # alone the lean wins
    combined = rotation.combine(first, copy)
    assert combined.argmax() == needed
    np.testing.assert_allclose(combined.sum(), 1.0)


def test_decide_keeps_sure_answers_and_votes_on_the_rest() -> None:
    sure = np.array([0.97, 0.01, 0.01, 0.01])
    first, copy = leaning_head(1)
    got = rotation.decide(np.stack([sure, first]), np.stack([np.full(4, np.nan), copy]))
    np.testing.assert_array_equal(got[0], sure)
    assert got[1].argmax() == 1
