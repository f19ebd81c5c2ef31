"""scripts/trixie_root.py: the parts that decide what gets built, without building anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trixie_root", REPO / "scripts" / "trixie_root.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


trixie_root = _load()

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("BODYPART_TRIXIE_MIRROR", raising=False)
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "os-release").write_text(OS_RELEASE)
    return tmp_path


def _mirror(etc: Path) -> str:
    return trixie_root.host_mirror(etc / "apt", etc / "os-release")


def test_mirror_from_deb822_sources_skips_security_and_other_suites(etc: Path) -> None:
    (etc / "apt/sources.list.d/debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://src.example/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "# a comment inside the paragraph\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert _mirror(etc) == "http://mirror.example/debian"


def test_disabled_deb822_entries_are_ignored(etc: Path) -> None:
    (etc / "apt/sources.list.d/a.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    (etc / "apt/sources.list.d/b.sources").write_text(
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert _mirror(etc) == "http://on.example/debian"


def test_mirror_from_one_line_sources_list_with_options(etc: Path) -> None:
    (etc / "apt/sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://line.example/debian bookworm main\n"
    )
    assert _mirror(etc) == "http://line.example/debian"


def test_environment_overrides_the_mirror(etc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BODYPART_TRIXIE_MIRROR", "http://override.example/debian")
    assert _mirror(etc) == "http://override.example/debian"


def test_no_mirror_names_the_variable_to_set(etc: Path) -> None:
    (etc / "apt/sources.list.d/other.sources").write_text(
        "Types: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\nComponents: main\n"
    )
    with pytest.raises(SystemExit, match="BODYPART_TRIXIE_MIRROR"):
        _mirror(etc)


def test_requirements_are_the_projects_runtime_dependencies() -> None:
    reqs = trixie_root.requirements()
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs}
    assert {"numpy", "onnxruntime", "pydicom"} <= names
    assert "pytest" not in names  # test tools stay out of the root


def test_stamps_follow_their_inputs(tmp_path: Path) -> None:
    inputs = {"packages": ["a", "b"]}
    assert not trixie_root._stamp_matches(tmp_path, "system", inputs)
    trixie_root._write_stamp(tmp_path, "system", inputs)
    assert trixie_root._stamp_matches(tmp_path, "system", inputs)
    assert not trixie_root._stamp_matches(tmp_path, "system", {"packages": ["a", "b", "c"]})


def test_missing_root_is_explained(tmp_path: Path) -> None:
    assert "make trixie-root" in trixie_root.problem(tmp_path / "nothing")


def test_enter_command_execs_the_program_after_its_mounts() -> None:
    """The argv ends by exec'ing the program, so its PID is the one the caller started."""
    argv = trixie_root.enter_command(["/usr/sbin/Orthanc", "/tmp/x y/config.json"],
                                     binds=[Path("/tmp")], root=Path("/r"), env={"BODYPART_X": "1"})
    assert argv[:2] == ["env", "-i"] and "BODYPART_X=1" in argv
    assert argv[argv.index("unshare"):argv.index("unshare") + 2] == ["unshare", "--mount"]
    script = argv[argv.index("-c") + 1]
    assert script.splitlines()[-1] == 'exec chroot /r "$@"'
    assert "mount --rbind /tmp /r/tmp" in script
    assert argv[-2:] == ["/usr/sbin/Orthanc", "/tmp/x y/config.json"]  # passed as "$@", never re-split


def test_a_non_debian_host_must_name_a_debian_mirror(etc: Path) -> None:
    (etc / "os-release").write_text('ID=ubuntu\nVERSION_CODENAME=noble\n')
    (etc / "apt/sources.list").write_text("deb http://archive.example/ubuntu noble main\n")
    with pytest.raises(SystemExit, match="BODYPART_TRIXIE_MIRROR"):
        _mirror(etc)
