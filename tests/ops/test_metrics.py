"""Router metrics: Prometheus names and values, the status JSON, thread safety, the publisher."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from bodypart_router.ops.metrics import MetricsPublisher, RouterMetrics, metric_name
from bodypart_router.states import InstanceState

#: A Prometheus exposition series: name, optional labels (the text format's grammar).
SERIES = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})?$')


def test_metric_name_carries_labels_escaped_as_the_exposition_format_requires() -> None:
    assert metric_name("classified_total", **{"class": "adult_chest"}) == 'bodypart_router_classified_total{class="adult_chest"}'
    assert metric_name("forwards_total", destination="AI-Chest.2") == 'bodypart_router_forwards_total{destination="AI-Chest.2"}'
    assert metric_name("header_verdicts_total", station='CR "1"\\x', verdict="agree") == \
        'bodypart_router_header_verdicts_total{station="CR \\"1\\"\\\\x",verdict="agree"}'
    assert metric_name("queue_depth") == "bodypart_router_queue_depth"
    assert SERIES.match(metric_name("header_mismatch_ratio", station='a"b\nc'))


def _busy_metrics() -> RouterMetrics:
    m = RouterMetrics(clock=lambda: 1_800_000_000.0)
    m.set_model("effnet", "effnet@0123456789ab", "0123456789ab" + "0" * 52, "CPUExecutionProvider")
    m.register_destinations(["ai-chest", "ai-spine"])
    m.watch_queue(lambda: 7)
    for cls in ("adult_chest", "adult_chest", "spine", "uncertain"):
        m.classified(cls)
    m.not_classified(InstanceState.SKIPPED_NON_PROJECTION_MODALITY)
    m.not_classified(InstanceState.FAILED_UNDECODABLE_PIXELS)
    m.observe("decode", 0.04)
    m.observe("inference", 0.8, instances=8)  # a batch of 8: 0.1 s each
    m.forwarded("ai-chest")
    m.forward_failed("ai-spine")
    m.dead_lettered("ai-spine")
    m.circuit("ai-spine", "open")
    m.would_forward("ai-chest", "adult_chest")
    m.header_audit("CR_ROOM_1", "agree")
    m.header_audit("CR_ROOM_1", "disagree")
    return m


def test_prometheus_values_cover_every_required_family() -> None:
    v = _busy_metrics().values(destinations={"ai-spine": {"Pending": 6, "DeadLetters": 2}})
    assert all(SERIES.match(name) for name in v)
    assert v["bodypart_router_enabled"] == 1
    assert v['bodypart_router_classified_total{class="adult_chest"}'] == 2
    assert v['bodypart_router_classified_total{class="abdominal"}'] == 0  # every class appears from the start
    assert v['bodypart_router_classified_total{class="uncertain"}'] == 1
    assert v['bodypart_router_skipped_total{reason="non-projection-modality"}'] == 1
    assert v['bodypart_router_failed_total{reason="undecodable-pixels"}'] == 1
    assert v["bodypart_router_queue_depth"] == 7
    assert v["bodypart_router_inference_seconds_count"] == 8
    assert v["bodypart_router_inference_seconds_sum"] == pytest.approx(0.8)
    assert v['bodypart_router_inference_seconds_bucket{le="0.05"}'] == 0
    assert v['bodypart_router_inference_seconds_bucket{le="0.1"}'] == 8
    assert v['bodypart_router_inference_seconds_bucket{le="+Inf"}'] == 8
    assert v['bodypart_router_decode_seconds_bucket{le="0.05"}'] == 1
    assert v['bodypart_router_forwards_total{destination="ai-chest"}'] == 1
    assert v['bodypart_router_forwards_total{destination="ai-spine"}'] == 0
    assert v['bodypart_router_forward_failures_total{destination="ai-spine"}'] == 1
    assert v['bodypart_router_dead_lettered_total{destination="ai-spine"}'] == 1
    assert v['bodypart_router_dead_letters{destination="ai-spine"}'] == 2  # from the store: outlives restarts
    assert v['bodypart_router_forwards_pending{destination="ai-spine"}'] == 6
    assert v['bodypart_router_forwards_pending{destination="ai-chest"}'] == 0
    assert v['bodypart_router_circuit_state{destination="ai-spine"}'] == 2
    assert v['bodypart_router_circuit_state{destination="ai-chest"}'] == 0
    assert v['bodypart_router_execution_provider{provider="CPUExecutionProvider"}'] == 1
    assert v['bodypart_router_would_forward_total{destination="ai-chest",class="adult_chest"}'] == 1
    assert v['bodypart_router_header_verdicts_total{station="CR_ROOM_1",verdict="disagree"}'] == 1
    assert v['bodypart_router_header_mismatch_ratio{station="CR_ROOM_1"}'] == 0.5
    assert v["bodypart_router_shadow_mode"] == 0
    assert RouterMetrics().values(enabled=False)["bodypart_router_enabled"] == 0


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    m = RouterMetrics()
    for seconds in (0.001, 0.03, 0.3, 20.0):  # the last one beyond every finite bound
        m.observe("decode", seconds)
    v = m.values()
    buckets = [(k, n) for k, n in v.items() if k.startswith("bodypart_router_decode_seconds_bucket")]
    counts = [n for _, n in buckets]
    assert counts == sorted(counts)  # cumulative: never decreasing with the bound
    assert buckets[-1] == ('bodypart_router_decode_seconds_bucket{le="+Inf"}', 4)
    assert v['bodypart_router_decode_seconds_bucket{le="10"}'] == 3
    assert v["bodypart_router_decode_seconds_count"] == 4


def test_status_snapshot_is_json_and_complete() -> None:
    m = _busy_metrics()
    m.set_shadow_mode(True)
    m.watch_backfill(lambda: {"State": "running", "Done": 10, "Total": 40, "Rate": 5.0, "EtaSeconds": 6.0})
    m.decision("inst-1", class_name="adult_chest", score=0.97123, state="forwarded", destinations=["ai-chest"], header_audit="agree:adult_chest")
    m.decision("inst-2", class_name="spine", score=0.5, state="classified", source="backfill")
    m.annotate("inst-2", HeaderAudit="disagree:others")
    m.annotate("unknown-instance", HeaderAudit="agree:spine")  # nothing to annotate: ignored
    m.failure("inst-3", "failed:undecodable-pixels", "Pixel Data (7FE0,0010) is truncated")
    snap = json.loads(json.dumps(m.snapshot()))
    assert snap["Mode"] == "shadow"
    assert snap["Model"]["ExecutionProvider"] == "CPUExecutionProvider"
    assert snap["QueueDepth"] == 7
    assert snap["Counts"]["Classified"]["adult_chest"] == 2
    assert snap["Counts"]["Skipped"] == {"non-projection-modality": 1}
    assert snap["Counts"]["Failed"] == {"undecodable-pixels": 1}
    assert snap["Timings"]["Inference"] == {"Count": 8, "SumSeconds": 0.8, "MeanSeconds": 0.1}
    assert snap["Destinations"]["ai-spine"] == {"Forwards": 0, "Failures": 1, "DeadLetters": 1, "Circuit": "open"}
    assert snap["Shadow"] == {"ai-chest": {"adult_chest": 1}}
    assert snap["HeaderAudit"]["CR_ROOM_1"]["mismatch_rate"] == 0.5
    assert [r["Instance"] for r in snap["Recent"]] == ["inst-2", "inst-1"]  # newest first
    assert snap["Recent"][1]["Score"] == 0.9712
    assert snap["Recent"][0]["HeaderAudit"] == "disagree:others"
    assert snap["Failures"][0]["Detail"].startswith("Pixel Data (7FE0,0010)")
    assert snap["Backfill"]["Done"] == 10
    v = m.values()
    assert v["bodypart_router_backfill_planned_instances"] == 40 and v["bodypart_router_backfill_running"] == 1
    assert v["bodypart_router_shadow_mode"] == 1


def test_recent_history_is_bounded_and_failures_can_be_cleared() -> None:
    m = RouterMetrics(recent_size=3, failures_size=2)
    for i in range(5):
        m.decision(f"i{i}", class_name="spine", score=0.9, state="classified")
        m.failure(f"f{i}", "failed:model-error")
    snap = m.snapshot()
    assert [r["Instance"] for r in snap["Recent"]] == ["i4", "i3", "i2"]
    assert [f["Instance"] for f in snap["Failures"]] == ["f4", "f3"]
    m.clear_failure("f4")
    assert [f["Instance"] for f in m.snapshot()["Failures"]] == ["f3"]


def test_bad_inputs_are_refused_with_a_clear_message() -> None:
    m = RouterMetrics()
    with pytest.raises(ValueError, match="skipped:<reason>"):
        m.not_classified(InstanceState.CLASSIFIED)
    with pytest.raises(ValueError, match="circuit state"):
        m.circuit("ai", "broken")


def test_counters_are_exact_under_concurrency() -> None:
    m = RouterMetrics()

    def work() -> None:
        for _ in range(2000):
            m.classified("spine")
            m.forwarded("ai-spine")
            m.observe("decode", 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = m.values()
    assert v['bodypart_router_classified_total{class="spine"}'] == 16000
    assert v['bodypart_router_forwards_total{destination="ai-spine"}'] == 16000
    assert v["bodypart_router_decode_seconds_count"] == 16000


def test_publish_pushes_every_value_each_time_so_none_goes_stale() -> None:
    # Orthanc stamps a metric with the time it was last set: an unchanged value must be set
    # again, or Prometheus drops the series once its stamp is older than the lookback window.
    m = RouterMetrics()
    first: dict[str, float] = {}
    assert m.publish(first.__setitem__) == len(first)
    m.classified("spine")
    second: dict[str, float] = {}
    m.publish(second.__setitem__)
    assert second['bodypart_router_classified_total{class="spine"}'] == 1
    assert second['bodypart_router_classified_total{class="others"}'] == 0  # unchanged, pushed again
    assert set(second) == set(first)


def test_publisher_thread_publishes_survives_errors_and_stops() -> None:
    m = RouterMetrics()
    calls: list[str] = []
    errors: list[BaseException] = []

    def flaky(name: str, value: float) -> None:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("Orthanc is busy")

    pub = MetricsPublisher(m, flaky, interval=0.02, on_error=errors.append).start()
    deadline = time.monotonic() + 5
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    pub.stop()
    assert errors and isinstance(errors[0], RuntimeError)
    assert 'bodypart_router_classified_total{class="spine"}' in calls
    assert not pub.running
