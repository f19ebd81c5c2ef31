"""Backfill planning, checkpointing, resuming and throttling, against the in-memory ``FakeOrthanc``.

The fake answers what the backfill asks the way Orthanc does (pages of instances, a
study-level find with ``Since``/``Limit``, a UID lookup, a study's instances). The
real-Orthanc run is in tests/integration/test_ops.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.fake_orthanc import FakeOrthanc

from bodypart_router.forwarding.backfill import (
    CANCELLED,
    DONE,
    FAILED,
    BackfillBusy,
    BackfillError,
    BackfillRunner,
    Checkpoint,
    RateMeter,
    Scope,
    TokenBucket,
    plan,
)


def archive_orthanc(studies: dict[str, tuple[str, int]]) -> FakeOrthanc:
    """study id -> (StudyDate, number of instances); StudyInstanceUID ``1.2.3.<study id>``."""
    fake = FakeOrthanc()
    for study_id, (date, count) in studies.items():
        fake.add_study(study_id, date, count)
    return fake


ARCHIVE = {"s1": ("20231231", 3), "s2": ("20240101", 4), "s3": ("20240615", 2), "s4": ("", 1)}


# ---- scope -----------------------------------------------------------------------------


def test_scope_from_request() -> None:
    assert Scope.from_request({}) == Scope()
    s = Scope.from_request({"Since": "2024-01-01", "Route": True, "RatePerSecond": 5})
    assert (s.since.isoformat(), s.route, s.rate_per_second) == ("2024-01-01", True, 5.0)
    assert Scope.from_request({"Since": "20240101"}).since == s.since
    assert Scope.from_request({"Studies": ["a", "b", "a"]}).studies == ("a", "b")
    assert Scope.from_dict(s.as_dict()) == s


@pytest.mark.parametrize(
    "body, message",
    [
        ([1], "JSON object"),
        (None, "JSON object"),
        ({"Since": 20240101}, "Since: expected a date as a string"),
        ({"Studies": None}, "Studies: expected"),
        ({"Route": "false"}, "Route: expected true or false"),
        ({"Since": "01/02/2024"}, "Since: expected a date"),
        ({"Studies": []}, "Studies: expected a non-empty list"),
        ({"Studies": "abc"}, "Studies: expected"),
        ({"Since": "2024-01-01", "Studies": ["x"]}, "not both"),
        ({"Route": "yes"}, "Route: expected true or false"),
        ({"RatePerSecond": 0}, "RatePerSecond"),
        ({"Sinse": "2024-01-01"}, "unknown field"),
    ],
)
def test_scope_rejects_bad_requests(body: Any, message: str) -> None:
    with pytest.raises(BackfillError, match=message):
        Scope.from_request(body)


# ---- planning --------------------------------------------------------------------------


def _flat(pages: Any) -> list[str]:
    return [i for page in pages for i in page]


def test_plan_everything_pages_through_instances() -> None:
    fake = archive_orthanc(ARCHIVE)
    assert _flat(plan(fake, Scope(), page_size=4)) == fake.all_instances()
    assert sum(c.startswith("GET /instances") for c in fake.calls) == 3  # 4 + 4 + 2


def test_plan_since_uses_study_date() -> None:
    fake = archive_orthanc(ARCHIVE)
    ids = _flat(plan(fake, Scope.from_request({"Since": "2024-01-01"}), page_size=1))
    assert ids == ["s2-i0", "s2-i1", "s2-i2", "s2-i3", "s3-i0", "s3-i1"]  # not s1 (2023), not s4 (no date)


def test_plan_studies_accepts_ids_and_uids_and_names_a_missing_uid() -> None:
    fake = archive_orthanc(ARCHIVE)
    assert _flat(plan(fake, Scope(studies=("s3", "1.2.3.s4")))) == ["s3-i0", "s3-i1", "s4-i0"]
    with pytest.raises(BackfillError, match="StudyInstanceUID 1.2.3.nope"):
        _flat(plan(fake, Scope(studies=("1.2.3.nope",))))


# ---- throttling ------------------------------------------------------------------------


def test_token_bucket_enforces_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=1.0, clock=lambda: now[0])
    assert bucket.wait_time() == 0.0
    assert bucket.wait_time() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.wait_time() == 0.0


def test_rate_meter() -> None:
    now = [0.0]
    meter = RateMeter(window=10, clock=lambda: now[0])
    meter.add(0)
    assert meter.rate() is None
    now[0] = 2.0
    meter.add(10)
    assert meter.rate() == pytest.approx(5.0)


# ---- runner ----------------------------------------------------------------------------


class Recorder:
    """The ``process`` callable: records calls, can block, can fail on chosen instances."""

    def __init__(self, fail: set[str] = frozenset(), gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail = fail
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, instance: str, route: bool) -> str:
        if self.gate is not None:
            self.gate.wait(5)
        with self.lock:
            self.calls.append((instance, route))
        if instance in self.fail:
            raise RuntimeError("decoder crashed")
        return "skipped:non-projection-modality" if instance.endswith("i1") else "classified"


def test_backfill_runs_to_completion_with_outcomes(tmp_path: Path) -> None:
    fake, process = archive_orthanc(ARCHIVE), Recorder(fail={"s2-i2"})
    runner = BackfillRunner(fake, Checkpoint(tmp_path / "bf.sqlite3"), process)
    runner.start(Scope(route=True, rate_per_second=1000))
    assert runner.wait(10)
    p = runner.progress()
    assert p is not None
    assert (p["State"], p["Done"], p["Total"], p["Planned"]) == (DONE, 10, 10, True)
    assert p["Outcomes"] == {"classified": 6, "failed": 1, "skipped": 3}
    assert p["FinishedAt"] and p["Scope"]["Route"] is True
    assert [c[0] for c in process.calls] == fake.all_instances()
    assert all(route for _, route in process.calls)


def test_backfill_resumes_after_a_restart_without_redoing_work(tmp_path: Path) -> None:
    fake = archive_orthanc({"s1": ("20240101", 12)})
    slow = Recorder()
    first = BackfillRunner(fake, Checkpoint(tmp_path / "bf.sqlite3"), slow)
    first.start(Scope(rate_per_second=5))  # a burst of 5, then one every 0.2 s
    deadline = time.monotonic() + 5
    while len(slow.calls) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.stop()  # Orthanc stops: the checkpoint keeps the run active
    done_before = first.progress()["Done"]
    assert 6 <= done_before < 12
    assert first.progress()["State"] == "running"

    second_process = Recorder()
    second = BackfillRunner(fake, Checkpoint(tmp_path / "bf.sqlite3"), second_process)
    assert second.resume() is True
    assert second.wait(10)
    p = second.progress()
    assert (p["State"], p["Done"], p["Total"]) == (DONE, 12, 12)
    assert len(second_process.calls) == 12 - done_before  # only what was left
    assert second.resume() is False  # nothing left to resume


def test_backfill_interrupted_while_planning_plans_again(tmp_path: Path) -> None:
    fake = archive_orthanc(ARCHIVE)
    cp = Checkpoint(tmp_path / "bf.sqlite3")
    cp.new_job({"State": "planning", "Scope": Scope(rate_per_second=1000).as_dict(), "Planned": False})
    cp.add(["s1-i0"])  # a partial plan from before the restart
    cp.mark_done("s1-i0", "classified")
    process = Recorder()
    runner = BackfillRunner(fake, cp, process)
    assert runner.resume()
    assert runner.wait(10)
    assert runner.progress()["Done"] == 10
    assert "s1-i0" not in [c[0] for c in process.calls]


def test_backfill_yields_to_live_ingest(tmp_path: Path) -> None:
    fake = archive_orthanc({"s1": ("20240101", 3)})
    live = [2]
    process = Recorder()
    runner = BackfillRunner(fake, Checkpoint(tmp_path / "bf.sqlite3"), process, live_queue_depth=lambda: live[0])
    runner.start(Scope(rate_per_second=1000))
    time.sleep(0.5)
    assert process.calls == []  # live queue busy: the backfill waits
    assert runner.progress()["State"] == "running"
    live[0] = 0
    assert runner.wait(10)
    assert len(process.calls) == 3
    assert runner.progress()["YieldedSeconds"] >= 0.4


def test_backfill_is_throttled(tmp_path: Path) -> None:
    fake = archive_orthanc({"s1": ("20240101", 12)})
    runner = BackfillRunner(fake, Checkpoint(tmp_path / "bf.sqlite3"), Recorder())
    started = time.monotonic()
    runner.start(Scope(rate_per_second=20))
    assert runner.wait(10)
    fast = time.monotonic() - started  # 12 instances fit in the burst of 20
    runner2 = BackfillRunner(archive_orthanc({"s1": ("20240101", 12)}), Checkpoint(tmp_path / "bf2.sqlite3"), Recorder())
    started = time.monotonic()
    runner2.start(Scope(rate_per_second=4))  # burst 4, then 4/s: 8 more take about 2 s
    assert runner2.wait(10)
    slow = time.monotonic() - started
    assert slow >= 1.8 and fast < 1.0
    assert runner2.progress()["State"] == DONE


def test_only_one_backfill_at_a_time_and_cancel(tmp_path: Path) -> None:
    gate = threading.Event()
    runner = BackfillRunner(archive_orthanc({"s1": ("20240101", 5)}), Checkpoint(tmp_path / "bf.sqlite3"), Recorder(gate=gate))
    runner.start(Scope(rate_per_second=1000))
    with pytest.raises(BackfillBusy):
        runner.start(Scope())
    assert runner.cancel() is True
    gate.set()
    assert runner.wait(10)
    assert runner.progress()["State"] == CANCELLED
    assert runner.resume() is False  # a cancelled run stays cancelled
    runner.start(Scope(rate_per_second=1000))  # a new one may start
    assert runner.wait(10) and runner.progress()["State"] == DONE


def test_a_planning_error_is_reported_not_raised(tmp_path: Path) -> None:
    runner = BackfillRunner(archive_orthanc(ARCHIVE), Checkpoint(tmp_path / "bf.sqlite3"), Recorder())
    runner.start(Scope(studies=("1.2.3.unknown",)))
    assert runner.wait(10)
    p = runner.progress()
    assert p["State"] == FAILED and "StudyInstanceUID 1.2.3.unknown" in p["Error"]


def test_progress_is_none_before_any_backfill(tmp_path: Path) -> None:
    runner = BackfillRunner(archive_orthanc({}), Checkpoint(tmp_path / "bf.sqlite3"), Recorder())
    assert runner.progress() is None
    assert runner.cancel() is False
