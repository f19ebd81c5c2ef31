"""Attribute names and tags in messages come from pydicom's data dictionary."""

from __future__ import annotations

import pytest

from bodypart_router.imaging.attributes import attribute


@pytest.mark.parametrize(("keyword", "shown"), [
    ("BitsAllocated", "Bits Allocated (0028,0100)"),
    ("SamplesPerPixel", "Samples per Pixel (0028,0002)"),
    ("NumberOfFrames", "Number of Frames (0028,0008)"),
    ("PixelData", "Pixel Data (7FE0,0010)"),
    ("TransferSyntaxUID", "Transfer Syntax UID (0002,0010)"),
    ("PatientAge", "Patient's Age (0010,1010)"),
])
def test_name_and_tag_as_the_standard_writes_them(keyword: str, shown: str) -> None:
    assert attribute(keyword) == shown
