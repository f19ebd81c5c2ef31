"""``make demo``: stopped by SIGTERM, it stops every Orthanc it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from support.orthanc import REPO, get_runtime

pytestmark = pytest.mark.integration


def test_sigterm_stops_the_demo_and_its_three_orthancs() -> None:
    if reason := get_runtime("host").unavailable():
        pytest.skip(f"host Orthanc unavailable: {reason}")
    demo = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo.py"), "--keep-running"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    urls: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        for line in demo.stdout:
            found = re.match(r"(router|ai-chest|ai-general)\s+(http://127\.0\.0\.1:\d+)", line)
            if found:
                urls.append(found.group(2))
            if "servers are running" in line or time.monotonic() > deadline:
                break
        assert len(urls) == 3, urls  # router, ai-chest, ai-general
        assert all(requests.get(u + "/system", timeout=5).ok for u in urls)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) in (0, 1)  # the keep-running loop ends as with Ctrl-C (1: a file misrouted)
        for url in urls:
            with pytest.raises(requests.ConnectionError):
                requests.get(url + "/system", timeout=5)
    finally:
        if demo.poll() is None:
            os.kill(demo.pid, signal.SIGKILL)
            demo.wait()
