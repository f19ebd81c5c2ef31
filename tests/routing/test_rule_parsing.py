"""Parsing the rule list: every problem names the rule and the key, and says what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bodypart_router.config import ConfigError, Destination, parse
from bodypart_router.routing.rule_parsing import parse_condition

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

@pytest.mark.parametrize("value, fragment", [
    ({"Regex": "("}, "invalid regular expression"),
    ({"Min": 5, "Max": 3}, "the range is empty"),
    ({"Min": "x"}, "expected a number"),
    ({"Equal": "x"}, 'did you mean "Equals"'),
    ({"Equals": "a", "Regex": "b"}, "exactly one operator"),
    ("", "empty string"),
    ([], "non-empty list"),
])
def test_bad_conditions_say_what_to_fix(value: Any, fragment: str) -> None:
    found: list[str] = []
    assert parse_condition(value, "Routes[0].Tags.X", found) is None
    assert len(found) == 1 and found[0].startswith("Routes[0].Tags.X") and fragment in found[0], found


def test_every_problem_names_the_rule_and_the_key() -> None:
    found = problems([
        {"Name": "chest", "Class": "adult_chst", "Destinations": ["ai-chst"]},
        {"Region": "skul", "View": "oblique", "Rotation": 45, "Destinations": ["archive"]},
        {"Name": "tags", "Tags": {"PatientAg": {"Min": 18}, "Modality": {"Regex": "["}}, "Destination": ["qa"]},
        {"Name": "req", "Require": {"View": "side", "Upright": True}, "Score": 0.5, "Continue": "yes",
         "Destinations": []},
        "not a rule",
    ])
    text = "\n".join(found)
    for expected in [
        'Routes[0] "chest".Class: "adult_chst" is not one of', 'did you mean "adult_chest"',
        'Routes[0] "chest".Destinations[0]: "ai-chst" is not a DicomModalities or OrthancPeers name',
        'Routes[1].Region: "skul" is not one of', 'did you mean "skull"',
        'Routes[1].View: "oblique" is not one of "frontal", "lateral"',
        "Routes[1].Rotation: 45 is not one of 0, 90, 180, 270",
        'Routes[2] "tags".Tags.PatientAg: not a DICOM keyword',
        'Routes[2] "tags".Tags.Modality.Regex: invalid regular expression',
        'Routes[2] "tags".Destination: unknown key; did you mean "Destinations"?',
        'Routes[2] "tags".Destinations: missing',
        'Routes[3] "req".Require.View: expected one of "frontal", "lateral"',
        'Routes[3] "req".Require.Upright: unknown requirement',
        'Routes[3] "req".Score: expected a range',
        'Routes[3] "req".Continue: expected true or false',
        "Routes[4]: expected a rule object",
    ]:
        assert expected in text, (expected, found)


def test_duplicate_rule_names_are_refused() -> None:
    found = problems([{"Name": "a", "Destinations": []}, {"Name": "a", "Destinations": []}])
    assert any('Routes[1] "a".Name: another rule has the same name' in p for p in found)


@pytest.mark.parametrize("example", ["AdultChestAI", "SecondVendor", "ByRegion"])
def test_shipped_rule_examples_parse_against_the_shipped_config(example: str) -> None:
    from bodypart_router.config import load_orthanc_json

    root = Path(__file__).resolve().parents[2] / "orthanc-config"
    orthanc = load_orthanc_json(root / "orthanc.json")
    rules = load_orthanc_json(root / "routing-rules.example.json")[example]
    section = {**orthanc["BodyPartRouter"], "Routes": rules, "QualityRoutes": ["ai-general"]}
    cfg = parse(section, orthanc, base_dir=root, check_paths=False)
    assert len(cfg.rules) == len(rules)
