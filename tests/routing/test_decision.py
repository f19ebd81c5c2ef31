"""Class + score -> destinations."""

from __future__ import annotations

from pathlib import Path

from bodypart_router.config import Destination, parse
from bodypart_router.routing.decision import decide

ORTHANC = {
    "DicomModalities": {"ai-spine": ["AI_SPINE", "127.0.0.1", 4243], "triage": ["TRIAGE", "127.0.0.1", 4244]},
    "OrthancPeers": {"ai-chest": {"Url": "http://127.0.0.1:8043/"}},
    "UserMetadata": {"BodyPart": 1024, "BodyPartScore": 1025, "BodyPartModel": 1026, "BodyPartState": 1027,
                     "BodyPartForwarded": 1028},
}


def config(**section: object):
    section.setdefault("Routes", {"adult_chest": ["ai-chest"], "spine": ["ai-spine"]})
    return parse(section, {**ORTHANC, "BodyPartRouter": section}, base_dir=Path("/x"), check_paths=False)


def test_confident_prediction_goes_to_its_class_routes() -> None:
    d = decide(config(), "adult_chest", 0.93)
    assert (d.class_name, d.predicted_class, d.destinations) == ("adult_chest", "adult_chest",
                                                                 (Destination("peer", "ai-chest"),))
    assert not d.uncertain


def test_class_without_route_goes_nowhere() -> None:
    assert decide(config(), "others", 0.99).destinations == ()


def test_below_minimum_becomes_uncertain_and_uses_uncertain_routes() -> None:
    cfg = config(MinimumScore=0.7, UncertainRoutes=["triage"])
    d = decide(cfg, "spine", 0.69)
    assert (d.class_name, d.predicted_class, d.score) == ("uncertain", "spine", 0.69)
    assert d.destinations == (Destination("modality", "triage"),)
    assert decide(cfg, "spine", 0.70).class_name == "spine"  # the minimum itself is enough


def test_below_minimum_without_uncertain_routes_goes_nowhere() -> None:
    assert decide(config(MinimumScore=0.7), "spine", 0.5).destinations == ()


def test_below_minimum_route_keeps_the_class() -> None:
    d = decide(config(MinimumScore=0.7, BelowMinimum="route"), "spine", 0.5)
    assert (d.class_name, d.destinations) == ("spine", (Destination("modality", "ai-spine"),))
