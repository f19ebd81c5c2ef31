"""Forwarding logic: job submission and tracking, backoff, circuit breaker, dead letter.

``FakeOrthanc`` (tests/support/fake_orthanc.py) plays Orthanc's jobs and destinations; the
real thing is exercised by tests/integration. A manual clock makes the backoff deterministic.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bodypart_router.config import Destination, parse
from bodypart_router.forwarding.events import (CircuitChanged, DeadLettered, DeliveryFailed, DeliveryForwarded, DeliverySubmitted,
                                    Dispatcher, InstanceStateChanged)
from bodypart_router.forwarding.delivery import Forwarder
from bodypart_router.orthanc_api import CannotAsk, Job, Unreachable
from bodypart_router.forwarding.store import Received, Store, StoreError
from bodypart_router.states import CircuitState, DeliveryState, InstanceState
from support.clock import Clock
from support.fake_orthanc import FakeOrthanc


class LookupDouble:
    """A destination's answer to "do you hold this instance?": ``held``, or ``error`` raised."""

    def __init__(self, held: tuple[str, ...] = (), error: Exception | None = None) -> None:
        self.held: set[str] = set(held)
        self.error = error
        self.asked: list[tuple[str, str]] = []

    def holds(self, destination: Destination, instance_id: str) -> bool:
        self.asked.append((destination.key, instance_id))
        if self.error:
            raise self.error
        return instance_id in self.held



@pytest.fixture()
def world(tmp_path: Path, router_logs: list[tuple[str, str]]):
    section = {"Routes": {"spine": ["ai-spine"], "adult_chest": ["ai-chest"]},
               "Retry": {"MaxAttempts": 3, "BackoffSeconds": 1, "MaxBackoffSeconds": 3},
               "CircuitBreaker": {"FailureThreshold": 2}}
    orthanc = {"DicomModalities": {"ai-spine": ["S", "127.0.0.1", 1]},
               "OrthancPeers": {"ai-chest": {"Url": "http://127.0.0.1:2/"}},
               "UserMetadata": {m: 1024 + i for i, m in enumerate(
                   ["BodyPart", "BodyPartScore", "BodyPartModel", "BodyPartState", "BodyPartForwarded"])},
               "BodyPartRouter": section}
    config = parse(section, orthanc, base_dir=tmp_path, check_paths=False)
    store, jobs, clock = Store(tmp_path / "s.sqlite"), FakeOrthanc(), Clock(time.time() + 1)  # the store stamps with the real time
    logs = router_logs
    states: list[tuple[str, str, list[str]]] = []
    events = Dispatcher()
    events.subscribe(InstanceStateChanged, lambda e: states.append((e.instance_id, e.state, list(e.delivered or ()))))
    forwarder = Forwarder(store, jobs, config, events, clock=clock)
    return store, jobs, clock, forwarder, logs, states


def add(store: Store, instance: str, dest: str) -> None:
    store.add_received([Received(instance)])
    store.claim_queued(10)
    store.record_classification(instance, class_name="spine", score=1.0, model="m@1", destinations=[dest])


def test_job_outcomes_match_orthancs_api() -> None:
    assert Job.from_json({"State": "Running"}).outcome == "running"
    assert Job.from_json({"State": "Success"}).outcome == "success"
    failure = Job.from_json({"State": "Failure", "ErrorDescription": "boom", "ErrorDetails": "why"})
    assert (failure.outcome, failure.error) == ("failure", "boom: why")


def test_a_delivery_is_submitted_once_and_tracked_to_success(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    add(store, "a", "modality:ai-spine")
    forwarder.step()  # submits
    forwarder.step()  # sees the job succeed
    forwarder.step()
    assert jobs.submitted == [("/modalities/ai-spine/store", ["a"])]
    assert states == [("a", InstanceState.FORWARDED, ["modality:ai-spine"])]


def test_failures_back_off_then_dead_letter(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    jobs.down.add("ai-chest")
    add(store, "a", "peer:ai-chest")
    forwarder.step()
    forwarder.step()  # job 1 failed -> retry in 1 s
    assert len(jobs.submitted) == 1
    forwarder.step()
    assert len(jobs.submitted) == 1  # not due yet
    clock.now += 1.0
    forwarder.step()
    forwarder.step()  # job 2 failed: circuit opens (threshold 2), retry in 2 s
    clock.now += 2.0
    forwarder.step()  # a probe
    forwarder.step()  # job 3 failed: MaxAttempts 3 reached
    assert len(jobs.submitted) == 3
    assert states[-1] == ("a", InstanceState.FAILED_DEAD_LETTER, [])
    assert [f.instance_id for f in store.failed()] == ["a"]


def test_open_circuit_logs_once_and_costs_other_deliveries_no_attempts(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    jobs.down.add("ai-chest")
    for n in range(2):
        add(store, f"x{n}", "peer:ai-chest")
    forwarder.step()
    forwarder.step()  # both fail -> circuit open
    for n in range(10):
        add(store, f"y{n}", "peer:ai-chest")
    for _ in range(5):
        forwarder.step()
    assert len(jobs.submitted) == 2  # nothing new sent while open
    assert all(d.attempts == 0 for n in range(10) for d in store.deliveries_of(f"y{n}"))
    jobs.down.clear()
    clock.now += 10
    for _ in range(6):
        forwarder.step()
    opened = [m for lvl, m in logs if "is down" in m]
    closed = [m for lvl, m in logs if "reachable again" in m]
    assert len(opened) == 1 and len(closed) == 1
    assert store.counts()["deliveries"] == {"delivered": 12}


def test_a_store_error_during_a_probe_does_not_block_the_destination(world, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full while the probe is recorded: once the store works again, the destination is probed again."""
    store, jobs, clock, forwarder, logs, states = world
    jobs.down.add("ai-chest")
    for n in range(2):
        add(store, f"x{n}", "peer:ai-chest")
    forwarder.step()
    forwarder.step()  # both fail -> circuit open
    assert forwarder.breaker.is_open("peer:ai-chest")
    jobs.down.clear()
    clock.now += 10  # a probe is due
    real = store.mark_submitting

    def full(delivery_id: int) -> None:
        raise StoreError("state database s.sqlite: database or disk is full")

    monkeypatch.setattr(store, "mark_submitting", full)
    with pytest.raises(StoreError):
        forwarder.step()
    monkeypatch.setattr(store, "mark_submitting", real)
    for _ in range(6):
        forwarder.step()
    assert store.counts()["deliveries"] == {"delivered": 2}
    assert not forwarder.breaker.is_open("peer:ai-chest")


def test_other_destinations_keep_flowing_while_one_is_down(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    jobs.down.add("ai-chest")
    add(store, "down", "peer:ai-chest")
    add(store, "up", "modality:ai-spine")
    forwarder.step()
    forwarder.step()
    assert ("up", InstanceState.FORWARDED, ["modality:ai-spine"]) in states


def test_a_job_orthanc_forgot_is_sent_again(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    add(store, "a", "modality:ai-spine")
    forwarder.step()
    jobs.jobs.clear()  # e.g. Orthanc restarted without its jobs
    forwarder.step()
    clock.now += 1
    forwarder.step()
    forwarder.step()
    assert [r for _, r in jobs.submitted] == [["a"], ["a"]]
    assert states[-1][1] == InstanceState.FORWARDED


def test_refused_submission_counts_as_an_attempt(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    jobs.refuse = True
    add(store, "a", "modality:ai-spine")
    forwarder.step()
    assert store.deliveries_of("a")[0].attempts == 1


def restart(world, lookup: LookupDouble | None) -> Forwarder:
    """A crash and restart: Orthanc lost its jobs (SaveJobs false), a fresh forwarder recovers."""
    store, jobs, clock, forwarder, logs, states = world
    jobs.jobs.clear()
    fresh = Forwarder(store, jobs, forwarder.config, forwarder.events, clock=clock, lookup=lookup)
    fresh.recover()
    return fresh


def crash_in_flight(world, lookup: LookupDouble | None, *instances: str) -> Forwarder:
    """``instances`` (default ``a``) submitted to ``ai-spine``, then a crash before their outcome
    was seen; returns the restarted forwarder."""
    store, jobs, clock, forwarder, logs, states = world
    for name in instances or ("a",):
        add(store, name, "modality:ai-spine")
    forwarder.step()
    return restart(world, lookup)


def test_a_forward_in_flight_at_a_crash_that_arrived_is_not_sent_again(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    lookup = LookupDouble(held=("a",))
    fresh = crash_in_flight(world, lookup)
    assert store.deliveries_of("a")[0].state == DeliveryState.VERIFY
    fresh.step()
    fresh.step()
    assert len(jobs.submitted) == 1
    assert lookup.asked == [("modality:ai-spine", "a")]
    assert states[-1] == ("a", InstanceState.FORWARDED, ["modality:ai-spine"])


def test_a_forward_in_flight_at_a_crash_that_did_not_arrive_is_sent_once_more(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    fresh = crash_in_flight(world, LookupDouble())
    for _ in range(3):
        fresh.step()
    assert [r for _, r in jobs.submitted] == [["a"], ["a"]]
    assert states[-1][1] == InstanceState.FORWARDED
    assert store.deliveries_of("a")[0].attempts == 2


def test_a_crash_before_orthanc_answered_the_submission_is_verified_too(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    add(store, "a", "peer:ai-chest")
    (d,) = store.due_deliveries(now=clock.now, limit=10)
    store.mark_submitting(d.id)  # recorded, then the process died inside POST /peers/.../store
    lookup = LookupDouble(held=("a",))
    fresh = restart(world, lookup)
    fresh.step()
    assert jobs.submitted == [] and states[-1][1] == InstanceState.FORWARDED


def test_an_unreachable_destination_is_asked_again_later_and_nothing_is_resent(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    lookup = LookupDouble(error=Unreachable("connection refused"))
    fresh = crash_in_flight(world, lookup)
    for _ in range(3):
        fresh.step()
    assert len(jobs.submitted) == 1 and store.deliveries_of("a")[0].state == DeliveryState.VERIFY
    lookup.error = None
    lookup.held.add("a")
    clock.now += 10
    fresh.step()
    assert len(jobs.submitted) == 1 and states[-1][1] == InstanceState.FORWARDED


def test_a_destination_that_never_answers_gets_it_again_after_max_attempts_questions(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    lookup = LookupDouble(error=Unreachable("no answer"))
    fresh = crash_in_flight(world, lookup)
    for _ in range(3):  # Retry.MaxAttempts is 3
        fresh.step()
        clock.now += 10
    assert len(lookup.asked) == 3
    lookup.error = None
    fresh.step()
    assert len(jobs.submitted) == 2 and store.deliveries_of("a")[0].state != DeliveryState.VERIFY


def test_a_destination_that_cannot_be_asked_gets_it_again_with_one_warning(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    fresh = crash_in_flight(world, LookupDouble(error=CannotAsk("no C-FIND SCP")), "a", "b")
    for _ in range(3):
        fresh.step()
    assert sorted(r[0] for _, r in jobs.submitted) == ["a", "a", "b", "b"]
    assert len([m for level, m in logs if level == "warning" and "cannot ask" in m]) == 1


def test_without_verification_an_unknown_outcome_is_resent(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    fresh = crash_in_flight(world, None)
    fresh.step()
    fresh.step()
    assert [r for _, r in jobs.submitted] == [["a"], ["a"]]


def test_a_job_orthanc_reloaded_and_still_running_is_cancelled_then_verified(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    add(store, "a", "modality:ai-spine")
    forwarder.step()
    (d,) = store.submitted()
    jobs.jobs[d.job_id]["State"] = "Pending"  # reloaded by Orthanc (SaveJobs true)
    lookup = LookupDouble(held=("a",))
    fresh = Forwarder(store, jobs, forwarder.config, forwarder.events, clock=clock, lookup=lookup)
    fresh.recover()
    assert jobs.cancelled == [f"/jobs/{d.job_id}/cancel"]
    fresh.step()
    assert lookup.asked == []  # a cancelled job may still be finishing: asked after a grace period
    clock.now += 60
    fresh.step()
    assert len(jobs.submitted) == 1 and states[-1][1] == InstanceState.FORWARDED


@pytest.mark.parametrize("dest", ["peer:ai-chest", "modality:ai-spine"])
def test_circuit_closes_after_recovery_with_everything_dead_lettered(world, dest: str) -> None:
    store, jobs, clock, forwarder, logs, states = world
    name = dest.split(":")[1]
    jobs.down.add(name)
    add(store, "a", dest)
    for _ in range(30):
        forwarder.step()
        clock.now += 5
    assert [f.instance_id for f in store.failed()] == ["a"]  # dead: nothing left to probe with
    assert forwarder.breaker.states()[dest] == "open"
    assert jobs.probes  # while down, idle probes fail and the circuit stays open
    assert forwarder.breaker.states()[dest] == "open"
    jobs.down.clear()
    clock.now += 10
    forwarder.step()
    assert forwarder.breaker.states()[dest] == "closed"
    assert [(lvl, m) for lvl, m in logs if "reachable again" in m] == [
        ("warning", f"destination {dest} is reachable again, resuming forwards")]
    assert [lvl for lvl, m in logs if "is down" in m] == ["warning"]
    assert len(jobs.submitted) == 3 and [f.instance_id for f in store.failed()] == ["a"]  # nothing resent by itself


def test_circuit_details_say_since_when_a_destination_is_down(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    jobs.down.add("ai-chest")
    add(store, "a", "peer:ai-chest")
    add(store, "b", "peer:ai-chest")
    down_at = clock.now
    forwarder.step()
    forwarder.step()
    detail = forwarder.breaker.details()["peer:ai-chest"]
    assert detail["State"] == "open" and detail["DownSince"] == down_at
    assert "network protocol" in detail["LastError"]


def test_dead_letters_are_logged_as_one_summary_line_per_minute(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    jobs.down.add("ai-chest")
    for n in range(20):
        add(store, f"i{n}", "peer:ai-chest")
    start = clock.now
    while len(store.failed()) < 20 and clock.now - start < 3600:
        forwarder.step()
        clock.now += 1
    forwarder.drain(clock.now)  # at shutdown the last window is logged too
    minutes = (clock.now - start) / 60
    errors = [m for lvl, m in logs if lvl == "error"]
    assert len(store.failed()) == 20 and minutes > 1
    assert 1 <= len(errors) <= int(minutes) + 1, errors  # not one line per dead letter
    assert sum(int(m.split(" ", 1)[0]) for m in errors) == 20
    assert all(" forward(s) dead-lettered after 3 attempts in the last 1 min (peer:ai-chest " in m for m in errors)
    assert all(lvl in ("info", "debug") for lvl, m in logs if "dead-lettered after" in m and m.startswith("instance"))


def test_deliveries_to_one_destination_share_one_job_followed_with_one_question(world) -> None:
    store, _, clock, forwarder, logs, states = world
    jobs = FakeOrthanc()
    lookup = LookupDouble(held=())
    batched = Forwarder(store, jobs, forwarder.config, forwarder.events, clock=clock, lookup=lookup)
    for n in range(5):
        add(store, f"s{n}", "modality:ai-spine")
    add(store, "c", "peer:ai-chest")
    batched.step()
    assert sorted(jobs.submitted) == [("/modalities/ai-spine/store", [f"s{n}" for n in range(5)]),
                                      ("/peers/ai-chest/store", ["c"])]
    batched.step()
    assert jobs.polls == 2  # one per job, not one per instance
    assert store.counts()["deliveries"] == {"delivered": 6}
    assert {s[0] for s in states if s[1] == InstanceState.FORWARDED} == {"s0", "s1", "s2", "s3", "s4", "c"}


def test_a_failed_batch_is_verified_then_only_what_did_not_arrive_is_sent_again_alone(world) -> None:
    store, _, clock, forwarder, logs, states = world
    jobs = FakeOrthanc()
    jobs.fail_after = 2  # the job sent two instances, then failed
    lookup = LookupDouble()
    batched = Forwarder(store, jobs, forwarder.config, forwarder.events, clock=clock, lookup=lookup)
    for n in range(4):
        add(store, f"s{n}", "modality:ai-spine")
    batched.step()
    batched.step()  # the job failed: every delivery's outcome is unknown
    assert {d.state for n in range(4) for d in store.deliveries_of(f"s{n}")} == {DeliveryState.VERIFY}
    lookup.held = set(jobs.arrived)
    jobs.fail_after = None
    clock.now += 10
    for _ in range(4):
        batched.step()
    assert sorted(jobs.arrived) == ["s0", "s1", "s2", "s3"]  # each once
    assert jobs.submitted[1:] == [("/modalities/ai-spine/store", ["s2"]), ("/modalities/ai-spine/store", ["s3"])]
    assert store.counts()["deliveries"] == {"delivered": 4}


def test_the_forwarder_publishes_each_transition_as_a_typed_event(world) -> None:
    store, jobs, clock, forwarder, logs, states = world
    seen: list[object] = []
    for kind in (DeliverySubmitted, DeliveryForwarded, DeliveryFailed, DeadLettered, CircuitChanged,
                 InstanceStateChanged):
        forwarder.events.subscribe(kind, seen.append)
    add(store, "up", "modality:ai-spine")
    forwarder.step()
    forwarder.step()
    assert [type(e) for e in seen] == [DeliverySubmitted, DeliveryForwarded, InstanceStateChanged]
    assert seen[-1] == InstanceStateChanged("up", InstanceState.FORWARDED, ("modality:ai-spine",))
    seen.clear()
    jobs.down.add("ai-chest")
    add(store, "down", "peer:ai-chest")
    for _ in range(3):
        forwarder.step()
        forwarder.step()
        clock.now += 10
    kinds = [type(e) for e in seen]
    assert kinds.count(DeliverySubmitted) == 3 and kinds.count(DeliveryFailed) == 3
    assert [e.state for e in seen if isinstance(e, CircuitChanged)] == [CircuitState.OPEN]
    dead = [e for e in seen if isinstance(e, DeadLettered)]
    assert len(dead) == 1 and dead[0].delivery.instance_id == "down"
    assert seen[-1] == InstanceStateChanged("down", InstanceState.FAILED_DEAD_LETTER, ())
