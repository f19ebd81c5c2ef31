"""Ingest's fast path reads the tags without turning long values into JSON."""

from __future__ import annotations

import json
from typing import Any

from support import fake_orthanc

orthanc = fake_orthanc.install()

from bodypart_router.orthanc_plugin import ingest  # noqa: E402


class Instance:
    """The DicomInstance of OnStoredInstance: only the bounded JSON may be asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    def GetInstanceAdvancedJson(self, *args: Any) -> str:  # noqa: N802 (Orthanc's name)
        self.asked.append(args)
        return json.dumps({"Modality": "CR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1", "TextValue": None})

    def GetInstanceSize(self) -> int:  # noqa: N802
        return 600_000

    def GetInstanceSimplifiedJson(self) -> str:  # noqa: N802
        raise AssertionError("the whole simplified JSON must not be built at ingest")


def test_ingest_reads_the_tags_with_long_values_left_out() -> None:
    instance = Instance()
    tags = ingest.ingest_tags(instance)
    assert (tags["Modality"], tags["SOPClassUID"]) == ("CR", "1.2.840.10008.5.1.4.1.1.1")
    assert tags["TextValue"] is None  # a long text element: left out by Orthanc, never built into JSON
    (args,) = instance.asked
    assert args[-1] == ingest.MAX_TAG_CHARS <= 1024


class LargeInstance:
    """A stored file above the JSON size limit: its bytes are parsed, Orthanc's JSON is never asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def GetInstanceSize(self) -> int:  # noqa: N802 (Orthanc's name)
        return len(self.data)

    def GetInstanceData(self) -> bytes:  # noqa: N802
        return self.data

    def GetInstanceAdvancedJson(self, *args: Any) -> str:  # noqa: N802
        raise AssertionError("Orthanc's JSON decodes long text values before dropping them: seconds for 300 MB")


def test_a_large_instance_is_read_from_its_bytes_with_long_values_left_unread(monkeypatch) -> None:
    from pydicom.dataelem import DataElement

    from support.dicoms import to_bytes, xray

    ds = xray(90, size=64)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = "CHEST"
    ds.add(DataElement(0x0040A160, "UT", "a" * 5000))  # TextValue, longer than MAX_TAG_CHARS
    data = to_bytes(ds)
    monkeypatch.setattr(ingest, "JSON_MAX_INSTANCE_BYTES", len(data) - 1)
    tags = ingest.ingest_tags(LargeInstance(data))
    assert (tags["Modality"], tags["SOPClassUID"], tags["BodyPartExamined"]) == ("CR", ds.SOPClassUID, "CHEST")
    assert tags["ImageType"] == "ORIGINAL\\PRIMARY"  # multiple values as Orthanc's JSON writes them
    assert tags["SOPInstanceUID"] == ds.SOPInstanceUID and tags["PatientID"] == ds.PatientID
    assert "TextValue" not in tags and "PixelData" not in tags


def test_a_small_instance_still_uses_orthancs_bounded_json() -> None:
    instance = Instance()
    assert ingest.ingest_tags(instance)["Modality"] == "CR"


def test_the_recorder_commits_less_often_while_a_burst_holds_classification(tmp_path) -> None:
    """During a burst the workers wait anyway (YieldToIngest): arrivals gather longer per commit."""
    import threading

    from bodypart_router.config import parse
    from bodypart_router.forwarding.events import Dispatcher
    from bodypart_router.forwarding.store import Store
    from bodypart_router.ops.ingest_gate import ArrivalRate

    now = [100.0]
    declared = {"UserMetadata": {"BodyPartResult": 1031}}
    config = parse({"Routes": {}}, declared, base_dir=tmp_path, check_paths=False)
    store = Store(tmp_path / "s.sqlite")
    recorder = ingest.Recorder(config, store, None, None, Dispatcher(), threading.Event())  # type: ignore[arg-type]
    recorder.arrivals = ArrivalRate(clock=lambda: now[0])
    assert recorder._batch_seconds() == ingest.RECORD_BATCH_SECONDS
    for _ in range(5):  # a trickle: 10 a second over the half-second window
        recorder.arrivals.note()
    assert recorder._batch_seconds() == ingest.RECORD_BATCH_SECONDS
    for _ in range(20):  # 50 a second
        recorder.arrivals.note()
    assert recorder._batch_seconds() == ingest.BURST_RECORD_BATCH_SECONDS
    off = parse({"Routes": {}, "YieldToIngest": {"MaxWaitSeconds": 0}}, declared, base_dir=tmp_path,
                check_paths=False)
    recorder.config = off  # nothing holds classification back: the short batches stay
    assert recorder._batch_seconds() == ingest.RECORD_BATCH_SECONDS
    store.close()
