"""The adapter's forwarding thread against ``FakeOrthanc``: the whole loop, from recovery to drain.

The same thread runs inside Orthanc with the in-process implementation of the boundary;
tests/integration runs it there.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from support import fake_orthanc
from support.fake_orthanc import FakeOrthanc

fake_orthanc.install()  # the adapter package imports orthanc; the forwarding thread itself does not

from bodypart_router.config import parse  # noqa: E402
from bodypart_router.forwarding.events import DeliveryForwarded, Dispatcher, InstanceStateChanged  # noqa: E402
from bodypart_router.forwarding.store import Received, Store  # noqa: E402
from bodypart_router.states import InstanceState  # noqa: E402
from bodypart_router.orthanc_plugin.forwarding import ForwardingThread  # noqa: E402

WAIT = 20.0  # bounds a hang; measures nothing


class Recording:
    """What the thread publishes: the result writer and the metrics subscribe to these events."""

    def __init__(self) -> None:
        self.dispatcher = Dispatcher()
        self.states: list[tuple[str, InstanceState]] = []
        self.forwarded: list[DeliveryForwarded] = []
        self.changed = threading.Event()
        self.dispatcher.subscribe(InstanceStateChanged, self._state)
        self.dispatcher.subscribe(DeliveryForwarded, self.forwarded.append)

    def _state(self, event: InstanceStateChanged) -> None:
        self.states.append((event.instance_id, event.state))
        self.changed.set()


def setup(tmp_path: Path, orthanc: FakeOrthanc, verify: bool = True) -> tuple[Store, ForwardingThread, Recording]:
    section = {"Routes": {"spine": ["ai-spine"]}, "JobPollSeconds": 0.05, "VerifyBeforeResend": verify}
    orthanc_config = {"DicomModalities": {"ai-spine": ["S", "127.0.0.1", 1]},
                      "UserMetadata": {"BodyPartResult": 1024, "BodyPart": 1025}, "BodyPartRouter": section}
    config = parse(section, orthanc_config, base_dir=tmp_path, check_paths=False)
    store, seen = Store(tmp_path / "s.sqlite"), Recording()
    thread = ForwardingThread(config, store, orthanc, seen.dispatcher, threading.Event(), threading.Event(),
                              orthanc if verify else None)
    return store, thread, seen


def classify(store: Store, *instances: str) -> None:
    store.add_received([Received(i) for i in instances])
    store.claim_queued(10)
    for i in instances:
        store.record_classification(i, class_name="spine", score=1.0, model="m@1", destinations=["modality:ai-spine"])


def wait_until_forwarded(seen: Recording, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while sum(1 for _, s in seen.states if s == InstanceState.FORWARDED) < count:
        assert time.monotonic() < deadline, seen.states
        seen.changed.wait(0.5)
        seen.changed.clear()


def test_forwards_are_sent_as_one_job_followed_to_success_and_mirrored(tmp_path: Path) -> None:
    orthanc = FakeOrthanc()
    store, thread, seen = setup(tmp_path, orthanc)
    classify(store, "a", "b")
    thread.start()
    thread.wake()
    wait_until_forwarded(seen, 2)
    thread.stop()
    assert thread.join(WAIT)
    assert orthanc.submitted == [("/modalities/ai-spine/store", ["a", "b"])] and sorted(orthanc.arrived) == ["a", "b"]
    assert set(seen.states) == {("a", InstanceState.FORWARDED), ("b", InstanceState.FORWARDED)}
    assert len(seen.forwarded) == 2


def test_after_a_crash_the_destination_is_asked_before_anything_is_sent_again(tmp_path: Path) -> None:
    orthanc = FakeOrthanc()
    store, crashed, _ = setup(tmp_path, orthanc)
    classify(store, "a", "b")
    (first, second) = store.due_deliveries(time.time() + 5, 10)
    for d in (first, second):
        store.mark_submitting(d.id)  # the crash came before Orthanc answered: outcome unknown
    orthanc.held["ai-spine"] = {"a"}  # "a" had arrived, "b" had not
    store.close()
    store, thread, seen = setup(tmp_path, orthanc)
    thread.start()
    wait_until_forwarded(seen, 2)
    thread.stop()
    assert thread.join(WAIT)
    assert orthanc.submitted == [("/modalities/ai-spine/store", ["b"])], "only what was not there is sent"


def test_a_step_that_fails_is_logged_and_the_thread_carries_on(tmp_path: Path, caplog: Any) -> None:
    orthanc = FakeOrthanc()
    store, thread, seen = setup(tmp_path, orthanc)
    broken = threading.Event()
    real_job = orthanc.job

    def job_once_broken(job_id: str) -> Any:
        if not broken.is_set():
            broken.set()
            raise RuntimeError("a bug while polling")
        return real_job(job_id)

    orthanc.job = job_once_broken  # type: ignore[method-assign]
    classify(store, "a")
    thread.start()
    thread.wake()
    wait_until_forwarded(seen, 1)
    thread.stop()
    assert thread.join(WAIT) and broken.is_set()
    assert "a bug while polling" in caplog.text
