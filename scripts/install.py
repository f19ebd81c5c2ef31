"""Add the bodypart-router to an existing Orthanc (Debian's ``orthanc`` service by default).

    sudo make install [ORTHANC_CONFIG=/etc/orthanc] [PREFIX=/opt/bodypart-router]
    sudo /usr/bin/python3 scripts/install.py --prefix /opt/bodypart-router --orthanc-config /etc/orthanc

1. copies the router (``plugin/``) and the model (``models/``) to PREFIX;
2. builds PREFIX/venv with the system ``python3`` (the Python that Orthanc's Python plugin
   embeds) and installs the router's packages in it (``--python-environment`` names an
   existing one instead);
3. edits the Orthanc configuration directory in place. Orthanc refuses a key defined in two of
   its files, so a key that a file already defines is changed *there* (Debian: ``PythonScript``
   in python.json; ``LuaScripts``, ``UserMetadata``, ``SaveJobs``, ``JobsHistorySize`` in
   orthanc.json), comments and layout kept, each edited file backed up as
   ``<file>.bak-bodypart-router``. Everything else goes to a new ``bodypart-router.json``,
   with a ``BodyPartRouter`` section whose ``Routes`` are empty: fill them in, then restart
   Orthanc (``systemctl restart orthanc``).

Running it again changes nothing that is already in place. Paths written are absolute, so the
configuration does not depend on Orthanc's working directory.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))

from bodypart_router.config import METADATA, load_orthanc_json  # noqa: E402

ROUTER_FILE = "bodypart-router.json"
BACKUP_SUFFIX = ".bak-bodypart-router"
#: The metadata the router writes that the shipped configuration declares, with its numbers (the
#: schema's, which orthanc-config/orthanc.json is written from).
USER_METADATA: dict[str, int] = {m.name: m.shipped for m in METADATA if m.shipped}
#: Orthanc keeps only this many finished jobs; the router tracks every forward job to its end.
MIN_JOBS_HISTORY = 1000


class InstallError(RuntimeError):
    pass


# ---- editing Orthanc's commented JSON in place -------------------------------------------------
def _skip(text: str, i: int) -> int:
    """Index after whitespace and comments starting at ``i``."""
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = len(text) if j < 0 else j + 2
        else:
            return i
    return i


def _string_end(text: str, i: int) -> int:
    """``text[i]`` is a quote: index after the closing quote."""
    i += 1
    while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _value_end(text: str, i: int) -> int:
    """Index after the JSON value starting at ``i`` (objects and arrays may hold comments)."""
    if text[i] == '"':
        return _string_end(text, i)
    if text[i] in "[{":
        depth = 0
        while True:
            i = _skip(text, i)
            c = text[i]
            if c == '"':
                i = _string_end(text, i)
                continue
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    m = re.compile(r"[^,}\]\s/]+").match(text, i)
    if not m:
        raise InstallError(f"cannot read a value at offset {i}")
    return m.end()


def find_key(text: str, key: str) -> tuple[int, int] | None:
    """Span of the value of a top-level ``key`` in an Orthanc configuration file, or None."""
    i = _skip(text, 0)
    if i >= len(text) or text[i] != "{":
        raise InstallError("not a JSON object")
    i += 1
    while True:
        i = _skip(text, i)
        if i >= len(text) or text[i] == "}":
            return None
        if text[i] == ",":
            i += 1
            continue
        end = _string_end(text, i)
        name = json.loads(text[i:end])
        i = _skip(text, end)
        if text[i] != ":":
            raise InstallError(f"expected ':' after {name!r}")
        start = _skip(text, i + 1)
        stop = _value_end(text, start)
        if name == key:
            return start, stop
        i = stop


def set_value(text: str, key: str, value: object) -> str:
    """Replace the value of a top-level key that the file defines."""
    span = find_key(text, key)
    assert span is not None
    return text[:span[0]] + json.dumps(value) + text[span[1]:]


def add_to_container(text: str, key: str, entry: str) -> str:
    """Insert ``entry`` (JSON text of a list item or an object member) first in the list or
    object that ``key`` holds, with a comma when the container is not empty."""
    span = find_key(text, key)
    assert span is not None
    start, stop = span
    inner = text[start + 1:stop - 1]
    empty = _skip(inner + "x", 0) == len(inner)
    indent = "\n    "
    return text[:start + 1] + indent + entry + ("" if empty else ",") + text[start + 1:]


# ---- the installation ----------------------------------------------------------------------------
def copy_router(prefix: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("plugin", "models"):
        target = prefix / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(REPO / name, target, ignore=ignore)


def build_environment(prefix: Path, python: str) -> Path:
    venv = prefix / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *deps], check=True)
    return venv


def _definitions(config_dir: Path) -> dict[str, Path]:
    """Top-level key -> the file of the configuration directory that defines it."""
    where: dict[str, Path] = {}
    for path in sorted(config_dir.glob("*.json")):
        for key in load_orthanc_json(path):
            where[key] = path
    return where


def configure(config_dir: Path, prefix: Path, venv: Path, log: list[str]) -> Path:
    """Edit the configuration directory (see the module docstring); returns the router's file."""
    bootstrap = prefix / "plugin" / "bodypart_router" / "orthanc_plugin" / "bootstrap"
    script = bootstrap / "orthanc_bootstrap.py"
    lua = bootstrap / "shutdown.lua"
    router_file = config_dir / ROUTER_FILE
    own: dict[str, object] = load_orthanc_json(router_file) if router_file.exists() else {}
    where = {k: p for k, p in _definitions(config_dir).items() if p != router_file}
    edits: dict[Path, str] = {}

    def text_of(path: Path) -> str:
        return edits.get(path) or path.read_text(encoding="utf-8")

    # PythonScript: orthanc-python runs one script; Debian's default names its sample.
    if "PythonScript" in where:
        current = load_orthanc_json(where["PythonScript"])["PythonScript"]
        if current != str(script):
            edits[where["PythonScript"]] = set_value(text_of(where["PythonScript"]), "PythonScript", str(script))
            log.append(f"{where['PythonScript']}: PythonScript {current} -> {script} (Orthanc's Python plugin runs "
                       "a single script; to keep your own, import it from the router's, see docs/install.md)")
    else:
        own["PythonScript"] = str(script)

    if "LuaScripts" in where:
        scripts = load_orthanc_json(where["LuaScripts"])["LuaScripts"] or []
        # where an earlier version of this installer put the hook (gone once the router is copied again)
        earlier = prefix / "plugin" / "bodypart_router" / "orthanc_plugin" / "shutdown.lua"
        if str(lua) not in scripts and str(earlier) in scripts:
            edits[where["LuaScripts"]] = text_of(where["LuaScripts"]).replace(json.dumps(str(earlier)), json.dumps(str(lua)))
            log.append(f"{where['LuaScripts']}: LuaScripts {earlier} -> {lua}")
        elif str(lua) not in scripts:
            edits[where["LuaScripts"]] = add_to_container(text_of(where["LuaScripts"]), "LuaScripts", json.dumps(str(lua)))
            log.append(f"{where['LuaScripts']}: LuaScripts += {lua}")
    else:
        own["LuaScripts"] = [str(lua)]

    if "UserMetadata" in where:
        existing = load_orthanc_json(where["UserMetadata"])["UserMetadata"] or {}
        taken = {v: k for k, v in existing.items()}
        text = text_of(where["UserMetadata"])
        for name, number in reversed(list(USER_METADATA.items())):
            if name in existing:
                continue
            if number in taken:
                raise InstallError(f"{where['UserMetadata']}: UserMetadata {number} is already {taken[number]}; "
                                   f"free it or add {name} by hand with another number (>= 1024)")
            text = add_to_container(text, "UserMetadata", f"{json.dumps(name)} : {number}")
        if text != text_of(where["UserMetadata"]):
            edits[where["UserMetadata"]] = text
            log.append(f"{where['UserMetadata']}: UserMetadata += {', '.join(USER_METADATA)}")
    else:
        own["UserMetadata"] = dict(USER_METADATA)

    for key, wanted in (("SaveJobs", False), ("JobsHistorySize", MIN_JOBS_HISTORY)):
        if key in where:
            current = load_orthanc_json(where[key])[key]
            if (key == "SaveJobs" and current is not False) or (key == "JobsHistorySize" and current < wanted):
                edits[where[key]] = set_value(text_of(where[key]), key, wanted)
                log.append(f"{where[key]}: {key} {json.dumps(current)} -> {json.dumps(wanted)}")
        else:
            own[key] = wanted

    if "BodyPartRouter" in where:
        log.append(f"{where['BodyPartRouter']} already has a BodyPartRouter section: left as it is")
    elif "BodyPartRouter" not in own:
        own["BodyPartRouter"] = {"Enabled": True, "ModelPath": str(prefix / "models" / "bodypart_router.onnx"),
                                 "PythonEnvironment": str(venv), "Routes": {}}
    else:
        own["BodyPartRouter"].update({"ModelPath": str(prefix / "models" / "bodypart_router.onnx"),  # type: ignore[union-attr]
                                      "PythonEnvironment": str(venv)})

    for path, text in edits.items():
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        if not backup.exists():
            shutil.copy2(path, backup)
        path.write_text(text, encoding="utf-8")
        load_orthanc_json(path)  # still valid
    header = ("// bodypart-router, added by scripts/install.py. Fill in BodyPartRouter.Routes (see the README's\n"
              "// Configuration and Adding a destination), then restart Orthanc.\n")
    router_file.write_text(header + json.dumps(own, indent=2) + "\n", encoding="utf-8")
    router_file.chmod(0o644)
    log.append(f"{router_file}: written")
    return router_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path("/opt/bodypart-router"))
    parser.add_argument("--orthanc-config", type=Path, default=Path("/etc/orthanc"),
                        help="Orthanc's configuration directory (Debian: /etc/orthanc)")
    parser.add_argument("--python", default="/usr/bin/python3", help="the Python that Orthanc's plugin embeds")
    parser.add_argument("--python-environment", type=Path,
                        help="an existing virtual environment with the router's packages (skips building one)")
    args = parser.parse_args(argv)
    config_dir = args.orthanc_config.resolve()
    if not config_dir.is_dir() or not list(config_dir.glob("*.json")):
        print(f"{config_dir} is not an Orthanc configuration directory (no *.json)", file=sys.stderr)
        return 2
    prefix = args.prefix.resolve()
    log: list[str] = []
    try:
        copy_router(prefix)
        venv = args.python_environment.resolve() if args.python_environment else build_environment(prefix, args.python)
        configure(config_dir, prefix, venv, log)
    except (InstallError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"install failed: {exc}", file=sys.stderr)
        return 1
    print(f"router installed in {prefix}")
    for line in log:
        print("  " + line)
    print(f"next: set BodyPartRouter.Routes in {config_dir / ROUTER_FILE}, then restart Orthanc "
          "(systemctl restart orthanc); GET /bodypart-router/status shows whether it runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
