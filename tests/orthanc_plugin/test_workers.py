"""Classification workers (the adapter's threads) with a real store and doubles for Orthanc and the engine:
a batch is never left ``processing`` by an error, and a classifier that cannot start fails nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from support import fake_orthanc

fake_orthanc.install()

from bodypart_router.config import parse  # noqa: E402
from bodypart_router.inference.engine import BatchResult, EngineStartError, ModelInfo, Outcome  # noqa: E402
from bodypart_router.orthanc_plugin import workers  # noqa: E402
from bodypart_router.forwarding.events import Dispatcher, YieldedToIngest  # noqa: E402
from bodypart_router.forwarding.store import Received, Store, StoreError  # noqa: E402
from bodypart_router.states import InstanceState  # noqa: E402


class Files:
    def source(self, instance_id: str) -> bytes:
        return instance_id.encode()


class Rest:
    """Orthanc's index for one study and series, every instance in them."""

    def get_json(self, uri: str) -> Any:
        if uri.endswith("/metadata?expand"):
            return {}
        if uri.startswith("/instances/"):
            return {"ID": uri.split("/")[2], "ParentSeries": "series", "MainDicomTags": {}}
        if uri.startswith("/series/"):
            return {"ID": "series", "ParentStudy": "study", "MainDicomTags": {"Modality": "CR"}}
        return {"ID": "study", "MainDicomTags": {}, "PatientMainDicomTags": {"PatientAge": "040Y"}}


class Writer:
    def classified(self, *args: Any, **kwargs: Any) -> None:
        pass

    def state(self, *args: Any, **kwargs: Any) -> None:
        pass


class Engine:
    """Classifies everything as spine, or raises ``error`` while it is set."""

    info = ModelInfo("m", "m@123456789abc", "0" * 64, "CPUExecutionProvider")

    def __init__(self) -> None:
        self.error: Exception | None = None

    def classify(self, sources: list[bytes]) -> BatchResult:
        if self.error is not None:
            raise self.error
        return BatchResult([Outcome(class_name="spine", score=0.9) for _ in sources], 0.0)

    def close(self) -> None:
        pass


@pytest.fixture()
def world(tmp_path: Path):
    section = {"Routes": {}, "BatchSize": 4}
    orthanc = {"UserMetadata": {m: 1024 + i for i, m in enumerate(
        ["BodyPart", "BodyPartScore", "BodyPartModel", "BodyPartState", "BodyPartForwarded"])},
        "BodyPartRouter": section}
    config = parse(section, orthanc, base_dir=tmp_path, check_paths=False)
    store, engine, stop = Store(tmp_path / "s.sqlite"), Engine(), threading.Event()
    worker = workers.ClassifyWorker(0, config, store, Rest(), Writer(), engine, Files(), Dispatcher(),  # type: ignore[arg-type]
                                    threading.Event(), threading.Event(), stop)
    yield store, engine, worker
    stop.set()
    worker.thread.join(10)


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_store_error_mid_batch_puts_the_batch_back_in_the_queue(world, monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine, worker = world
    store.add_received([Received(f"i{n}") for n in range(3)])
    real, failures = store.record_classification, [1]

    def disk_full(*args: Any, **kwargs: Any) -> str:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("state database s.sqlite: database or disk is full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "record_classification", disk_full)
    worker.thread.start()
    _until(lambda: store.counts()["instances"] == {InstanceState.CLASSIFIED: 3},
           f"every instance classified once the store works again (now {store.counts()['instances']})")


def test_a_classifier_that_cannot_start_fails_nothing_and_says_so(world, monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine, worker = world
    monkeypatch.setattr(workers, "ENGINE_RETRY_SECONDS", 0.05)
    engine.error = EngineStartError("the model file is gone")
    store.add_received([Received(f"i{n}") for n in range(3)])
    worker.thread.start()
    _until(lambda: "classifier" in worker.health.problems(), "the health names the classifier")
    time.sleep(0.5)  # many claims and releases
    assert store.counts()["instances"] == {InstanceState.QUEUED: 3}
    assert all(store.instance(f"i{n}").attempts == 0 for n in range(3))  # type: ignore[union-attr]
    engine.error = None  # the file is back
    _until(lambda: store.counts()["instances"] == {InstanceState.CLASSIFIED: 3}, "classified once the classifier starts")
    _until(lambda: "classifier" not in worker.health.problems(), "the health clears")


class BusyOnce:
    """An ingest gate that holds the first batch back for 0.2 s, then lets everything through."""

    def __init__(self) -> None:
        self.waits = 0

    def wait(self, stop: threading.Event) -> float:
        self.waits += 1
        return 0.2 if self.waits == 1 else 0.0


def test_a_batch_held_back_for_ingest_is_published_and_then_classified(world) -> None:
    store, engine, worker = world
    worker.yield_to_ingest = BusyOnce()
    yielded: list[float] = []
    worker.events.subscribe(YieldedToIngest, lambda e: yielded.append(e.seconds))
    store.add_received([Received(f"i{n}") for n in range(3)])
    worker.thread.start()
    _until(lambda: store.counts()["instances"] == {InstanceState.CLASSIFIED: 3}, "classified after the wait")
    assert yielded == [0.2]
    assert worker.health.problems() == {}, "waiting for ingest is not a problem"
