"""The one-word health of the status."""

from __future__ import annotations

from bodypart_router.ops.health import Health, HealthState, summarize


def test_summary_order_disabled_then_stopped_then_degraded() -> None:
    assert summarize(disabled="bad config", stopped=True, problems=["x"]) == (HealthState.DISABLED,
                                                                                "disabled:bad config")
    assert summarize(disabled=None, stopped=True, problems=["x"]) == (HealthState.STOPPED, "stopped")
    assert summarize(disabled=None, stopped=False, problems=["a", "b"]) == (HealthState.DEGRADED, "degraded:a; b")
    assert summarize(disabled=None, stopped=False, problems=[]) == (HealthState.OK, "ok")
    assert [s.code for s in HealthState] == [0, 1, 2, 3]


def test_problems_are_reported_and_cleared_by_key() -> None:
    health = Health()
    health.problem("store", "disk full")
    health.problem("store", "disk still full")
    health.problem("classifier", "model gone")
    health.clear("classifier")
    health.clear("never-set")
    assert health.problems() == {"store": "disk still full"}
