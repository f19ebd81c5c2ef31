"""The result writer: what it writes into Orthanc's index, and how many writes that takes.

A classified instance with forwards due gets its separate values at once and one packed
``BodyPartResult`` write carrying both the classification and the forwards; the wait is bounded,
survives an orderly shutdown, and a crash in the middle is repaired from the router's store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support import fake_orthanc

fake_orthanc.install()

from bodypart_router.forwarding.store import Received, Store  # noqa: E402
from bodypart_router.orthanc_api import OrthancNotFound  # noqa: E402
from bodypart_router.orthanc_plugin import results  # noqa: E402
from bodypart_router.routing.decision import RoutingDecision  # noqa: E402
from bodypart_router.states import InstanceState  # noqa: E402

SHIPPED = {"BodyPartResult": 1030, "BodyPart": 1024, "BodyPartRegion": 1031}
PEER = "peer:ai-chest"


class Rest:
    """Orthanc's metadata for the instances: every PUT is recorded (one index transaction each)."""

    def __init__(self) -> None:
        self.metadata: dict[tuple[str, str], str] = {}
        self.puts: list[tuple[str, str]] = []
        self.labels: list[str] = []
        self.lookups: list[str] = []

    def put(self, uri: str, value: str) -> None:
        _, level, resource, kind, name = uri.split("/")
        if kind == "labels":
            self.labels.append(f"{level}/{resource}/{name}")
            return
        self.metadata[(resource, name)] = value
        self.puts.append((resource, name))

    def get_json(self, uri: str) -> dict[str, str]:
        self.lookups.append(uri)
        _, _, instance_id, relation = uri.split("/")
        return {"ID": f"{relation}-of-{instance_id}"}

    def get(self, uri: str) -> str:
        _, _, instance_id, _, name = uri.split("/")
        if (instance_id, name) not in self.metadata:
            raise OrthancNotFound(uri)
        return self.metadata[(instance_id, name)]

    def packed(self, instance_id: str) -> dict[str, Any]:
        return json.loads(self.metadata[(instance_id, "BodyPartResult")])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def world() -> tuple[results.ResultWriter, Rest, Clock]:
    rest, clock = Rest(), Clock()
    writer = results.ResultWriter(rest, "1.10.1")  # type: ignore[arg-type]
    writer.declare(SHIPPED)
    writer.clock = clock
    return writer, rest, clock


def chest() -> RoutingDecision:
    return RoutingDecision("adult_chest", "adult_chest", 0.97, (), (), None, "pixels", {})


def classify(writer: results.ResultWriter, instance_id: str, *, forwards_pending: bool) -> None:
    writer.classified(instance_id, chest(), "model@1", InstanceState.CLASSIFIED,
                      secondary={"region": "chest", "view": "frontal", "rotation": 0, "inverted": False},
                      forwards_pending=forwards_pending)


def test_a_routed_instance_costs_one_packed_write(world) -> None:
    writer, rest, _ = world
    classify(writer, "i1", forwards_pending=True)
    assert sorted(rest.puts) == [("i1", "BodyPart"), ("i1", "BodyPartRegion")]  # what Explorer shows, at once
    writer.forwarded("i1", InstanceState.FORWARDED, [PEER])
    assert rest.puts.count(("i1", "BodyPartResult")) == 1
    assert len(rest.puts) == 3
    packed = rest.packed("i1")
    assert packed["Class"] == "adult_chest" and packed["Region"] == "chest" and packed["View"] == "frontal"
    assert packed["State"] == "forwarded" and packed["Forwarded"] == ["ai-chest"]


def test_an_instance_routed_nowhere_is_written_at_once(world) -> None:
    writer, rest, _ = world
    classify(writer, "i1", forwards_pending=False)
    assert rest.packed("i1")["State"] == "classified"
    assert writer.flush(everything=True) == 0


def test_slow_forwards_get_the_classified_result_when_the_wait_ends(world) -> None:
    writer, rest, clock = world
    classify(writer, "i1", forwards_pending=True)
    clock.now += results.RESULT_WAIT_SECONDS - 0.1
    assert writer.flush() == 0
    clock.now += 0.2
    assert writer.flush() == 1
    assert rest.packed("i1")["State"] == "classified" and rest.packed("i1")["Class"] == "adult_chest"
    writer.forwarded("i1", InstanceState.FORWARDED, [PEER])
    packed = rest.packed("i1")
    assert packed["State"] == "forwarded" and packed["Class"] == "adult_chest" and packed["Region"] == "chest"
    assert rest.puts.count(("i1", "BodyPartResult")) == 2


def test_a_state_change_merges_into_the_waiting_result(world) -> None:
    writer, rest, _ = world
    classify(writer, "i1", forwards_pending=True)
    writer.state("i1", InstanceState.FAILED_DEAD_LETTER)
    packed = rest.packed("i1")
    assert packed["State"] == "failed:dead-letter" and packed["Class"] == "adult_chest"
    assert writer.flush(everything=True) == 0


def test_an_orderly_shutdown_writes_what_waits(world) -> None:
    writer, rest, _ = world
    classify(writer, "i1", forwards_pending=True)
    assert writer.flush(everything=True) == 1
    assert rest.packed("i1")["State"] == "classified"
    assert writer.suspend() == set()


def test_a_shutdown_without_rest_keeps_what_waits_for_the_next_start(world) -> None:
    writer, rest, _ = world
    classify(writer, "i1", forwards_pending=True)
    assert writer.suspend() == {"i1"}
    assert ("i1", "BodyPartResult") not in rest.metadata


def test_after_a_crash_the_packed_result_is_rebuilt_from_the_store(world, tmp_path: Path) -> None:
    """The packed write waited and the process died: the restarted router's forwards finish with
    an empty writer, whose base is then what its store kept, the model's region included."""
    _, rest, _ = world
    store = Store(tmp_path / "state.sqlite")
    store.add_received([Received("i1", InstanceState.QUEUED)])
    store.record_classification("i1", class_name="adult_chest", score=0.97, model="model@1", destinations=[PEER],
                                shadow=False, evidence=json.dumps({"scores": {"adult_chest": 0.97},
                                                                   "region": "chest", "view": "frontal"}))
    restarted = results.ResultWriter(rest, "1.10.1")  # type: ignore[arg-type]
    restarted.declare(SHIPPED)
    restarted.recall = lambda instance_id: results.stored_values(store, instance_id)
    restarted.forwarded("i1", InstanceState.FORWARDED, [PEER])
    packed = rest.packed("i1")
    assert packed["Class"] == "adult_chest" and packed["Score"] == 0.97 and packed["Region"] == "chest"
    assert packed["State"] == "forwarded" and packed["Forwarded"] == ["ai-chest"]
    store.close()


@pytest.fixture()
def orthanc_112(world) -> tuple[results.ResultWriter, Rest]:
    writer, rest, _ = world
    writer.set_version("1.12.7")
    return writer, rest


def test_labels_are_put_once_per_series_and_study_at_the_ids_the_header_gave(orthanc_112) -> None:
    writer, rest = orthanc_112
    for instance_id in ("i1", "i2", "i3"):
        writer.classified(instance_id, chest(), "model@1", InstanceState.CLASSIFIED, parents=("s1", "st1"))
    assert rest.labels == ["series/s1/bodypart-adult-chest", "studies/st1/bodypart-adult-chest"]
    assert rest.lookups == []
    writer.forget_labels()  # Orthanc deleted something: the series may be new again
    writer.classified("i4", chest(), "model@1", InstanceState.CLASSIFIED, parents=("s1", "st1"))
    assert len(rest.labels) == 4


def test_without_the_header_the_parents_are_asked_of_the_index(orthanc_112) -> None:
    writer, rest = orthanc_112
    writer.classified("i1", chest(), "model@1", InstanceState.CLASSIFIED)
    assert rest.labels == ["series/series-of-i1/bodypart-adult-chest", "studies/study-of-i1/bodypart-adult-chest"]


def test_labels_false_writes_none(orthanc_112) -> None:
    writer, rest = orthanc_112
    writer.labels_wanted = False
    writer.classified("i1", chest(), "model@1", InstanceState.CLASSIFIED, parents=("s1", "st1"))
    writer.forwarded("i1", InstanceState.FAILED_DEAD_LETTER, [])
    assert rest.labels == [] and rest.packed("i1")["State"] == "failed:dead-letter"


def test_orthanc_1_10_gets_no_labels(world) -> None:
    writer, rest, _ = world
    writer.classified("i1", chest(), "model@1", InstanceState.CLASSIFIED, parents=("s1", "st1"))
    assert rest.labels == [] and not writer.labels
