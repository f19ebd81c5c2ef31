"""A real Prometheus (Debian's package) scraping a real Orthanc with the router, left idle.

Orthanc stamps each metric with the time it was last set, and Prometheus stops returning a
series whose newest sample is older than its lookback window (``--query.lookback-delta``, 5
minutes by default). The router's alert series (a destination that stays down, dead letters
that stay dead, an empty queue) do not change while nothing happens, so they must be set again
regularly. Here Prometheus runs with a 15-second window and the Orthanc stays idle for three
windows: a series that was not refreshed is gone by then. The same run with the default
5-minute window and 6 idle minutes is recorded in docs/prometheus/README.md.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from support import dicoms
from support.orthanc import OrthancProcess, Runtime, free_port, get_runtime, router_config, wait_router_started
from support.tiny_model import gray_for

pytestmark = pytest.mark.integration

PROMETHEUS = "/usr/bin/prometheus"
LOOKBACK_SECONDS = 15
SCRAPE_SECONDS = 2
#: Three lookback windows without a single change on the Orthanc side.
IDLE_SECONDS = 3 * LOOKBACK_SECONDS
ALERT_SERIES = (
    'bodypart_router_circuit_state{destination="ai-down"}',
    'bodypart_router_dead_letters{destination="ai-down"}',
    'bodypart_router_forwards_pending{destination="ai-down"}',
    "bodypart_router_queue_depth",
    "bodypart_router_enabled",
    'bodypart_router_classified_total{class="abdominal"}',
    'bodypart_router_dead_lettered_total{destination="ai-down"}',
)


@pytest.fixture(scope="module")
def host() -> Runtime:
    runtime = get_runtime("host")
    reason = runtime.unavailable()
    if reason:
        pytest.skip(f"host Orthanc unavailable: {reason}")
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} is missing: apt-get install prometheus (make setup does)")
    return runtime


class Prometheus:
    """``prometheus`` scraping one Orthanc, on a free loopback port, with its own data directory."""

    def __init__(self, target: OrthancProcess, workdir: Path, lookback_seconds: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_SECONDS}s\n"
            f"  scrape_timeout: {SCRAPE_SECONDS}s\n"
            "scrape_configs:\n"
            "  - job_name: orthanc\n"
            "    metrics_path: /tools/metrics-prometheus\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target.http_port}']}}]\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", f"--query.lookback-delta={lookback_seconds}s"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(expr)
                if result:
                    return result
            except requests.RequestException:
                pass  # still starting
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never returned {expr}; log:\n"
                             + (self.workdir / "prometheus.log").read_text()[-3000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def idle_router(host: Runtime, tmp_path: Path) -> Iterator[OrthancProcess]:
    """A router whose only destination is down: one abdominal X-ray becomes a dead letter."""
    from support import tiny_model

    model = tmp_path / "tiny.onnx"
    sha256 = tiny_model.build(model)
    config = router_config(
        host, model=model, routes={"abdominal": ["ai-down"]}, peers={"ai-down": "http://127.0.0.1:9/"},
        router={"ModelSha256": sha256, "Retry": {"MaxAttempts": 1, "BackoffSeconds": 0.2, "MaxBackoffSeconds": 0.5},
                "CircuitBreaker": {"FailureThreshold": 1}})
    router = OrthancProcess(config, runtime=host, name="router")
    try:
        router.start()
        wait_router_started(router, timeout=30)
        router.upload(dicoms.to_bytes(dicoms.xray(gray_for("abdominal"))))
        router.wait_for(lambda: router.get_json("/bodypart-router/failed")["Failed"], timeout=60,
                        what="the abdominal X-ray dead-lettered")
        yield router
    finally:
        router.cleanup()


def test_alert_series_stay_visible_while_nothing_changes(idle_router: OrthancProcess, tmp_path: Path) -> None:
    prom = Prometheus(idle_router, tmp_path, LOOKBACK_SECONDS)
    try:
        prom.wait_for('bodypart_router_circuit_state{destination="ai-down"} == 2')
        time.sleep(IDLE_SECONDS)
        missing = [s for s in ALERT_SERIES if not prom.query(s)]
        assert not missing, f"series gone after {IDLE_SECONDS} s without change: {missing}"
        assert float(prom.query('bodypart_router_circuit_state{destination="ai-down"}')[0]["value"][1]) == 2
        assert float(prom.query('bodypart_router_dead_letters{destination="ai-down"}')[0]["value"][1]) == 1
        # the shipped alert expressions fire on this outage (docs/prometheus/alerts.yml)
        assert prom.query("max by (destination) (bodypart_router_circuit_state) >= 2")
        assert prom.query("bodypart_router_dead_letters > 0")
        # real cumulative buckets: histogram_quantile works on them
        quantile = prom.query("histogram_quantile(0.5, sum by (le) (bodypart_router_decode_seconds_bucket))")
        assert quantile and quantile[0]["value"][1] not in ("NaN", "+Inf")
    finally:
        prom.stop()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
