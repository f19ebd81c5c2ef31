"""Build the project's wheel offline, from a clean copy of the sources (nothing written in the checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Where the bootstrap files lie inside the package (and so inside a wheel).
BOOTSTRAP_IN_PACKAGE = Path("bodypart_router", "orthanc_plugin", "bootstrap")


def build_wheel(workdir: Path) -> Path:
    """``pip wheel`` of a copy of pyproject.toml, README.md and plugin/ (setuptools of this environment)."""
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "plugin", source / "plugin", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = workdir / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("bodypart_router-*.whl")
    return wheel


def install_wheel(wheel: Path, target: Path) -> None:
    """Unpack the wheel into ``target`` as pip installs it (no dependencies, nothing downloaded)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, text=True)


def bootstrap_path(site: Path, *args: str) -> Path:
    """What ``bodypart-router bootstrap-path`` answers when the package comes from ``site``."""
    out = subprocess.run([sys.executable, "-c", "from bodypart_router.cli import main; raise SystemExit(main())",
                          "bootstrap-path", *args], env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         cwd=site, check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())
