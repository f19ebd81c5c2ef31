"""Orthanc Explorer integration: on Orthanc 1.10 its pages hide user metadata and there are no
labels, so a small script shows the router's result on instance, series and study pages."""

from __future__ import annotations

from pathlib import Path

import orthanc  # type: ignore[import-not-found]

SCRIPT = Path(__file__).with_name("explorer.js")


def register() -> None:
    """Must run while the plugin loads (Orthanc only accepts Explorer extensions then)."""
    orthanc.ExtendOrthancExplorer(SCRIPT.read_text(encoding="utf-8"))
