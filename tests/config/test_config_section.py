"""The BodyPartRouter section: defaults, validation against the whole Orthanc config, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from bodypart_router.config import (
    ConfigError,
    Destination,
    load_orthanc_json,
    parse,
    strip_json_comments,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "orthanc-config" / "orthanc.json"
METADATA = {"BodyPart": 1024, "BodyPartScore": 1025, "BodyPartModel": 1026, "BodyPartState": 1027,
            "BodyPartForwarded": 1028}


def orthanc(section: dict, **extra: object) -> dict:
    return {
        "DicomModalities": {"ai-spine": ["AI_SPINE", "127.0.0.1", 4243]},
        "OrthancPeers": {"ai-chest": {"Url": "http://127.0.0.1:8043/"}},
        "UserMetadata": METADATA,
        "BodyPartRouter": section,
        **extra,
    }


def problems(section: dict, **extra: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(section, orthanc(section, **extra), base_dir=Path("/etc/orthanc"), check_paths=False)
    return err.value.problems


def test_shipped_config_is_valid_and_routes_every_class() -> None:
    config = load_orthanc_json(SHIPPED)
    parsed = parse(config["BodyPartRouter"], config, base_dir=SHIPPED.parent, check_paths=False)
    assert parsed.model_path == REPO / "models" / "bodypart_router.onnx"
    assert parsed.python_environment == REPO / ".venv"
    assert parsed.state_directory == REPO / "build" / "orthanc-storage" / "bodypart-router"
    assert set(parsed.routes) == {"abdominal", "adult_chest", "pediatric_chest", "spine", "others"}
    assert {d.key for d in parsed.destinations} == {"peer:ai-chest", "modality:ai-general"}
    assert config["HttpPort"] == 8042 and config["DicomPort"] == 4242
    assert config["SaveJobs"] is False, "a job Orthanc reloads at restart would forward behind the router's back"
    assert parsed.verify_before_resend


def test_defaults_and_relative_paths() -> None:
    parsed = parse({}, orthanc({}), base_dir=Path("/etc/orthanc"), check_paths=False)
    assert parsed.enabled and not parsed.shadow_mode
    assert parsed.model_path == Path("/etc/models/bodypart_router.onnx")  # ../models from /etc/orthanc
    assert parsed.minimum_score == 0.5 and parsed.below_minimum == "uncertain"
    assert parsed.retry.max_attempts == 8 and parsed.breaker_threshold == 3
    assert "CR" in parsed.policy.modalities
    assert parsed.verify_before_resend


def test_verify_before_resend_is_a_boolean() -> None:
    assert problems({"VerifyBeforeResend": "yes"}) == [
        "BodyPartRouter.VerifyBeforeResend: expected true or false, got 'yes'"]


def test_child_process_and_yield_to_ingest() -> None:
    parsed = parse({}, orthanc({}), base_dir=Path("/etc/orthanc"), check_paths=False)
    assert parsed.classify_in_child_process
    assert parsed.yield_busy_cores is None and parsed.yield_max_wait_seconds == 10.0  # None: cores / 4
    section = {"ClassifyInChildProcess": False, "YieldToIngest": {"BusyCores": 1.5, "MaxWaitSeconds": 0}}
    parsed = parse(section, orthanc(section), base_dir=Path("/etc/orthanc"), check_paths=False)
    assert not parsed.classify_in_child_process
    assert parsed.yield_busy_cores == 1.5 and parsed.yield_max_wait_seconds == 0
    assert problems({"YieldToIngest": {"BusyCores": 0, "MaxWait": 5}}) == [
        "BodyPartRouter.YieldToIngest.BusyCores: 0 is out of range, use a value between 0.05 and 1024",
        'BodyPartRouter.YieldToIngest.MaxWait: unknown key; did you mean "MaxWaitSeconds"?',
    ]


def test_routes_resolve_modalities_and_peers() -> None:
    section = {"Routes": {"spine": ["ai-spine"], "adult_chest": ["ai-chest", "ai-spine"]}}
    parsed = parse(section, orthanc(section), base_dir=Path("/x"), check_paths=False)
    assert parsed.routes["spine"] == (Destination("modality", "ai-spine"),)
    assert parsed.routes["adult_chest"] == (Destination("peer", "ai-chest"), Destination("modality", "ai-spine"))


def test_unknown_destination_names_the_key_and_the_known_names() -> None:
    assert problems({"Routes": {"spine": ["ai-spine", "ai-spne"]}}) == [
        'BodyPartRouter.Routes.spine[1]: "ai-spne" is not a DicomModalities or OrthancPeers name '
        '(known: ai-chest, ai-spine); did you mean "ai-spine"?'
    ]


def test_unknown_keys_get_a_did_you_mean() -> None:
    found = problems({"MinimumScor": 0.5, "Retry": {"MaxAttempt": 3}})
    assert 'BodyPartRouter.MinimumScor: unknown key; did you mean "MinimumScore"?' in found
    assert 'BodyPartRouter.Retry.MaxAttempt: unknown key; did you mean "MaxAttempts"?' in found


def test_unknown_class_and_uncertain_in_routes() -> None:
    found = problems({"Routes": {"chest": [], "uncertain": ["ai-chest"]}})
    assert any(p.startswith("BodyPartRouter.Routes.chest: unknown class") for p in found)
    assert ("BodyPartRouter.Routes.uncertain: route uncertain predictions with "
            "BodyPartRouter.UncertainRoutes instead") in found


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"MinimumScore": 2, "Workers": 0, "Enabled": "yes", "ModelSha256": "abc"})
    assert len(found) == 4
    assert "BodyPartRouter.MinimumScore: 2 is out of range, use a value between 0 and 1" in found
    assert any(p.startswith("BodyPartRouter.Enabled: expected true or false") for p in found)
    assert any(p.startswith("BodyPartRouter.ModelSha256: expected the model's SHA-256") for p in found)


def test_ambiguous_names_need_a_prefix() -> None:
    extra = {"OrthancPeers": {"ai": {"Url": "http://x/"}}, "DicomModalities": {"ai": ["AI", "h", 1]}}
    section = {"Routes": {"spine": ["ai"]}}
    with pytest.raises(ConfigError) as err:
        parse(section, {**orthanc(section), **extra}, base_dir=Path("/x"), check_paths=False)
    assert err.value.problems == ['BodyPartRouter.Routes.spine[0]: "ai" is declared in several sections; '
                                  'write "modality:ai" or "peer:ai"']
    section = {"Routes": {"spine": ["peer:ai"]}}
    parsed = parse(section, {**orthanc(section), **extra}, base_dir=Path("/x"), check_paths=False)
    assert parsed.routes["spine"] == (Destination("peer", "ai"),)


def test_dicomweb_servers_are_destinations() -> None:
    section = {"Routes": {"spine": ["pacs-web"]}}
    extra = {"DicomWeb": {"Servers": {"pacs-web": ["http://pacs/dicom-web/"]}}}
    parsed = parse(section, {**orthanc(section), **extra}, base_dir=Path("/x"), check_paths=False)
    assert parsed.routes["spine"] == (Destination("dicomweb", "pacs-web"),)


def test_missing_model_and_user_metadata_are_reported(tmp_path: Path) -> None:
    section = {"ModelPath": "nope.onnx"}
    with pytest.raises(ConfigError) as err:
        parse(section, {"BodyPartRouter": section}, base_dir=tmp_path)
    text = str(err.value)
    assert f"BodyPartRouter.ModelPath: model file {tmp_path / 'nope.onnx'} does not exist" in text
    assert 'UserMetadata: declare "BodyPartResult" (the whole result in one JSON value), or "BodyPart", ' in text


def test_the_packed_result_alone_is_enough_metadata(tmp_path: Path) -> None:
    section = {"Routes": {}}
    parsed = parse(section, {"BodyPartRouter": section, "UserMetadata": {"BodyPartResult": 1024}},
                   base_dir=tmp_path, check_paths=False)
    assert parsed.enabled


def test_disabled_router_needs_no_model(tmp_path: Path) -> None:
    section = {"Enabled": False, "ModelPath": "nope.onnx"}
    assert parse(section, {"BodyPartRouter": section}, base_dir=tmp_path).enabled is False


def test_comment_stripping_keeps_strings_intact() -> None:
    text = '{ /* block\n */ "Url": "http://host//x", // line\n "A": "/* not a comment */" }'
    assert strip_json_comments(text).split() == ['{', '"Url":', '"http://host//x",', '"A":', '"/*', 'not', 'a',
                                                 'comment', '*/"', '}']
