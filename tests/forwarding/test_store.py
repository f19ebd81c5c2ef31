"""The durable work list: idempotence, crash recovery, delivery states."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from bodypart_router.forwarding.store import Received, Store, StoreError
from bodypart_router.forwarding.store_schema import Delivery
from bodypart_router.states import DeliveryState, InstanceState


def classify(store: Store, instance: str, dests: list[str], model: str = "m@1", shadow: bool = False) -> str:
    assert store.claim_queued(10) in ([instance], [])
    return store.record_classification(instance, class_name="spine", score=0.9, model=model,
                                       destinations=dests, shadow=shadow)


def submit(store: Store, delivery_id: int, job_id: str) -> None:
    """What the forwarder does around ``POST .../store``: record the attempt, then the job Orthanc created."""
    store.mark_submitting(delivery_id)
    store.set_job(delivery_id, job_id)


def one_submitted_delivery(tmp_path: Path) -> tuple[Store, Delivery]:
    """Instance ``a`` classified to ``peer:x``, its delivery handed to Orthanc as job ``job``."""
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a")])
    classify(store, "a", ["peer:x"])
    (d,) = store.due_deliveries(now=1e12, limit=10)
    submit(store, d.id, "job")
    return store, d


def test_duplicates_are_recorded_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    assert [r.instance_id for r in store.add_received([Received("a"), Received("b")])] == ["a", "b"]
    assert store.add_received([Received("a"), Received("c")]) == [Received("c")]
    assert store.counts()["instances"] == {InstanceState.QUEUED: 3}


def test_a_delivery_exists_once_per_instance_destination_and_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a")])
    assert classify(store, "a", ["peer:x", "modality:y"]) == InstanceState.CLASSIFIED
    # The same instance classified again (recovered after a crash) creates nothing new...
    store.reset_in_flight()
    store.set_state("a", InstanceState.QUEUED)
    classify(store, "a", ["peer:x", "modality:y"])
    assert len(store.deliveries_of("a")) == 2
    # ...but a new model version is a new decision.
    store.set_state("a", InstanceState.QUEUED)
    classify(store, "a", ["peer:x"], model="m@2")
    assert len(store.deliveries_of("a")) == 3


def test_instance_state_follows_its_deliveries(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a")])
    classify(store, "a", ["peer:x", "peer:y"])
    x, y = store.due_deliveries(now=1e12, limit=10)
    submit(store, x.id, "job-x")
    assert store.mark_delivered(x.id) == InstanceState.CLASSIFIED  # y still pending
    submit(store, y.id, "job-y")
    assert store.mark_delivered(y.id) == InstanceState.FORWARDED
    assert store.delivered_destinations("a") == ["peer:x", "peer:y"]


def test_dead_letter_and_resubmit(tmp_path: Path) -> None:
    store, d = one_submitted_delivery(tmp_path)
    assert store.mark_dead(d.id, "connection refused") == InstanceState.FAILED_DEAD_LETTER
    assert [f.instance_id for f in store.failed()] == ["a"]
    assert store.instance("a").state == InstanceState.FAILED_DEAD_LETTER
    (again,) = store.resubmit(instance_ids=["a"])
    assert (again.state, again.attempts) == (DeliveryState.PENDING, 0)
    assert store.instance("a").state == InstanceState.CLASSIFIED and store.failed() == []


def test_resubmit_of_delivered_needs_to_be_explicit(tmp_path: Path) -> None:
    store, d = one_submitted_delivery(tmp_path)
    store.mark_delivered(d.id)
    assert store.resubmit(instance_ids=["a"]) == []
    assert len(store.resubmit(instance_ids=["a"], include_delivered=True)) == 1


def test_backoff_hides_deliveries_until_due_and_skips_open_circuits(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a"), Received("b")])
    store.claim_queued(10)
    store.record_classification("a", class_name="spine", score=1, model="m", destinations=["peer:x"])
    store.record_classification("b", class_name="spine", score=1, model="m", destinations=["peer:y"])
    da = store.deliveries_of("a")[0]
    store.mark_retry(da.id, "refused", next_attempt_at=2e12, count_attempt=True)
    assert [d.instance_id for d in store.due_deliveries(now=1e12, limit=10)] == ["b"]
    assert store.due_deliveries(now=1e12, limit=10, skip_destinations=["peer:y"]) == []
    assert store.delivery(da.id).attempts == 1


def test_shadow_mode_records_what_would_be_sent_but_nothing_is_due(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a")])
    classify(store, "a", ["peer:x"], shadow=True)
    assert store.due_deliveries(now=1e12, limit=10) == []
    assert store.shadow_counts() == {"peer:x": {"spine": 1}}


def _write_then_die(path: str) -> None:
    store = Store(Path(path))
    store.add_received([Received(f"i{n}") for n in range(100)])
    store.claim_queued(5)
    store.set_setting("changes_checkpoint", "42")
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no clean exit


def test_committed_work_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    proc = multiprocessing.get_context("spawn").Process(target=_write_then_die, args=(str(path),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    store = Store(path)
    assert store.get_setting("changes_checkpoint") == "42"
    assert store.reset_in_flight() == 5  # the 5 being processed go back to the queue
    assert store.queued_count() == 100


def test_a_forward_is_recorded_before_it_is_handed_over_and_can_be_put_in_doubt(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a")])
    classify(store, "a", ["peer:x"])
    (d,) = store.due_deliveries(now=1e12, limit=10)
    store.mark_submitting(d.id)
    assert [(s.state, s.job_id, s.attempts) for s in store.submitted()] == [(DeliveryState.SUBMITTED, None, 1)]
    store.set_job(d.id, "job")
    assert store.submitted()[0].job_id == "job"
    store.mark_unknown(d.id, "in flight when Orthanc stopped", next_attempt_at=5e11)
    assert store.submitted() == [] and store.due_deliveries(now=1e12, limit=10) == []
    assert store.to_verify(now=1e11, limit=10) == []
    (v,) = store.to_verify(now=1e12, limit=10)
    assert (v.state, v.last_error) == (DeliveryState.VERIFY, "in flight when Orthanc stopped")
    assert store.to_verify(now=1e12, limit=10, skip_destinations=["peer:x"]) == []
    store.forget("a")
    assert store.deliveries_of("a") == []


def test_a_held_film_keeps_its_held_state_once_its_quality_route_delivered(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("i1")])
    state = store.record_classification("i1", class_name="adult_chest", score=0.9, model="m", destinations=["modality:qa"],
                                        evidence='{"scores": {}}', held="held:lateral")
    assert state == "held:lateral"
    (d,) = store.deliveries_of("i1")
    assert store.mark_delivered(d.id) == "held:lateral"
    assert store.instance("i1").state == "held:lateral"
    assert store.evidence("i1") == '{"scores": {}}'


def test_schema_1_database_gains_the_evidence_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE instances (instance_id TEXT PRIMARY KEY, state TEXT NOT NULL, class_name TEXT, "
                     "score REAL, model TEXT, detail TEXT, attempts INTEGER NOT NULL DEFAULT 0, received_at REAL NOT "
                     "NULL, updated_at REAL NOT NULL); CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "INSERT INTO settings VALUES ('schema_version', '1');"
                     "INSERT INTO instances VALUES ('old', 'forwarded', 'spine', 0.9, 'm', NULL, 0, 1, 1);")
    db.close()
    store = Store(path)
    assert store.evidence("old") is None and store.instance("old").state == "forwarded"
    assert store.get_setting("schema_version") == "2"


def test_rerouting_adds_only_destinations_without_any_delivery(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("i1")])
    store.record_classification("i1", class_name="spine", score=0.9, model="old@1", destinations=["peer:a", "peer:b"])
    a, b = store.deliveries_of("i1")
    store.mark_delivered(a.id)
    store.mark_dead(b.id, "down")
    assert store.add_deliveries("i1", ["peer:a", "peer:b", "peer:c"], model="new@2") == ["peer:c"]
    assert store.add_deliveries("i1", ["peer:c"], model="new@2") == []  # twice: nothing more
    assert store.instance("i1").state == "classified"  # until the new forward finishes
    assert sorted((d.destination, d.model) for d in store.deliveries_of("i1")) == [
        ("peer:a", "old@1"), ("peer:b", "old@1"), ("peer:c", "new@2")]
    assert store.classified_since(0) == ["i1"]


def test_an_instance_another_node_owns_is_watched_taken_over_and_verified_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("i1", InstanceState.ELSEWHERE, "node-b 1.0"), Received("i2", InstanceState.QUEUED)])
    assert store.claim_queued(10) == ["i2"], "an instance another node owns is not classified here"
    assert store.elsewhere_due(time.time() + 1) == [("i1", "node-b 1.0")]
    store.observe("i1", "node-b 2.0")
    assert store.elsewhere_due(time.time() - 60) == [], "seen again just now: its lease starts over"
    store.take_over("i1")
    assert store.claim_queued(10) == ["i1"]
    classify(store, "i1", ["peer:a"])
    # the old owner may have sent it just before it died: ask the destination before sending
    assert [d.state for d in store.deliveries_of("i1")] == [DeliveryState.VERIFY]
    classify(store, "i2", ["peer:a"])
    assert [d.state for d in store.deliveries_of("i2")] == [DeliveryState.PENDING]


def test_unfinished_instances_are_those_whose_claims_need_renewing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    for instance, dests in (("routed", ["peer:a"]), ("nowhere", [])):
        store.add_received([Received(instance, InstanceState.QUEUED)])
        classify(store, instance, dests)
    store.add_received([Received("q", InstanceState.QUEUED), Received("x", InstanceState.ELSEWHERE, "node-b 1"),
                        Received("ct", "skipped:non-projection-modality")])
    assert store.unfinished() == ["routed"]
    assert store.claim_queued(10) == ["q"]
    assert sorted(store.unfinished()) == ["q", "routed"]
    store.lose("routed", "node-c 5")
    assert store.unfinished() == ["q"]
    assert store.deliveries_of("routed") == [] and store.instance("routed").state == InstanceState.ELSEWHERE  # type: ignore[union-attr]


def test_the_status_pages_figures_come_from_the_database_and_outlive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("ct", "skipped:non-projection-modality")])
    for n in range(5):
        store.add_received([Received(f"i{n}")])
        classify(store, f"i{n}", ["peer:x", "modality:y"] if n < 3 else [])
    due = store.due_deliveries(now=1e12, limit=100)
    for d in due[:2]:
        submit(store, d.id, f"job-{d.id}")
        store.mark_delivered(d.id)
    for d in due[2:4]:
        submit(store, d.id, f"job-{d.id}")
        store.mark_dead(d.id, "connection refused")
    store.close()

    store = Store(tmp_path / "s.sqlite")  # Orthanc restarted
    assert store.outcome_counts() == {"Classified": {"spine": 5}, "Skipped": {"non-projection-modality": 1},
                                      "Failed": {}}
    backlog = store.destination_backlog()
    assert sum(b["Pending"] for b in backlog.values()) == 2 and sum(b["DeadLetters"] for b in backlog.values()) == 2
    total, page = store.dead_letters(0, 1)
    assert total == 2 and len(page) == 1
    (dead, created_at, dead_at), = page
    assert dead.last_error == "connection refused" and dead_at >= created_at
    assert store.dead_letters(1, 10)[1][0][0].id != dead.id  # the second page holds the other one
    total, recent = store.recent(0, 3)
    assert total == 6 and len(recent) == 3
    assert store.recent(3, 10)[1] and len(store.recent(0, 100)[1]) == 6
    arrived = [r for r in store.recent(0, 100)[1] if r["deliveries"].get("delivered")]
    assert arrived and all(set(r["deliveries"]) <= {"delivered", "pending", "dead"} for r in arrived)


# ---- a lost, empty or damaged database; errors that name the file --------------------------


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_missing_or_empty_database_is_new(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    assert store.is_new
    store.add_received([Received("a")])
    store.close()
    reopened = Store(path)
    assert not reopened.is_new
    reopened.close()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b"")
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    again = Store(path)
    assert again.is_new and again.set_aside is None and again.queued_count() == 0


def test_a_corrupt_database_is_set_aside_and_a_new_one_made(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.add_received([Received(f"instance-{n:06d}-" + "x" * 200) for n in range(3000)])  # several pages
    store.close()
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # damage pages in the middle, keep the header
        fh.seek(size // 2)
        fh.write(b"\xde\xad\xbe\xef" * 4096)
    rebuilt = Store(path)
    assert rebuilt.is_new and rebuilt.set_aside is not None and rebuilt.corruption
    assert rebuilt.set_aside.name.startswith("s.sqlite.corrupt-") and rebuilt.set_aside.exists()
    assert rebuilt.queued_count() == 0
    rebuilt.add_received([Received("a")])  # usable


def test_a_file_that_is_not_a_database_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not SQLite" * 1000)
    store = Store(path)
    assert store.is_new and store.set_aside is not None


def test_errors_name_the_database_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store._db.close()  # any failure of the database from now on
    with pytest.raises(StoreError, match=str(tmp_path / "s.sqlite")):
        store.add_received([Received("a")])
    with pytest.raises(StoreError, match="s.sqlite"):
        store.queued_count()


def test_released_instances_go_back_to_the_queue_without_an_attempt(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.add_received([Received("a"), Received("b")])
    assert sorted(store.claim_queued(10)) == ["a", "b"]
    store.release(["a", "b"], "the classifier could not start")
    assert store.queued_count() == 2 and store.counts()["instances"] == {InstanceState.QUEUED: 2}
    assert store.instance("a").attempts == 0  # type: ignore[union-attr]
def test_a_state_database_of_version_0_1_0_reads_back_in_the_state_vocabulary(tmp_path: Path) -> None:
    """``tests/fixtures/state-db-0.1.0.sqlite`` was written by the Store of version 0.1.0 (states
    as free strings, kinds selected with ``LIKE``): every state it holds parses, the kinds are
    counted as then, and its work carries on."""
    path = tmp_path / "s.sqlite"
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "state-db-0.1.0.sqlite", path)
    store = Store(path)
    assert store.counts() == {
        "instances": {"awaiting-series": 1, "classified": 3, "elsewhere": 1, "failed:dead-letter": 2,
                      "failed:undecodable-pixels": 1, "failed:unreadable": 1, "forwarded": 1, "held:lateral": 1,
                      "queued": 1, "skipped:non-image-sop-class": 1, "skipped:non-projection-modality": 1},
        "deliveries": {"dead": 2, "delivered": 3, "pending": 1, "shadow": 1, "verify": 1}}
    assert all(isinstance(s, InstanceState) for s in store.counts()["instances"])
    assert store.outcome_counts() == {"Classified": {"spine": 8},
                                      "Skipped": {"non-image-sop-class": 1, "non-projection-modality": 1},
                                      "Failed": {"undecodable-pixels": 1, "unreadable": 1}}
    held = store.instance("held")
    assert held is not None and held.state is InstanceState.HELD_LATERAL
    assert store.instance("held-dead").state is InstanceState.FAILED_DEAD_LETTER  # type: ignore[union-attr]
    assert store.elsewhere_due(seen_before=1e12) == [("elsewhere", "node-2 1700000000.000")]
    (pending,) = store.due_deliveries(now=1e12, limit=10)
    submit(store, pending.id, "job-1")
    assert store.mark_delivered(pending.id) is InstanceState.FORWARDED
    (verify,) = store.to_verify(now=1e12, limit=10)
    assert verify.state is DeliveryState.VERIFY
    assert [d.instance_id for d in store.failed()] and {d.state for d in store.failed()} == {DeliveryState.DEAD}
    store.resubmit(instance_ids=["held-dead"])
    assert store.instance("held-dead").state is InstanceState.CLASSIFIED  # type: ignore[union-attr]


def test_the_write_ahead_log_stays_small(tmp_path: Path) -> None:
    """A nearly full StateDirectory must keep room for the checkpoint that shrinks the log."""
    from bodypart_router.forwarding.store import WAL_CHECKPOINT_PAGES, WAL_SIZE_LIMIT_BYTES

    store = Store(tmp_path / "s.sqlite")
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CHECKPOINT_PAGES
    assert store._db.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT_BYTES
    for i in range(400):
        store.set_setting(f"key-{i}", "x" * 2000)
    wal = tmp_path / "s.sqlite-wal"
    assert wal.stat().st_size <= WAL_CHECKPOINT_PAGES * 4096 * 2
    store.close()
