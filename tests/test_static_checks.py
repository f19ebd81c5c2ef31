"""Static checks of the project's own code: a name or attribute that does not exist fails here,
not in Orthanc at run time (a stale ``events.emit`` once turned every wait for ingest into a
failed classification step). mypy checks the plugin with the settings in pyproject.toml;
pyflakes checks every folder for undefined names and unused imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The folders with the project's Python code.
FOLDERS = ("plugin", "tests", "bench", "scripts", "training")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_finds_nothing_in_the_plugin() -> None:
    done = _run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_pyflakes_finds_nothing_anywhere() -> None:
    done = _run("pyflakes", *FOLDERS)
    assert done.returncode == 0, done.stdout + done.stderr
