"""The polarity rule shared by serving and training: the film's answer where sure, else compared
with its negative's."""

from __future__ import annotations

import numpy as np
import pytest

from bodypart_router.inference import polarity


def test_only_unsure_answers_ask_for_the_negative() -> None:
    assert polarity.SURE == 0.9
    p = np.array([0.0, 0.07, 0.13, 0.5, 0.87, 0.93, 1.0])
    assert polarity.needs_negative(p).tolist() == [False, False, True, True, True, False, False]


def test_the_negative_of_a_model_input_mirrors_its_values() -> None:
    x = np.array([[[0.0, 0.25, 1.0]]], np.float32)
    n = polarity.negative(x)
    assert n.dtype == np.float32 and n.tolist() == [[[1.0, 0.75, 0.0]]]


def test_a_film_that_looks_more_inverted_than_its_negative_is_inverted() -> None:
    # both look somewhat inverted alone (the bias); the comparison decides
    assert polarity.paired_inverted(0.8, 0.6) > 0.5
    assert polarity.paired_inverted(0.6, 0.8) < 0.5
    assert polarity.paired_inverted(0.7, 0.7) == pytest.approx(0.5)
    # symmetric: the negative's verdict is the opposite of the film's
    assert polarity.paired_inverted(0.3, 0.9) == pytest.approx(1 - polarity.paired_inverted(0.9, 0.3))


def test_certain_answers_do_not_overflow() -> None:
    assert polarity.paired_inverted(1.0, 0.0) == pytest.approx(1.0)
    assert polarity.paired_inverted(0.0, 1.0) == pytest.approx(0.0, abs=1e-9)


def test_decide_keeps_sure_answers_and_pairs_the_rest() -> None:
    film = np.array([0.97, 0.02, 0.6, 0.6])
    neg = np.array([np.nan, np.nan, 0.8, 0.3])  # read only where needed
    got = polarity.decide(film, neg)
    assert got[0] == 0.97 and got[1] == 0.02
    assert got[2] < 0.5 < got[3]
