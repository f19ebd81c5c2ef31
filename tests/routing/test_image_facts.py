"""The model's secondary outputs as the router shows them: metadata values and per-station counts."""

from __future__ import annotations

from types import SimpleNamespace

from bodypart_router.routing.audit import NO_AET, OTHER_AETS
from bodypart_router.routing.image_facts import ImageFacts, QualityTally
from bodypart_router.ops.metrics import RouterMetrics, metric_name


def test_metadata_values_for_the_outputs_the_model_has() -> None:
    facts = ImageFacts(region="pelvis_hip", region_score=0.8, view="frontal", rotation=90, inverted=False)
    assert facts.metadata() == {"BodyPartRegion": "pelvis_hip", "BodyPartView": "frontal", "BodyPartRotation": "90",
                                "BodyPartInverted": "false"}
    assert facts.turned and facts.known
    assert ImageFacts().metadata() == {} and not ImageFacts().known
    assert not ImageFacts(rotation=0).turned


def test_from_a_prediction_and_from_stored_evidence() -> None:
    prediction = SimpleNamespace(class_name="spine", region="cervical_spine", region_score=0.9, view="lateral",
                                 view_score=0.99, rotation=0, rotation_score=0.97, inverted=True, inverted_score=0.9)
    facts = ImageFacts.of(prediction)
    assert (facts.region, facts.view, facts.rotation, facts.inverted) == ("cervical_spine", "lateral", 0, True)
    assert ImageFacts.of(SimpleNamespace(class_name="spine")) == ImageFacts()
    stored = ImageFacts.from_evidence({"scores": {}, "region": "chest", "view": "lateral", "rotation": 270,
                                       "inverted": False})
    assert stored.metadata()["BodyPartRotation"] == "270" and stored.region_score is None
    assert ImageFacts.from_evidence(None) == ImageFacts()


def test_quality_is_counted_per_station_and_bounded() -> None:
    tally = QualityTally(max_stations=2)
    tally.record("CR_ROOM_1", ImageFacts(region="chest", view="lateral", rotation=0, inverted=False))
    tally.record("CR_ROOM_1", ImageFacts(region="chest", view="frontal", rotation=90, inverted=True))
    tally.record(None, ImageFacts(region="pelvis_hip", view="frontal", rotation=0, inverted=False))
    tally.record("DX_3", ImageFacts(region="chest", rotation=180))
    assert tally.stations() == {
        NO_AET: {"Films": 1, "Turned": 0, "Inverted": 0, "Lateral": 0},
        "CR_ROOM_1": {"Films": 2, "Turned": 1, "Inverted": 1, "Lateral": 1},
        OTHER_AETS: {"Films": 1, "Turned": 1, "Inverted": 0, "Lateral": 0},
    }
    assert tally.regions() == {"chest": 3, "pelvis_hip": 1}


def test_metrics_and_status_carry_the_counts() -> None:
    metrics = RouterMetrics()
    metrics.image_facts("CR1", ImageFacts(region="chest", view="frontal", rotation=90, inverted=True))
    values = metrics.values()
    assert values[metric_name("films_checked_total", station="CR1")] == 1
    assert values[metric_name("films_turned_total", station="CR1")] == 1
    assert values[metric_name("films_inverted_total", station="CR1")] == 1
    assert values[metric_name("films_lateral_total", station="CR1")] == 0
    assert values[metric_name("classified_regions_total", region="chest")] == 1
    snap = metrics.snapshot()
    assert snap["ImageQuality"]["CR1"]["Turned"] == 1 and snap["Regions"] == {"chest": 1}
