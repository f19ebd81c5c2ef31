"""Header fusion: the header as a prior of known error rate, or as a tie-break."""

from __future__ import annotations

import pytest

from bodypart_router.routing.fusion import fuse

UNSURE_SPINE = {"abdominal": 0.30, "adult_chest": 0.05, "pediatric_chest": 0.05, "spine": 0.40, "others": 0.20}
SURE_SPINE = {"abdominal": 0.002, "adult_chest": 0.003, "pediatric_chest": 0.001, "spine": 0.99, "others": 0.004}


def test_without_a_usable_header_the_pixels_decide() -> None:
    for mode in ("off", "tie-break", "prior"):
        f = fuse(UNSURE_SPINE, {"StudyDescription": "FOLLOW UP"}, mode=mode)
        assert (f.class_name, f.score, f.source) == ("spine", 0.40, "pixels")


def test_prior_lets_a_clear_header_decide_an_unsure_film() -> None:
    f = fuse(UNSURE_SPINE, {"BodyPartExamined": "ABDOMEN"}, mode="prior", header_error_rate=0.15)
    assert (f.class_name, f.source, f.pixel_class) == ("abdominal", "header", "spine")
    # Bayes with e = 0.15: abdominal 0.30 * 0.85 against spine 0.40 * 0.05
    assert f.score == pytest.approx(0.30 * 0.85 / (0.30 * 0.85 + 0.70 * 0.05))


def test_prior_keeps_a_sure_film_against_a_wrong_header() -> None:
    f = fuse(SURE_SPINE, {"StudyDescription": "XR CHEST PA"}, mode="prior")
    assert (f.class_name, f.source) == ("spine", "conflict")
    assert f.score > 0.9


def test_agreeing_header_raises_the_score() -> None:
    f = fuse(UNSURE_SPINE, {"SeriesDescription": "L-SPINE LAT"}, mode="prior")
    assert (f.class_name, f.source) == ("spine", "pixels+header") and f.score > UNSURE_SPINE["spine"] + 0.2


def test_a_stronger_error_rate_weakens_the_header() -> None:
    tags = {"BodyPartExamined": "ABDOMEN"}
    assert fuse(UNSURE_SPINE, tags, mode="prior", header_error_rate=0.15).class_name == "abdominal"
    assert fuse(UNSURE_SPINE, tags, mode="prior", header_error_rate=0.75).class_name == "spine"


def test_age_splits_adult_and_pediatric_chest() -> None:
    scores = {"abdominal": 0.05, "adult_chest": 0.45, "pediatric_chest": 0.40, "spine": 0.05, "others": 0.05}
    child = fuse(scores, {"BodyPartExamined": "CHEST", "PatientAge": "003Y"}, mode="prior")
    assert (child.class_name, child.source, child.header_classes) == ("pediatric_chest", "header", ("pediatric_chest",))
    teen = fuse(scores, {"BodyPartExamined": "CHEST", "PatientAge": "014Y"}, mode="prior")
    assert (teen.class_name, teen.source) == ("adult_chest", "pixels+header")


def test_tie_break_acts_only_below_the_minimum_score() -> None:
    f = fuse(UNSURE_SPINE, {"BodyPartExamined": "ABDOMEN"}, mode="tie-break", minimum_score=0.5)
    assert (f.class_name, f.source) == ("abdominal", "header") and f.score == pytest.approx(1.0)
    sure = {**UNSURE_SPINE, "spine": 0.6, "abdominal": 0.1}
    f = fuse(sure, {"BodyPartExamined": "ABDOMEN"}, mode="tie-break", minimum_score=0.5)
    assert (f.class_name, f.source) == ("spine", "conflict")


def test_off_ignores_the_header() -> None:
    f = fuse(UNSURE_SPINE, {"BodyPartExamined": "ABDOMEN"}, mode="off")
    assert (f.class_name, f.source, f.header_classes) == ("spine", "pixels", ())


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        fuse(UNSURE_SPINE, {}, mode="maybe")
