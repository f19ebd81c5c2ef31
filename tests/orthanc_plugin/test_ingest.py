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

    def GetInstanceSimplifiedJson(self) -> str:  # noqa: N802
        raise AssertionError("the whole simplified JSON must not be built at ingest")


def test_ingest_reads_the_tags_with_long_values_left_out() -> None:
    instance = Instance()
    tags = ingest.ingest_tags(instance)
    assert (tags["Modality"], tags["SOPClassUID"]) == ("CR", "1.2.840.10008.5.1.4.1.1.1")
    assert tags["TextValue"] is None  # a long text element: left out by Orthanc, never built into JSON
    (args,) = instance.asked
    assert args[-1] == ingest.MAX_TAG_CHARS <= 1024
