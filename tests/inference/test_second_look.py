"""The second-look image and who needs one."""

from __future__ import annotations

import numpy as np

from bodypart_router.inference import polarity, rotation, second_look


def test_the_second_look_is_the_negative_turned_by_a_quarter() -> None:
    x = np.array([[[0.0, 0.25], [0.5, 1.0]]], np.float32)
    got = second_look.image(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 1.0 - np.rot90(x, rotation.TURN, axes=(-2, -1)))


def test_a_film_needs_a_second_look_when_either_answer_is_unsure() -> None:
    sure_rotation, unsure_rotation = [0.97, 0.01, 0.01, 0.01], [0.5, 0.3, 0.1, 0.1]
    p_inverted = np.array([0.01, 0.5, 0.01, 0.5])
    p_rotation = np.array([sure_rotation, sure_rotation, unsure_rotation, unsure_rotation])
    assert second_look.needed(p_inverted, p_rotation).tolist() == [False, True, True, True]
    assert second_look.needed(p_inverted, None).tolist() == polarity.needs_negative(p_inverted).tolist()
    assert second_look.needed(None, p_rotation).tolist() == rotation.needs_turns(p_rotation).tolist()
