"""scripts/install.py edits Orthanc's commented JSON in place: only top-level keys, comments kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import install  # noqa: E402

from bodypart_router.config import load_orthanc_json  # noqa: E402

SAMPLE = """{
  /* a block comment with "LuaScripts" : [ ] inside */
  "Name" : "Orthanc",   // "HttpPort" : 1 in a comment
  "Nested" : { "LuaScripts" : ["not/top/level.lua"], "S": "a \\" quote" },
  "LuaScripts" : [
  ],
  "UserMetadata" : {
    // "Sample" : 1024
  },
  "Plugins" : [ "/usr/share/orthanc/plugins/" ],
  "SaveJobs" : true,
  "HttpPort" : 8042
}
"""


def _parse(text: str, tmp_path: Path) -> dict:
    path = tmp_path / "c.json"
    path.write_text(text)
    return load_orthanc_json(path)


def test_only_top_level_keys_are_found(tmp_path: Path) -> None:
    start, stop = install.find_key(SAMPLE, "LuaScripts")
    assert SAMPLE[start:stop].startswith("[") and "not/top" not in SAMPLE[start:stop]
    assert install.find_key(SAMPLE, "S") is None
    assert install.find_key(SAMPLE, "Missing") is None


def test_values_and_entries_are_added_keeping_comments(tmp_path: Path) -> None:
    text = install.set_value(SAMPLE, "HttpPort", 18042)
    text = install.set_value(text, "SaveJobs", False)
    text = install.add_to_container(text, "LuaScripts", json.dumps("/opt/x/shutdown.lua"))
    text = install.add_to_container(text, "Plugins", json.dumps("/opt/other.so"))
    text = install.add_to_container(text, "UserMetadata", '"BodyPart" : 1024')
    text = install.add_to_container(text, "UserMetadata", '"BodyPartScore" : 1025')
    config = _parse(text, tmp_path)
    assert config["HttpPort"] == 18042 and config["SaveJobs"] is False
    assert config["LuaScripts"] == ["/opt/x/shutdown.lua"]
    assert config["Plugins"] == ["/opt/other.so", "/usr/share/orthanc/plugins/"]
    assert config["UserMetadata"] == {"BodyPartScore": 1025, "BodyPart": 1024}
    assert config["Nested"]["LuaScripts"] == ["not/top/level.lua"]
    assert '// "Sample" : 1024' in text and "/* a block comment" in text


def test_a_taken_metadata_number_stops_the_installation(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "orthanc.json").write_text('{ "UserMetadata" : { "Mine" : 1024 }, "LuaScripts" : [] }')
    with pytest.raises(install.InstallError, match="1024 is already Mine"):
        install.configure(config_dir, tmp_path / "opt", tmp_path / "venv", [])
    assert not (config_dir / "orthanc.json.bak-bodypart-router").exists()  # nothing was written


def test_keys_nobody_defines_go_to_the_routers_own_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "orthanc.json").write_text('{ "Name" : "site" }')
    log: list[str] = []
    own = install.configure(config_dir, tmp_path / "opt", tmp_path / "venv", log)
    config = load_orthanc_json(own)
    bootstrap = tmp_path / "opt" / "plugin" / "bodypart_router" / "orthanc_plugin" / "bootstrap"
    assert config["PythonScript"] == str(bootstrap / "orthanc_bootstrap.py")
    assert config["LuaScripts"] == [str(bootstrap / "shutdown.lua")]
    assert config["UserMetadata"] == install.USER_METADATA and config["SaveJobs"] is False
    assert {"BodyPartResult", "BodyPart"} <= set(config["UserMetadata"])
    assert config["BodyPartRouter"]["Routes"] == {} and config["BodyPartRouter"]["PythonEnvironment"] == str(tmp_path / "venv")
    assert (config_dir / "orthanc.json").read_text() == '{ "Name" : "site" }'  # untouched


def test_an_earlier_installation_is_moved_to_the_bootstrap_folder(tmp_path: Path) -> None:
    """Before the bootstrap had a folder of its own, the script was plugin/router.py and the hook sat in
    orthanc_plugin/: once the router is copied again those files are gone, and Orthanc would not start."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    prefix = tmp_path / "opt"
    earlier = {"PythonScript": str(prefix / "plugin" / "router.py"),
               "LuaScripts": [str(prefix / "plugin" / "bodypart_router" / "orthanc_plugin" / "shutdown.lua"), "/site/own.lua"]}
    (config_dir / "orthanc.json").write_text(json.dumps(earlier, indent=2))
    log: list[str] = []
    install.configure(config_dir, prefix, tmp_path / "venv", log)
    config = load_orthanc_json(config_dir / "orthanc.json")
    bootstrap = prefix / "plugin" / "bodypart_router" / "orthanc_plugin" / "bootstrap"
    assert config["PythonScript"] == str(bootstrap / "orthanc_bootstrap.py")
    assert config["LuaScripts"] == [str(bootstrap / "shutdown.lua"), "/site/own.lua"]
