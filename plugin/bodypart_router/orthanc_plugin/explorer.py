"""Orthanc Explorer integration: on Orthanc 1.10 its pages hide user metadata and there are no
labels, so a small script shows the router's result on instance, series and study pages."""

from __future__ import annotations

from pathlib import Path

import orthanc  # type: ignore[import-not-found]

SCRIPT = Path(__file__).with_name("explorer.js")
#: Orthanc keeps one Explorer script per plugin (a second call replaces the first), so every
#: script of the router is joined here: the result panel and the status page's button.
SCRIPTS = (SCRIPT, Path(__file__).parent / "status_page" / "explorer-link.js")


def register() -> None:
    """Must run while the plugin loads (Orthanc only accepts Explorer extensions then)."""
    orthanc.ExtendOrthancExplorer("\n".join(p.read_text(encoding="utf-8") for p in SCRIPTS))
