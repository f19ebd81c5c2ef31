"""The schema is the one definition: RouterConfig's fields and defaults, and every metadata name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from bodypart_router.config import ConfigError, RetryPolicy, RouterConfig, metadata_problems, parse
from bodypart_router.config.schema import CLASSIC_METADATA, KEYS, METADATA_NAMES, SEPARATE_METADATA
from bodypart_router.config.section import ASSEMBLED_FIELDS


def _keys_with_fields() -> list:
    return [k for key in KEYS for k in (key, *key.keys) if k.field]


def test_router_config_fields_are_the_schema_keys() -> None:
    fields = {f.name for f in dataclasses.fields(RouterConfig)}
    from_keys = {k.field for k in _keys_with_fields()}
    assert from_keys.isdisjoint(ASSEMBLED_FIELDS)
    assert fields == from_keys | ASSEMBLED_FIELDS


def test_defaults_come_from_the_schema() -> None:
    config = RouterConfig()
    for key in _keys_with_fields():
        assert getattr(config, key.field) == key.default, key.name
    retry = next(k for k in KEYS if k.name == "Retry")
    assert dataclasses.astuple(RetryPolicy()) == tuple(k.default for k in retry.keys)
    parsed = parse({}, {"UserMetadata": {"BodyPartResult": 1031}}, base_dir=Path("/x"), check_paths=False)
    for key in _keys_with_fields():
        assert getattr(parsed, key.field) == key.default, key.name


def test_every_metadata_name_the_router_writes_is_in_the_schema() -> None:
    assert len(set(METADATA_NAMES)) == len(METADATA_NAMES) == 13
    assert set(CLASSIC_METADATA) <= set(METADATA_NAMES)
    assert set(SEPARATE_METADATA.values()) == set(METADATA_NAMES) - {"BodyPartResult", "BodyPartClaim"}


def test_a_mistyped_declaration_is_named_with_the_right_one() -> None:
    declared = {"BodyPartResult": 1031, "BodyPartScores": 1040, "bodypartview": 1041, "BodyPartNotes": 1042,
                "Reviewer": 1043}
    assert metadata_problems({"UserMetadata": declared}, enabled=True) == [
        'UserMetadata.BodyPartScores: not a name the router writes; did you mean "BodyPartScore"?',
        'UserMetadata.bodypartview: not a name the router writes; did you mean "BodyPartView"?',
    ]


def test_shared_index_needs_the_claim_metadata() -> None:
    shared = {"PostgreSQL": {"EnableIndex": True, "Lock": False}, "UserMetadata": {"BodyPartResult": 1031}}
    section: dict = {}
    with pytest.raises(ConfigError) as err:
        parse(section, shared, base_dir=Path("/x"), check_paths=False)
    assert err.value.problems == ['UserMetadata: declare "BodyPartClaim" (for example 1030): several nodes share '
                                  "this index and the router records which node handles each instance there"]
    shared["UserMetadata"]["BodyPartClaim"] = 1030
    assert parse(section, shared, base_dir=Path("/x"), check_paths=False).enabled
    alone = {"PostgreSQL": {"EnableIndex": True}, "UserMetadata": {"BodyPartResult": 1031}}
    assert parse(section, alone, base_dir=Path("/x"), check_paths=False).enabled
