"""One decision per series: the score-weighted vote."""

from __future__ import annotations

import pytest

from bodypart_router.routing.series import Member, vote


def m(instance_id: str, **scores: float) -> Member:
    top = max(scores, key=lambda c: scores[c])
    return Member(instance_id, top, scores[top], scores)


def test_an_unsure_film_follows_its_sure_sibling() -> None:
    result = vote([m("pa", adult_chest=0.98, abdominal=0.02), m("lat", abdominal=0.52, adult_chest=0.48)])
    assert result.class_name == "adult_chest"
    assert result.score == pytest.approx((0.98 + 0.48) / 2)
    assert [(a.instance_id, a.class_name, a.kept_own) for a in result.assignments] == [
        ("pa", "adult_chest", False), ("lat", "adult_chest", False)]


def test_a_confident_disagreeing_film_keeps_its_own_class() -> None:
    result = vote([m("a", adult_chest=0.97, spine=0.03), m("b", adult_chest=0.9, spine=0.1),
                   m("c", spine=0.95, adult_chest=0.05)], confident_score=0.9)
    assert result.class_name == "adult_chest"
    by_id = {a.instance_id: a for a in result.assignments}
    assert (by_id["c"].class_name, by_id["c"].score, by_id["c"].kept_own) == ("spine", 0.95, True)
    assert by_id["b"].class_name == "adult_chest" and not by_id["b"].kept_own


def test_the_vote_weighs_scores_not_heads() -> None:
    # two hesitant spine films against one sure abdomen: the probability mass decides
    result = vote([m("1", spine=0.45, abdominal=0.4, others=0.15), m("2", spine=0.45, abdominal=0.4, others=0.15),
                   m("3", abdominal=0.99, spine=0.01)], confident_score=1.0)
    assert result.class_name == "abdominal"


def test_a_single_film_keeps_its_class_and_score() -> None:
    result = vote([m("x", spine=0.7, others=0.3)])
    assert (result.class_name, result.score, result.assignments[0].class_name) == ("spine", 0.7, "spine")


def test_an_empty_series_is_an_error() -> None:
    with pytest.raises(ValueError):
        vote([])
