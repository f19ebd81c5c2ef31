"""Header checks before any pixel is decoded: is the image what its attributes say?

:class:`Geometry` validates Rows, Columns, Bits Allocated/Stored, Samples per Pixel, Number of
Frames, Pixel Representation, Photometric Interpretation and the Transfer Syntax, applies the
size limits, and compares the Pixel Data length with what those attributes need (what a
compressed frame declares in its own header is checked by :mod:`.codec_headers`). Every problem is a
:class:`~bodypart_router.errors.NotClassifiable` naming the DICOM tag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pydicom.uid as uids
from pydicom.dataset import Dataset

from ..errors import NotClassifiable, Reason
from .attributes import attribute
from .codecs import KNOWN_SYNTAXES

#: Largest frame (Rows x Columns) the decoder accepts.
MAX_FRAME_PIXELS = 100_000_000
#: Largest Number of Frames x Rows x Columns x Samples per Pixel accepted.
MAX_TOTAL_SAMPLES = 1_000_000_000

PHOTOMETRICS = {
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
    "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
}


@dataclass(frozen=True)
class Geometry:
    """The image attributes the decoders rely on, validated before decoding."""

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    samples: int
    frames: int
    frame_index: int
    photometric: str
    transfer_syntax: uids.UID

    @classmethod
    def of(cls, ds: Dataset, pixel_data: "bytes | memoryview") -> "Geometry":
        if "PixelData" not in ds:
            other = " (it has Float/Double Float Pixel Data, not an X-ray)" if (
                "FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else ""
            raise NotClassifiable(Reason.NO_PIXEL_DATA, f"no {attribute('PixelData')}{other}")
        rows = _positive_int(ds, "Rows")
        columns = _positive_int(ds, "Columns")
        bits_allocated = _positive_int(ds, "BitsAllocated")
        if bits_allocated not in (1, 8, 16, 32):
            raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{attribute('BitsAllocated')} is {bits_allocated}, expected 1, 8, 16 or 32")
        bits_stored = _optional_int(ds, "BitsStored", bits_allocated)
        if not 1 <= bits_stored <= bits_allocated:
            raise NotClassifiable(
                Reason.INVALID_ATTRIBUTE,
                f"{attribute('BitsStored')} is {bits_stored}, expected 1 to {attribute('BitsAllocated')} = {bits_allocated}",
            )
        samples = _optional_int(ds, "SamplesPerPixel", 1)
        if samples not in (1, 3):
            raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{attribute('SamplesPerPixel')} is {samples}, expected 1 or 3")
        frames = _optional_int(ds, "NumberOfFrames", 1)
        if frames < 1:
            raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{attribute('NumberOfFrames')} is {frames}, expected 1 or more")
        pixel_representation = _optional_int(ds, "PixelRepresentation", 0)
        if pixel_representation not in (0, 1):
            raise NotClassifiable(
                Reason.INVALID_ATTRIBUTE, f"{attribute('PixelRepresentation')} is {pixel_representation}, expected 0 or 1")
        if rows * columns > MAX_FRAME_PIXELS:
            raise NotClassifiable(
                Reason.IMAGE_TOO_LARGE,
                f"{attribute('Rows')} x {attribute('Columns')} = {rows} x {columns} is over the {MAX_FRAME_PIXELS} pixel limit",
            )
        if frames * rows * columns * samples > MAX_TOTAL_SAMPLES:
            raise NotClassifiable(
                Reason.IMAGE_TOO_LARGE,
                f"{attribute('NumberOfFrames')} x Rows x Columns x Samples = {frames * rows * columns * samples} "
                f"is over the {MAX_TOTAL_SAMPLES} sample limit",
            )
        photometric = (text_of(ds, "PhotometricInterpretation") or ("MONOCHROME2" if samples == 1 else "RGB")).upper()
        if photometric not in PHOTOMETRICS:
            raise NotClassifiable(
                Reason.INVALID_ATTRIBUTE,
                f"{attribute('PhotometricInterpretation')} is {photometric!r}, not one DICOM defines for images",
            )
        tsyntax = uids.UID(str(ds.file_meta.TransferSyntaxUID).strip().rstrip("\x00"))
        if tsyntax not in KNOWN_SYNTAXES:
            name = tsyntax.name if tsyntax.is_transfer_syntax else "unknown"
            raise NotClassifiable(
                Reason.UNSUPPORTED_TRANSFER_SYNTAX,
                f"{attribute('TransferSyntaxUID')} {tsyntax} ({name}) is not supported; "
                "supported: uncompressed, deflate, RLE, JPEG, JPEG-LS, JPEG 2000",
            )
        geometry = cls(
            rows=rows, columns=columns, bits_allocated=bits_allocated, bits_stored=bits_stored,
            signed=pixel_representation == 1, samples=samples, frames=frames,
            frame_index=frames // 2, photometric=photometric, transfer_syntax=tsyntax,
        )
        geometry._check_length(pixel_data)
        return geometry

    def _check_length(self, data: "bytes | memoryview") -> None:
        """Compare the Pixel Data length with the geometry, without decoding anything."""
        if self.transfer_syntax.is_encapsulated:
            if len(data) < 8 or bytes(data[:4]) != b"\xfe\xff\x00\xe0":
                raise NotClassifiable(
                    Reason.INCONSISTENT_PIXELS,
                    f"{attribute('TransferSyntaxUID')} {self.transfer_syntax} is compressed but "
                    f"{attribute('PixelData')} is not encapsulated (no Item tag at its start)",
                )
            return
        samples = 2 if self.photometric == "YBR_FULL_422" else self.samples  # chroma is subsampled 2:1
        expected = math.ceil(self.frames * self.rows * self.columns * samples * self.bits_allocated / 8)
        actual = len(data)
        # Only the padding byte that makes an odd length even is allowed: anything else means the
        # attributes describe other data (wrong Rows/Columns/Bits Allocated) or the file is truncated.
        if actual not in (expected, expected + expected % 2):
            frames = f"{attribute('NumberOfFrames')} {self.frames} x " if self.frames > 1 else ""
            spp = f" x {attribute('SamplesPerPixel')} {self.samples}" if self.samples > 1 else ""
            raise NotClassifiable(
                Reason.INCONSISTENT_PIXELS,
                f"{frames}{attribute('Rows')} {self.rows} x {attribute('Columns')} {self.columns}{spp} x "
                f"{attribute('BitsAllocated')} {self.bits_allocated} needs {expected} bytes, "
                f"{attribute('PixelData')} has {actual}",
            )


def text_of(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None else str(value).strip()


def _positive_int(ds: Dataset, keyword: str) -> int:
    try:
        value = ds.get(keyword)
        number = int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{attribute(keyword)} is missing or not a number")
    if number <= 0:
        raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{attribute(keyword)} is {number}, expected a positive number")
    return number


def _optional_int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{attribute(keyword)} is {value!r}, not a number") from None
