"""The "trixie" runtime: Orthanc 1.12 from Debian 13, run in the root that
``scripts/trixie_root.py`` builds under ``build/trixie-root``.

Importing this module registers it in :data:`support.orthanc.RUNTIMES`, so
``OrthancProcess(config, runtime="trixie")`` works like the host runtime:

* Orthanc is chrooted into the root inside a private mount namespace
  (``unshare --mount``). Host directories the process needs are bind-mounted at the
  *same path* inside the root, so ``path()`` is the identity and configs written by the
  harness work unchanged. The mounts live only as long as the Orthanc process: a SIGKILL
  leaves nothing mounted on the host.
* The network namespace is the host's, so the host talks to it on 127.0.0.1:<port>
  and it reaches peers started by the host runtime the same way.
* The plugin's packages come from the root's Python 3.13 venv (the host's .venv is for
  Python 3.11 and cannot be loaded by Debian 13's orthanc-python).

Made visible inside the root: the host's temporary directory (work directories, storage,
test files), the repository (plugin/, models/), the config file's directory, and the
directories of the config's own file paths (storage, index, Python script, model, state).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from support.orthanc import REPO, RUNTIMES, Runtime


def _load_builder() -> ModuleType:
    """scripts/trixie_root.py, the one place that knows the root's layout."""
    path = REPO / "scripts" / "trixie_root.py"
    spec = importlib.util.spec_from_file_location("trixie_root", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()

#: Directories of the root that a host directory must never be mounted over: these trees
#: (the root's system and the router's venv) and these top-level directories themselves.
_SYSTEM_TREES = ("/usr", "/etc", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/proc", "/sys", "/dev",
                 "/run", "/opt/bodypart-router")
_TOP_DIRS = ("/", "/var", "/opt", "/srv", "/home", "/root", "/mnt", "/media")
#: Keys of an Orthanc config whose values are host paths the process reads or writes.
_PATH_KEYS = ("StorageDirectory", "IndexDirectory", "PythonScript")
_ROUTER_PATH_KEYS = ("ModelPath", "StateDirectory")

#: Environment variables of the test process passed through to Orthanc (the router's own).
_FORWARDED_ENV_PREFIX = "BODYPART_"


@lru_cache(maxsize=1)
def _namespaces_work() -> str | None:
    """None if this machine lets us create a mount namespace, else the error."""
    try:
        done = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"


def _nearest_existing_dir(path: Path) -> Path:
    """The directory to bind for ``path``: itself if it is a directory, else its nearest existing parent."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return path
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path("/")


def host_dirs(config_path: Path, config: dict[str, Any]) -> list[Path]:
    """Host directories to bind at the same path inside the root for this config.

    Nested directories are folded into their ancestor. Raises ``ValueError`` naming the
    config key when a path would cover the root's own system directories.
    """
    wanted: dict[Path, str] = {
        Path(tempfile.gettempdir()).resolve(): "the temporary directory",
        REPO: "the repository",
        config_path.resolve().parent: "the config file",
    }
    section = config.get("BodyPartRouter") or {}
    candidates = [(k, config.get(k)) for k in _PATH_KEYS]
    candidates += [(f"BodyPartRouter.{k}", section.get(k)) for k in _ROUTER_PATH_KEYS]
    for key, value in candidates:
        if isinstance(value, str) and value.startswith("/"):
            wanted.setdefault(_nearest_existing_dir(Path(value)).resolve(), key)
    for directory, why in wanted.items():
        text = str(directory)
        if text in _TOP_DIRS or any(text == d or text.startswith(d + "/") for d in _SYSTEM_TREES):
            raise ValueError(
                f"{why} ({text}) cannot be shown inside the Debian 13 root: it would hide the root's "
                "own system files; put it under the temporary directory or the repository"
            )
    ordered = sorted(wanted, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for d in ordered:
        if not any(d == k or k in d.parents for k in kept):
            kept.append(d)
    return kept


class TrixieRuntime(Runtime):
    """Debian 13's Orthanc 1.12.7 with orthanc-python 5 (Python 3.13) and orthanc-gdcm, chrooted."""

    name = "trixie"

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else builder.ROOT
        self.plugins = [str(builder.PLUGIN_DIR / "libOrthancPython.so"), str(builder.PLUGIN_DIR / "libOrthancGdcm.so")]
        self.python_environment = str(builder.VENV)
        self.env = {}

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "running Orthanc in the Debian 13 root needs root (chroot, mount)"
        if reason := _namespaces_work():
            return f"cannot create a mount namespace here (unshare --mount: {reason})"
        return builder.problem(self.root)

    def command(self, config_path: Path, args: Sequence[str] = ()) -> list[str]:
        config = json.loads(Path(config_path).read_text())
        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIX)}
        env.update(self.env)
        return builder.enter_command(
            [str(builder.ORTHANC), *args, str(Path(config_path).resolve())],
            binds=host_dirs(Path(config_path), config),
            root=self.root,
            env=env,
        )


RUNTIMES["trixie"] = TrixieRuntime
