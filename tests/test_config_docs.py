"""The README's tables and orthanc.json's commented example are written from the schema, and stay so."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import config_docs  # noqa: E402

from bodypart_router.config import load_orthanc_json, parse  # noqa: E402
from bodypart_router.config.schema import KEYS, METADATA  # noqa: E402


def test_readme_and_example_are_those_the_schema_writes() -> None:
    """Fails when a key is added to the schema but not to the docs, or a doc is edited by hand:
    run ``python scripts/config_docs.py``."""
    readme = config_docs.README.read_text(encoding="utf-8")
    example = config_docs.ORTHANC_JSON.read_text(encoding="utf-8")
    assert config_docs.render_readme(readme) == readme
    assert config_docs.render_orthanc_json(example) == example


def test_a_drifted_file_is_found_and_rewritten() -> None:
    readme = config_docs.README.read_text(encoding="utf-8")
    drifted = readme.replace("| `QueueSize` | `1000` |", "| `QueueSize` | `500` |")
    assert drifted != readme
    assert config_docs.render_readme(drifted) == readme
    example = config_docs.ORTHANC_JSON.read_text(encoding="utf-8")
    drifted = example.replace('"ForwardBatchSize": 16', '"ForwardBatchSize": 4')
    assert drifted != example
    assert config_docs.render_orthanc_json(drifted) == example


def test_every_key_and_metadata_name_is_documented() -> None:
    table = "\n".join(config_docs.config_table())
    assert all(f"| `{key.name}` |" in table for key in KEYS)
    example = config_docs.ORTHANC_JSON.read_text(encoding="utf-8")
    assert all(f'"{key.name}"' in example for key in KEYS)
    metadata = "\n".join(config_docs.metadata_table()) + example
    assert all(m.name in metadata for m in METADATA)


def test_the_example_is_valid_and_declares_the_shipped_metadata() -> None:
    config = load_orthanc_json(config_docs.ORTHANC_JSON)
    parse(config["BodyPartRouter"], config, base_dir=config_docs.ORTHANC_JSON.parent, check_paths=False)
    assert config["UserMetadata"] == {m.name: m.shipped for m in METADATA if m.shipped}
    section = config["BodyPartRouter"]
    for key in KEYS:  # what the example sets is what the schema says it shows
        if key.name in section and key.name != "Routes":
            shown = key.example_value()
            assert section[key.name] == (list(shown) if isinstance(shown, tuple) else shown), key.name
