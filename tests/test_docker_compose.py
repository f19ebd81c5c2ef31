"""docker-compose.yml: valid for `docker compose config`, and consistent with orthanc-config/.

The container runs orthanc-config/orthanc.json, mounted into /etc/orthanc/, with ORTHANC__*
environment variables replacing what differs inside the container. These tests rebuild the
configuration the orthancteam/orthanc image would give Orthanc (files, then environment
variables, by the image's naming rule) and check it against the router's own validation and
against what docker/Dockerfile puts in the image.

`docker compose` needs no Docker engine for `config`. Where the Docker CLI has no compose
plugin, the one from Debian 13's docker-compose package in build/trixie-root is used
(`make trixie-root` builds it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from bodypart_router.config import SECTION, load_orthanc_json, parse
from support.orthanc import ROUTER_SCRIPT, SHUTDOWN_LUA

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
SHIPPED_CONFIG = REPO / "orthanc-config" / "orthanc.json"
ROUTER_SERVICE = "orthanc"
TRIXIE_COMPOSE_PLUGINS = REPO / "build" / "trixie-root" / "usr" / "libexec" / "docker" / "cli-plugins"
#: Where the orthancteam/orthanc image loads plugins from once they are enabled.
IMAGE_PLUGIN_DIR = "/usr/share/orthanc/plugins/"


def _compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]] | None:
    """argv prefix and environment that run `docker compose`, or None when there is none."""
    env = dict(os.environ)
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"], env
    plugin = TRIXIE_COMPOSE_PLUGINS / "docker-compose"
    if not plugin.is_file():
        return None
    if docker:  # a separate Docker config that adds the plugin directory, the user's left alone
        (tmp_path / "config.json").write_text(json.dumps({"cliPluginsExtraDirs": [str(TRIXIE_COMPOSE_PLUGINS)]}))
        env["DOCKER_CONFIG"] = str(tmp_path)
        return [docker, "compose"], env
    return [str(plugin)], env  # the plugin also runs on its own, as `docker-compose`


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The output of `docker compose config --format json` (compose's own validation)."""
    found = _compose_command(tmp_path_factory.mktemp("docker-config"))
    if found is None:
        pytest.skip("no `docker compose`: install Docker's compose plugin, or run `make trixie-root`")
    argv, env = found
    done = subprocess.run(
        [*argv, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


def _camel(token: str) -> str:
    """The image's rule for one level of a variable name: BODY_PART_ROUTER -> BodyPartRouter."""
    return "".join(word[:1] + word[1:].lower() for word in token.split("_"))


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Objects merge key by key; anything else replaces (as the image merges its sources)."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _env_overrides(environment: dict[str, str]) -> list[tuple[list[str], Any]]:
    """(JSON path, value) for each ORTHANC__ variable; values are JSON when they parse as JSON."""
    out = []
    for name, raw in sorted(environment.items()):
        if not name.startswith("ORTHANC__"):
            continue
        path = [_camel(t) for t in name[len("ORTHANC__"):].split("__")]
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.append((path, value))
    return out


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _has_path(config: dict[str, Any], path: list[str]) -> bool:
    node: Any = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _dockerfile_copies() -> dict[str, str]:
    """COPY source -> destination in docker/Dockerfile."""
    copies = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"\s*COPY\s+(?!--)(.+)$", line)
        if m:
            *sources, dest = m.group(1).split()
            for src in sources:
                copies[src.rstrip("/")] = dest
    return copies


@pytest.fixture(scope="module")
def router(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"][ROUTER_SERVICE]


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    return load_orthanc_json(SHIPPED_CONFIG)


@pytest.fixture(scope="module")
def effective(router: dict[str, Any], shipped: dict[str, Any]) -> dict[str, Any]:
    """The configuration Orthanc gets in the container: mounted file, then environment."""
    config = json.loads(json.dumps(shipped))
    for path, value in _env_overrides(router.get("environment") or {}):
        _merge(config, _nest(path, value))
    return config


def test_shipped_config_is_mounted_into_etc_orthanc(router: dict[str, Any]) -> None:
    mounts = {Path(v["source"]).resolve(): v for v in router.get("volumes", []) if v.get("type") == "bind"}
    assert SHIPPED_CONFIG.resolve() in mounts, f"{SHIPPED_CONFIG.relative_to(REPO)} must be mounted"
    target = PurePosixPath(mounts[SHIPPED_CONFIG.resolve()]["target"])
    assert target.parent == PurePosixPath("/etc/orthanc") and target.suffix == ".json", target
    assert mounts[SHIPPED_CONFIG.resolve()].get("read_only") is True


def test_router_image_is_built_from_the_official_image(router: dict[str, Any], compose: dict[str, Any]) -> None:
    assert Path(router["build"]["context"]).resolve() == REPO
    assert (REPO / router["build"]["dockerfile"]).resolve() == DOCKERFILE
    base = re.search(r"^ARG ORTHANC_IMAGE=(\S+)", DOCKERFILE.read_text(), re.M)
    assert base and base.group(1).startswith("orthancteam/orthanc:"), "docker/Dockerfile must build FROM orthancteam/orthanc"
    for name, service in compose["services"].items():
        if name != ROUTER_SERVICE:  # the demo destinations run the same Orthanc release
            assert service["image"] == base.group(1), name


def test_every_override_names_a_setting_of_the_shipped_config(router: dict[str, Any], shipped: dict[str, Any]) -> None:
    """A misspelt variable would silently add an unused setting (or an unknown router key)."""
    overrides = _env_overrides(router.get("environment") or {})
    assert overrides, "the router service sets no ORTHANC__ variables"
    for path, _ in overrides:
        assert _has_path(shipped, path), f"{'.'.join(path)} is not in {SHIPPED_CONFIG.relative_to(REPO)}"


def test_same_router_section_and_user_metadata(effective: dict[str, Any], shipped: dict[str, Any]) -> None:
    assert effective["UserMetadata"] == shipped["UserMetadata"]
    for name in ("BodyPartResult", "BodyPart"):
        assert name in effective["UserMetadata"]
    changed = {k for k in shipped[SECTION] if effective[SECTION][k] != shipped[SECTION][k]}
    assert changed <= {"ModelPath", "PythonEnvironment", "StateDirectory"}, changed
    assert PurePosixPath(effective[SECTION]["ModelPath"]).name == PurePosixPath(shipped[SECTION]["ModelPath"]).name


def test_router_section_validates_in_the_container(effective: dict[str, Any]) -> None:
    """Routes must name destinations that exist in the container's configuration."""
    config = parse(effective[SECTION], effective, base_dir=Path("/tmp"), check_paths=False)
    assert config.routes


def test_no_relative_paths_in_the_container(effective: dict[str, Any]) -> None:
    """The image rewrites the configuration to /tmp/orthanc.json: relative paths would point there."""
    paths = {
        "PythonScript": effective.get("PythonScript"),
        **{f"LuaScripts[{i}]": p for i, p in enumerate(effective.get("LuaScripts") or [])},
        "StorageDirectory": effective.get("StorageDirectory"),
        "IndexDirectory": effective.get("IndexDirectory"),
        **{f"{SECTION}.{k}": effective[SECTION].get(k) for k in ("ModelPath", "PythonEnvironment", "StateDirectory")},
    }
    for key, value in paths.items():
        if value is not None:
            assert PurePosixPath(value).is_absolute(), f"{key} = {value!r} is relative"
    for plugin in effective.get("Plugins", []):
        assert plugin.startswith(IMAGE_PLUGIN_DIR), plugin


def _image_files() -> dict[str, Path | None]:
    """Every path the Dockerfile puts in the image -> the repository file it comes from (None for
    a directory made by RUN). COPY of files and directories, ``ln -s`` and ``python3 -m venv``."""
    files: dict[str, Path | None] = {}
    for line in DOCKERFILE.read_text().splitlines():
        copy = re.match(r"\s*COPY\s+(?!--)(.+)$", line)
        if copy:
            *sources, dest = copy.group(1).split()
            for src in sources:
                origin = REPO / src
                target = PurePosixPath(dest) / origin.name if dest.endswith("/") else PurePosixPath(dest)
                if origin.is_dir():
                    for f in origin.rglob("*"):
                        if f.is_file() and "__pycache__" not in f.parts:
                            files[str(target / f.relative_to(origin).as_posix())] = f
                else:
                    files[str(target)] = origin
        for target_of, link in re.findall(r"ln -s (\S+) (\S+)", line):
            for path, origin in list(files.items()):
                if path.startswith(target_of + "/"):
                    files[link + path[len(target_of):]] = origin
        for venv in re.findall(r"python3 -m venv (\S+)", line):
            files[venv] = None
    return files


def _in_image(files: dict[str, Path | None], path: str) -> bool:
    return path in files or any(p.startswith(path.rstrip("/") + "/") for p in files)


def test_every_path_the_config_names_is_in_the_image(effective: dict[str, Any]) -> None:
    """Orthanc exits at start-up when PythonScript or a Lua script is missing; the router is
    disabled when its model or environment is. Every one must be a path the Dockerfile fills."""
    files = _image_files()
    named = {"PythonScript": effective["PythonScript"], SECTION + ".ModelPath": effective[SECTION]["ModelPath"],
             SECTION + ".PythonEnvironment": effective[SECTION]["PythonEnvironment"]}
    named.update({f"LuaScripts[{i}]": p for i, p in enumerate(effective.get("LuaScripts") or [])})
    assert any(k.startswith("LuaScripts") for k in named), "the shutdown hook must be listed"
    missing = {k: v for k, v in named.items() if not _in_image(files, v)}
    assert not missing, f"named by the configuration but not in the image: {missing}"
    script = PurePosixPath(effective["PythonScript"])
    assert str(script.parent / "bodypart_router" / "orthanc_plugin" / "__init__.py") in files, \
        "the router's package must sit beside PythonScript in the image"
    assert files[effective["PythonScript"]] == ROUTER_SCRIPT
    for lua in effective["LuaScripts"]:
        assert files[lua] == SHUTDOWN_LUA
    model = PurePosixPath(effective[SECTION]["ModelPath"])
    assert str(model.parent / "MODEL_CARD.md") in files  # the integrity check reads it


def test_image_path_check_catches_a_missing_lua_script(effective: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(effective))
    broken["LuaScripts"] = ["../plugin/bodypart_router/orthanc_plugin/bootstrap/shutdown.lua"]
    with pytest.raises(AssertionError, match="LuaScripts"):
        test_every_path_the_config_names_is_in_the_image(broken)


def test_destinations_are_reached_by_service_name(effective: dict[str, Any], compose: dict[str, Any]) -> None:
    """127.0.0.1 inside the router's container is the container itself."""
    services = set(compose["services"])
    for name, peer in effective.get("OrthancPeers", {}).items():
        host = re.match(r"https?://([^:/]+)", peer["Url"] if isinstance(peer, dict) else peer[0]).group(1)  # type: ignore[union-attr]
        assert host in services, f"OrthancPeers.{name} points at {host}"
    for name, modality in effective.get("DicomModalities", {}).items():
        host = modality["Host"] if isinstance(modality, dict) else modality[1]
        assert host in services, f"DicomModalities.{name} points at {host}"


def test_orthanc_ports_are_published(router: dict[str, Any], effective: dict[str, Any]) -> None:
    targets = {int(p["target"]) for p in router.get("ports", [])}
    assert {int(effective.get("HttpPort", 8042)), int(effective.get("DicomPort", 4242))} <= targets
