"""support/trixie.py: which host directories an Orthanc in the Debian 13 root gets to see."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from support.orthanc import REPO, ROUTER_SCRIPT
from support.trixie import host_dirs


def test_config_paths_are_shown_once_at_their_own_path(tmp_path: Path) -> None:
    outside = Path("/srv/router-test-data")  # does not exist: its nearest existing parent, /srv, is refused
    config_path = tmp_path / "config.json"
    config = {
        "StorageDirectory": str(tmp_path / "storage"),            # not created yet: under tmp
        "PythonScript": str(ROUTER_SCRIPT),
        "BodyPartRouter": {"ModelPath": str(REPO / "models" / "x.onnx"), "StateDirectory": "relative/ignored"},
    }
    dirs = host_dirs(config_path, config)
    for needed in (Path(tempfile.gettempdir()).resolve(), REPO, tmp_path):
        assert any(d == needed or d in needed.parents for d in dirs), (needed, dirs)
    assert not any(a != b and a in b.parents for a in dirs for b in dirs), dirs  # nested ones folded
    with pytest.raises(ValueError, match="StorageDirectory"):
        host_dirs(config_path, {**config, "StorageDirectory": str(outside)})


def test_a_path_in_the_roots_system_directories_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BodyPartRouter.ModelPath"):
        host_dirs(tmp_path / "config.json", {"BodyPartRouter": {"ModelPath": "/usr/share/model.onnx"}})
