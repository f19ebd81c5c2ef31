"""The rotation rule shared by serving and training: the film's answer where sure, else the vote
of the film and its three quarter turns."""

from __future__ import annotations

import numpy as np
import pytest

from bodypart_router.inference import rotation


def leaning_head(needed: int, lean: float = 1.2) -> np.ndarray:
    """Answers of a head that sees a film needing ``needed`` quarters weakly but always leans to
    "upright": the first answer, then those of the copies turned by 1, 2 and 3 quarters."""
    answers = []
    for k in (0, *rotation.TURNS):
        logits = np.zeros(4)
        logits[(needed + k) % 4] += 1.0
        logits[0] += lean
        answers.append(np.exp(logits) / np.exp(logits).sum())
    return np.array(answers)


def test_only_unsure_answers_ask_for_the_turned_copies() -> None:
    p = np.array([[0.95, 0.05, 0, 0], [0.9, 0.1, 0, 0], [0.89, 0.11, 0, 0], [0.4, 0.3, 0.2, 0.1]])
    assert rotation.needs_turns(p).tolist() == [False, False, True, True]


def test_turned_turns_counter_clockwise_like_training() -> None:
    x = np.arange(4, dtype=np.float32).reshape(1, 2, 2)  # [[0, 1], [2, 3]]
    assert rotation.turned(x, 1).tolist() == [[[1, 3], [0, 2]]]
    assert rotation.turned(x, 4).tolist() == x.tolist()


@pytest.mark.parametrize("needed", [0, 1, 2, 3])
def test_the_vote_cancels_a_lean_towards_upright(needed: int) -> None:
    answers = leaning_head(needed)
    if needed:
        assert answers[0].argmax() == 0  # alone the lean wins
    assert rotation.combine(answers[0], answers[1:]).argmax() == needed
    np.testing.assert_allclose(rotation.combine(answers[0], answers[1:]).sum(), 1.0)


def test_decide_keeps_sure_answers_and_votes_on_the_rest() -> None:
    sure = np.array([0.97, 0.01, 0.01, 0.01])
    unsure = leaning_head(1)
    first = np.stack([sure, unsure[0]])
    copies = np.stack([np.stack([np.full(4, np.nan), unsure[k]]) for k in (1, 2, 3)])
    got = rotation.decide(first, copies)
    np.testing.assert_array_equal(got[0], sure)
    assert got[1].argmax() == 1
