"""The status page is self-contained and consistent with itself.

It must work in an air-gapped hospital network (no external URL), with Orthanc mounted
under a prefix (relative URLs only), and every element status.js fills must exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PAGE_DIR = Path(__file__).resolve().parents[2] / "plugin" / "bodypart_router" / "orthanc_plugin" / "status_page"
FILES = ("status.html", "status.js", "explorer-link.js")


@pytest.mark.parametrize("name", FILES)
def test_no_external_or_absolute_urls(name: str) -> None:
    text = (PAGE_DIR / name).read_text(encoding="utf-8")
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{name} refers to an external URL"
    assert not re.search(r"""(src|href)=["']/""", text), f"{name} uses an absolute path; use a relative one"
    assert not re.search(r"""(fetch|request)\(\s*["'][A-Z]*["']?,?\s*["']/""", text), f"{name} calls an absolute URL"


def test_every_element_the_script_uses_exists_in_the_page() -> None:
    html = (PAGE_DIR / "status.html").read_text(encoding="utf-8")
    js = (PAGE_DIR / "status.js").read_text(encoding="utf-8")
    used = set(re.findall(r"""\$\("([a-z-]+)"\)""", js))
    declared = set(re.findall(r'id="([a-z-]+)"', html))
    assert used, "status.js should look elements up by id"
    assert used <= declared, f"missing in status.html: {sorted(used - declared)}"
    assert '<script src="status.js"></script>' in html


def test_status_page_reads_the_documented_endpoints() -> None:
    js = (PAGE_DIR / "status.js").read_text(encoding="utf-8")
    for call in ('request("GET", "status")', 'request("POST", "backfill"', 'request("DELETE", "backfill")', 'request("POST", "resubmit"',
                 'request("POST", "explain"', 'request("POST", "reroute"'):
        assert call in js


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("name", ("status.js", "explorer-link.js"))
def test_scripts_parse(name: str) -> None:
    result = subprocess.run(["node", "--check", str(PAGE_DIR / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


RESOURCE_DIR = PAGE_DIR.parent / "resource_page"


@pytest.mark.parametrize("name", ("resource.html", "resource.js"))
def test_resource_page_is_self_contained_and_relative(name: str) -> None:
    text = (RESOURCE_DIR / name).read_text(encoding="utf-8")
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{name} refers to an external URL"
    assert not re.search(r"""(src|href)=["']/""", text), f"{name} uses an absolute path"
    if name.endswith(".js"):
        html = (RESOURCE_DIR / "resource.html").read_text(encoding="utf-8")
        used = set(re.findall(r"""\$\("([a-z-]+)"\)""", text))
        assert used and used <= set(re.findall(r'id="([a-z-]+)"', html))
        if shutil.which("node"):
            result = subprocess.run(["node", "--check", str(RESOURCE_DIR / name)], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
