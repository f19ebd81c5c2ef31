"""Routing rules: evaluation of every operator, in order, with quality requirements (parsing: test_rule_parsing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bodypart_router.config import ConfigError, Destination, parse
from bodypart_router.routing.decision import decide
from bodypart_router.routing.rule_parsing import parse_condition
from bodypart_router.routing.rules import Evidence

ORTHANC = {
    "DicomModalities": {"ai-spine": ["AI_SPINE", "127.0.0.1", 4243], "triage": ["TRIAGE", "127.0.0.1", 4244],
                        "qa": ["QA", "127.0.0.1", 4245]},
    "OrthancPeers": {"ai-chest": {"Url": "http://127.0.0.1:8043/"}, "archive": {"Url": "http://127.0.0.1:8044/"}},
    "UserMetadata": {"BodyPart": 1024, "BodyPartScore": 1025, "BodyPartModel": 1026, "BodyPartState": 1027,
                     "BodyPartForwarded": 1028},
}
CHEST, SPINE, TRIAGE, QA, ARCHIVE = (Destination("peer", "ai-chest"), Destination("modality", "ai-spine"),
                                     Destination("modality", "triage"), Destination("modality", "qa"),
                                     Destination("peer", "archive"))


def config(routes: Any, **section: Any):
    section["Routes"] = routes
    return parse(section, {**ORTHANC, "BodyPartRouter": section}, base_dir=Path("/x"), check_paths=False)


def problems(routes: Any, **section: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config(routes, **section)
    return err.value.problems


def cond(value: Any, **kw: Any):
    found: list[str] = []
    c = parse_condition(value, "k", found, **kw)
    assert not found, found
    assert c is not None
    return c


# -- operators ------------------------------------------------------------------------------

def test_equals_ignores_case_and_spaces_and_matches_one_of_several_values() -> None:
    c = cond("DX")
    assert c.holds("dx ") and not c.holds("CR") and not c.holds(None)
    assert c.holds("CR\\DX")  # multi-valued attribute


def test_one_of_and_wildcards() -> None:
    assert cond(["CR", "DX"]).holds("cr") and not cond(["CR", "DX"]).holds("MG")
    assert cond("CR_*").holds("cr_room2") and not cond("CR_*").holds("DX_ROOM2")
    assert cond({"Wildcard": "ST?"}).holds("ST1") and not cond({"Wildcard": "ST?"}).holds("ST12")
    assert cond(["DX*", "CR"]).holds("DX2")


def test_equals_is_exact_even_with_wildcard_characters() -> None:
    assert cond({"Equals": "CR*"}).holds("cr*") and not cond({"Equals": "CR*"}).holds("CR1")


def test_regex_searches_as_written() -> None:
    c = cond({"Regex": "^St\\.? Mary"})
    assert c.holds("St Mary's Hospital") and c.holds("St. Mary") and not c.holds("st mary")


def test_numeric_ranges() -> None:
    c = cond({"Min": 18, "Below": 65})
    assert c.holds(18) and c.holds("40") and not c.holds(65) and not c.holds(17.9) and not c.holds("abc")
    assert cond({"Max": 0.5}).holds(0.5) and not cond({"Max": 0.5}).holds(0.51)
    assert cond(7).holds("7.0") and cond(True).holds(True) and not cond(False).holds(True)


def test_patient_age_is_in_years_from_the_age_or_the_birth_date() -> None:
    rules = [{"Name": "adults", "Tags": {"PatientAge": {"Min": 18}}, "Destinations": ["ai-chest"]}]
    cfg = config(rules)
    assert decide(cfg, "adult_chest", 0.9, tags={"PatientAge": "045Y"}).destinations == (CHEST,)
    assert decide(cfg, "adult_chest", 0.9, tags={"PatientAge": "017Y"}).destinations == ()
    assert decide(cfg, "adult_chest", 0.9, tags={"PatientAge": "216M"}).destinations == (CHEST,)
    assert decide(cfg, "adult_chest", 0.9, tags={"PatientBirthDate": "20000101", "StudyDate": "20240101"}
                  ).destinations == (CHEST,)
    assert decide(cfg, "adult_chest", 0.9, tags={}).destinations == ()  # unknown age: the condition does not hold


# -- rule order, Continue, class, score, AET -------------------------------------------------

SITE_RULES = [
    {"Name": "adult chest AI", "Class": "adult_chest", "Tags": {"PatientAge": {"Min": 18}, "Modality": ["DX", "CR"]},
     "Destinations": ["ai-chest"], "Continue": True},
    {"Name": "second vendor for St Mary", "Tags": {"InstitutionName": {"Regex": "(?i)st\\.? mary"}},
     "Destinations": ["archive"]},
    {"Name": "spines from the CR rooms", "Class": "spine", "CallingAet": "CR_*", "Score": {"Min": 0.8},
     "Destinations": ["ai-spine"]},
]


def test_rules_are_tried_in_order_and_continue_lets_later_rules_match() -> None:
    cfg = config(SITE_RULES)
    tags = {"PatientAge": "050Y", "Modality": "DX", "InstitutionName": "St. Mary Hospital"}
    d = decide(cfg, "adult_chest", 0.95, tags=tags)
    assert d.destinations == (CHEST, ARCHIVE)
    assert [r.matched for r in d.rules] == [True, True, False]
    # the second rule does not continue: the third one is not even tried
    assert d.rules[2].conditions == ()


def test_class_score_and_calling_aet_conditions() -> None:
    cfg = config(SITE_RULES)
    assert decide(cfg, "spine", 0.9, calling_aet="CR_ROOM1").destinations == (SPINE,)
    assert decide(cfg, "spine", 0.7, calling_aet="CR_ROOM1").destinations == ()   # score below the rule's range
    assert decide(cfg, "spine", 0.9, calling_aet="DX_ROOM1").destinations == ()   # another station
    assert decide(cfg, "spine", 0.9, calling_aet=None).destinations == ()         # REST upload: no AET
    d = decide(cfg, "spine", 0.9, calling_aet="DX_ROOM1")
    why = {c.subject: c.why for c in d.rules[2].conditions}
    assert why["CallingAet"] == 'CallingAet is "CR_*": "DX_ROOM1"'


def test_uncertain_class_and_uncertain_routes_as_last_rule() -> None:
    cfg = config([{"Class": "spine", "Destinations": ["ai-spine"]}], MinimumScore=0.6, UncertainRoutes=["triage"])
    d = decide(cfg, "spine", 0.5)
    assert (d.class_name, d.destinations, d.rules[-1].rule) == ("uncertain", (TRIAGE,), "UncertainRoutes")
    cfg = config([{"Class": "uncertain", "Destinations": ["qa"]}], MinimumScore=0.6, UncertainRoutes=["triage"])
    assert decide(cfg, "spine", 0.5).destinations == (QA,)  # an explicit rule comes first and stops


def test_table_form_is_one_rule_per_class() -> None:
    cfg = config({"spine": ["ai-spine"], "adult_chest": ["ai-chest", "ai-spine"]})
    assert [r.name for r in cfg.rules] == ["Routes.spine", "Routes.adult_chest"]
    assert decide(cfg, "adult_chest", 0.9).destinations == (CHEST, SPINE)
    assert decide(cfg, "others", 0.9).destinations == ()


# -- secondary outputs and quality requirements ----------------------------------------------

QUALITY = [
    {"Name": "frontal chests", "Class": "adult_chest", "Require": {"View": "frontal", "Rotation": 0, "Inverted": False},
     "Destinations": ["ai-chest"]},
    {"Name": "skulls", "Region": "skull", "Destinations": ["archive"]},
]


def test_requirements_hold_failing_films_for_quality_routes() -> None:
    cfg = config(QUALITY, QualityRoutes=["qa"])
    ok = decide(cfg, "adult_chest", 0.9, view="frontal", rotation=0, inverted=False)
    assert (ok.destinations, ok.held, ok.state) == ((CHEST,), (), None)
    lateral = decide(cfg, "adult_chest", 0.9, view="lateral", rotation=0, inverted=False)
    assert (lateral.destinations, lateral.state) == ((QA,), "held:lateral")
    assert decide(cfg, "adult_chest", 0.9, view="frontal", rotation=90, inverted=False).state == "held:rotated-90"
    assert decide(cfg, "adult_chest", 0.9, view="frontal", rotation=0, inverted=True).state == "held:inverted"
    nowhere = decide(config(QUALITY), "adult_chest", 0.9, view="lateral")
    assert (nowhere.destinations, nowhere.state) == ((), "held:lateral")


def test_without_secondary_outputs_requirements_pass_and_conditions_do_not_hold() -> None:
    cfg = config(QUALITY, QualityRoutes=["qa"])
    d = decide(cfg, "adult_chest", 0.9)  # today's model: no view, rotation, inverted, region
    assert (d.destinations, d.held) == ((CHEST,), ())
    d = decide(cfg, "others", 0.9)
    assert d.destinations == ()
    assert d.rules[1].conditions[0].why == 'Region is "skull": unknown (the model has no such output)'
    assert decide(cfg, "others", 0.9, region="skull").destinations == (ARCHIVE,)


# -- validation ----------------------------------------------------------------------------

def test_quality_routes_are_checked_and_listed_as_destinations() -> None:
    assert any('QualityRoutes[0]: "qq"' in p for p in problems(QUALITY, QualityRoutes=["qq"]))
    assert config(QUALITY, QualityRoutes=["qa"]).destinations == (QA, CHEST, ARCHIVE) or \
        set(config(QUALITY, QualityRoutes=["qa"]).destinations) == {QA, CHEST, ARCHIVE}


def test_adult_chest_example_routes_as_described() -> None:
    from bodypart_router.config import load_orthanc_json

    root = Path(__file__).resolve().parents[2] / "orthanc-config"
    orthanc = load_orthanc_json(root / "orthanc.json")
    section = {**orthanc["BodyPartRouter"], "QualityRoutes": ["ai-general"],
               "Routes": load_orthanc_json(root / "routing-rules.example.json")["AdultChestAI"]}
    cfg = parse(section, orthanc, base_dir=root, check_paths=False)
    adult = {"PatientAge": "060Y", "Modality": "DX"}
    assert [d.name for d in decide(cfg, "adult_chest", 0.9, tags=adult, view="frontal").destinations] == ["ai-chest"]
    held = decide(cfg, "adult_chest", 0.9, tags=adult, view="frontal", rotation=90)
    assert ([d.name for d in held.destinations], held.state) == (["ai-general"], "held:rotated-90")
    assert decide(cfg, "adult_chest", 0.9, tags={"PatientAge": "016Y", "Modality": "DX"}).destinations == ()


def test_evidence_reads_full_json_values() -> None:
    assert Evidence("spine", 0.9, tags={"Modality": {"Value": "DX"}}).tag("Modality") == "DX"
    assert Evidence("spine", 0.9, tags={"Modality": "  "}).tag("Modality") is None


def test_decision_level_and_series_confidence_are_validated() -> None:
    assert config({}, DecisionLevel="series", SeriesConfidentScore=0.8).decision_level == "series"
    found = problems({}, DecisionLevel="study", SeriesConfidentScore=2)
    assert any(p.startswith("BodyPartRouter.DecisionLevel: expected one of 'instance', 'series'") for p in found)
    assert any(p.startswith("BodyPartRouter.SeriesConfidentScore: 2 is out of range") for p in found)


def test_view_position_gives_the_view_when_the_model_has_none() -> None:
    from bodypart_router.routing.decision import decide_evidence

    cfg = config(QUALITY, QualityRoutes=["qa"])
    scores = {"adult_chest": 0.95, "spine": 0.05}
    lateral = decide_evidence(cfg, scores, tags={"ViewPosition": "LL"})
    assert (lateral.state, lateral.destinations, lateral.fusion["ViewFrom"]) == ("held:lateral", (QA,), "header")
    frontal = decide_evidence(cfg, scores, tags={"ViewPosition": "PA"})
    assert (frontal.state, frontal.destinations) == (None, (CHEST,))
    assert decide_evidence(cfg, scores, tags={"ViewPosition": "OBL"}).state is None  # unknown: not held
    # the model's own view wins over the header's
    model = decide_evidence(cfg, scores, tags={"ViewPosition": "LL"}, secondary={"view": "frontal"})
    assert (model.state, model.fusion["ViewFrom"]) == (None, "pixels")
