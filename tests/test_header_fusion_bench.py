"""The header-fusion harness (bench/header_fusion.py): its synthetic headers, and the fused accuracy."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from bench import header_fusion as hf
from bodypart_router.routing.audit import header_classes
from bodypart_router.inference.classes import CLASS_NAMES


@pytest.mark.parametrize("region, wordings", sorted(hf.WORDINGS.items()))
def test_every_wording_names_its_region_in_the_audit_vocabulary(region: str, wordings: tuple) -> None:
    for tag, value in wordings:
        allowed, source, _ = header_classes({tag: value})
        expected = {"chest": {"adult_chest", "pediatric_chest"}, "spine": {"spine"}, "abdominal": {"abdominal"},
                    "others": {"others"}}[region]
        assert set(allowed) == expected and source == tag, (tag, value, allowed)


def test_no_region_wordings_name_nothing() -> None:
    for tag, value in hf.NO_REGION:
        assert header_classes({tag: value} if tag else {})[0] == ()


def test_the_mix_is_70_right_15_missing_15_wrong_with_ages() -> None:
    rng = random.Random(0)
    kinds: Counter[str] = Counter()
    for i in range(20000):
        true_class = CLASS_NAMES[i % len(CLASS_NAMES)]
        kind, tags = hf.synthetic_header(true_class, rng)
        kinds[kind] += 1
        allowed = header_classes(tags)[0]
        if kind == hf.RIGHT:
            assert true_class in allowed
        elif kind == hf.WRONG:
            assert allowed and true_class not in allowed
        else:
            assert allowed == ()
        assert "PatientAge" in tags
    assert abs(kinds[hf.RIGHT] / 20000 - 0.70) < 0.015
    assert abs(kinds[hf.MISSING] / 20000 - 0.15) < 0.015
    assert abs(kinds[hf.WRONG] / 20000 - 0.15) < 0.015


def test_fused_accuracy_on_the_shared_test_split(tmp_path: Path) -> None:
    if not (hf.DEFAULT_DATA / "manifest.csv").is_file():
        pytest.skip(f"no data set at {hf.DEFAULT_DATA}")
    films = hf.test_films(hf.DEFAULT_DATA, limit=400)
    scores = hf.predictions(films, hf.DEFAULT_MODEL)
    from bodypart_router.config import RouterConfig

    e = RouterConfig.header_error_rate  # the shipped default, measured with the shipped model
    off = hf.score(films, scores, mode="off", minimum_score=0.5, error_rate=e)
    prior = hf.score(films, scores, mode="prior", minimum_score=0.5, error_rate=e)
    # films whose header is right gain, films whose header is wrong lose little, and fewer end uncertain
    assert prior["right"]["accuracy"] >= off["right"]["accuracy"]
    assert prior["wrong"]["accuracy"] >= off["wrong"]["accuracy"] - 0.05
    assert prior["all"]["uncertain"] <= off["all"]["uncertain"]
    assert prior["all"]["accuracy"] >= off["all"]["accuracy"] - 0.005
