"""docs/prometheus/: the alert rules and the dashboard name only series the router publishes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bodypart_router.ops.metrics import RouterMetrics
from bodypart_router.states import InstanceState

DOCS = Path(__file__).resolve().parent.parent / "docs" / "prometheus"
NAME = re.compile(r"\bbodypart_router_[a-z_]+")


def _published_names() -> set[str]:
    m = RouterMetrics()
    m.register_destinations(["ai-chest"])
    m.watch_queue(lambda: 0)
    m.watch_backfill(lambda: {"State": "running", "Done": 1, "Total": 2, "Rate": 1.0, "EtaSeconds": 1.0})
    m.set_model("m", "m@0", "0" * 64, "CPUExecutionProvider")
    m.header_audit("CR1", "agree")
    m.header_audit("CR1", "disagree")
    m.would_forward("ai-chest", "spine")
    m.not_classified(InstanceState.SKIPPED_NOT_DICOM)
    m.not_classified(InstanceState.FAILED_MODEL_ERROR)
    names = {s.split("{")[0] for s in m.values(destinations={"ai-chest": {"Pending": 0, "DeadLetters": 0}})}
    # a histogram is queried as <name>_bucket / _sum / _count: all published
    return names


def _used(text: str) -> set[str]:
    return set(NAME.findall(text))


def test_alerts_and_dashboard_use_only_published_series() -> None:
    published = _published_names()
    alerts = (DOCS / "alerts.yml").read_text()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    unknown = (_used(alerts) | _used(exprs)) - published
    assert not unknown, f"not published by the router: {sorted(unknown)}"
    for required in ("bodypart_router_circuit_state", "bodypart_router_dead_letters", "bodypart_router_enabled",
                     "bodypart_router_forwards_pending", "bodypart_router_queue_depth"):
        assert required in alerts


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is not installed")
def test_alert_rules_are_valid_for_prometheus() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(DOCS / "alerts.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
