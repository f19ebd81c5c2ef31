"""A deterministic corpus of malformed and unusual DICOM files.

Real archives hold files that are truncated, mislabelled, compressed with codecs
nobody supports, or simply not X-rays. The router must give every one of them a
state with a reason and keep running. This module builds such a corpus from a
few synthetic base datasets with pydicom, so the fault tests need no external
data: the same call always yields the same bytes.

Every case carries:

* its ``category`` (what is wrong with it) and ``variant`` (how exactly);
* ``expected``: the outcomes the core may give it (``classified``,
  ``skipped:<reason>`` or ``failed:<reason>``, see
  :class:`bodypart_router.errors.Reason`). Usually one outcome; a few cases
  accept two where either is a correct reading of the same defect (a file
  declaring 65535 x 65535 pixels but carrying 8 KB is both too large and
  inconsistent);
* unique patient identifiers (:func:`phi_markers`) so that log scans can prove
  no PatientName, PatientID or PatientBirthDate ever reaches a log.

Images are small (64 to 256 pixels a side) so the whole corpus stays a few MB;
the "gigantic" cases *declare* huge sizes without carrying the data.

Usage::

    cases = build_corpus()                 # >= 500 MalformedCase, in memory
    entries = write_corpus(tmp_path)       # the same, written as files
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bodypart_router.errors import Reason
from bodypart_router.states import Kind
from PIL import Image
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

# --------------------------------------------------------------------------- outcomes

CLASSIFIED = "classified"


def skipped(reason: Reason) -> str:
    """Outcome string of a skip, e.g. ``skipped:non-image-sop-class``."""
    assert reason.is_skip, reason
    return f"skipped:{reason.value}"


def failed(reason: Reason) -> str:
    """Outcome string of a failure, e.g. ``failed:inconsistent-pixels``."""
    assert not reason.is_skip, reason
    return f"failed:{reason.value}"


NOT_DICOM = skipped(Reason.NOT_DICOM)
NO_PIXELS = skipped(Reason.NO_PIXEL_DATA)
NON_IMAGE = skipped(Reason.NON_IMAGE_SOP)
NON_PROJECTION = skipped(Reason.NON_PROJECTION_MODALITY)
BAD_TS = failed(Reason.UNSUPPORTED_TRANSFER_SYNTAX)
UNDECODABLE = failed(Reason.UNDECODABLE_PIXELS)
INCONSISTENT = failed(Reason.INCONSISTENT_PIXELS)
TOO_LARGE = failed(Reason.IMAGE_TOO_LARGE)
INVALID = failed(Reason.INVALID_ATTRIBUTE)
EMPTY = failed(Reason.EMPTY_FILE)

#: Every outcome except ``classified``: for files broken so early (a header cut
#: in the middle of an element) that several reasons are honest descriptions.
ANY_REASON: frozenset[str] = frozenset(
    (skipped(r) if r.is_skip else failed(r)) for r in Reason
    if r.kind is not Kind.HELD and r not in (Reason.MODEL_ERROR, Reason.UNREADABLE, Reason.BACKFILL_ERROR,
                                             Reason.DEAD_LETTER)  # given by the router, not the decoder
)

# --------------------------------------------------------------------------- PHI markers

#: PatientName / PatientID prefixes of the corpus. Nothing else in the project uses them,
#: so any occurrence in a log is a leak.
PHI_NAME_PREFIX = "PHI^MARKER^"
PHI_ID_PREFIX = "PHIID-"


def phi_markers(index: int) -> tuple[str, str, str]:
    """Unique (PatientName, PatientID, PatientBirthDate) of case ``index``.

    Birth dates are real dates (DA must parse) in 1901-1927, a range no log
    timestamp or UID fragment produced while testing can collide with as a
    whole 8-digit token.
    """
    year = 1901 + index // 336
    month = 1 + (index // 28) % 12
    day = 1 + index % 28
    return f"{PHI_NAME_PREFIX}{index:04d}", f"{PHI_ID_PREFIX}{index:04d}", f"{year:04d}{month:02d}{day:02d}"


_PHI_PATTERN = re.compile(
    r"PHI\^MARKER\^\d{4}|PHIID-\d{4}|(?<![\d.])19(?:0[1-9]|1\d|2[0-7])(?:0[1-9]|1[0-2])(?:0[1-9]|1\d|2[0-8])(?!\d)"
)


def find_phi(text: str, birth_dates: frozenset[str] | None = None) -> list[str]:
    """Every corpus patient identifier found in ``text`` (a log), in order.

    Names and IDs are matched by prefix. Birth dates are 8-digit dates, so only
    those actually used by the corpus count when ``birth_dates`` is given; digits
    inside a UID (after a dot) are not dates.
    """
    hits = _PHI_PATTERN.findall(text)
    if birth_dates is not None:
        hits = [h for h in hits if not h.isdigit() or h in birth_dates]
    return hits


# --------------------------------------------------------------------------- the case type

#: Cases on which Orthanc's own DICOM parsing kills the process, before any plugin sees the
#: file; no plugin can guard against them, so the Orthanc fault scenarios leave them out
#: (the core decoder still gets them). Measured with a plain Orthanc without plugins.
ORTHANC_CRASHERS: dict[str, str] = {
    "deep-sequence/depth64": "Orthanc 1.10.1 (and 1.12.7) exits without a log line on a REST upload whose "
                             "sequences are nested about 48 levels deep or more (40 levels are stored fine)",
}


@dataclass(frozen=True)
class MalformedCase:
    """One generated file and what the router should make of it."""

    index: int
    category: str
    variant: str
    expected: frozenset[str]
    data: bytes = field(repr=False)
    sop_instance_uid: str | None = None  # None when the bytes hold no parsable identifier

    @property
    def crashes_orthanc(self) -> str | None:
        """Why Orthanc itself (before any plugin runs) dies on this file, if it does."""
        return ORTHANC_CRASHERS.get(f"{self.category}/{self.variant}")

    @property
    def name(self) -> str:
        """File name: sortable, and says what the case is."""
        return f"{self.index:04d}-{self.category}-{self.variant}.dcm"

    @property
    def patient_name(self) -> str:
        return phi_markers(self.index)[0]

    @property
    def patient_id(self) -> str:
        return phi_markers(self.index)[1]

    @property
    def birth_date(self) -> str:
        return phi_markers(self.index)[2]


@dataclass(frozen=True)
class CorpusEntry:
    """A case written to disk (without its bytes, so a manifest stays small)."""

    path: Path
    index: int
    category: str
    variant: str
    expected: frozenset[str]
    sop_instance_uid: str | None
    size: int


# --------------------------------------------------------------------------- base datasets

#: Storage SOP classes used below (DICOM PS3.4 B.5).
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"
SC_MULTIFRAME_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
SC_MULTIFRAME_COLOUR = "1.2.840.10008.5.1.4.1.1.7.4"

_UID_SEED = "bodypart-router-malformed-corpus"


def _uid(index: int, what: str) -> str:
    """A UID that depends only on the case index, so the corpus is reproducible."""
    return str(generate_uid(entropy_srcs=[_UID_SEED, str(index), what]))


def _synthetic_xray(rows: int, cols: int, rng: np.random.Generator, max_value: int) -> np.ndarray:
    """A smooth radiograph-like picture (bright ellipses on a darker field) scaled to ``max_value``."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    img = 0.15 + 0.1 * (y / max(rows - 1, 1))
    for _ in range(3):
        cy, cx = rng.uniform(0.2, 0.8) * rows, rng.uniform(0.2, 0.8) * cols
        ry, rx = rng.uniform(0.1, 0.4) * rows + 1, rng.uniform(0.05, 0.3) * cols + 1
        img = img + 0.35 * (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1.0)
    img = img + rng.normal(0.0, 0.02, size=img.shape)
    return np.clip(img / img.max(), 0.0, 1.0) * max_value


def _size(rng: np.random.Generator) -> tuple[int, int]:
    """Small, slightly non-square sizes: 64..256 a side."""
    sides = (64, 64, 80, 96, 128, 256)
    return int(rng.choice(sides)), int(rng.choice(sides))


def base_dataset(
    index: int,
    *,
    rows: int = 96,
    cols: int = 80,
    modality: str | None = "DX",
    sop_class: str = DX_PRESENTATION,
    bits_allocated: int = 16,
    bits_stored: int = 12,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixels: np.ndarray | None = None,
    with_pixels: bool = True,
) -> Dataset:
    """A complete, valid single- or multi-frame grayscale image that cases then break.

    Pixels are generated from ``index`` unless given. The patient module holds
    the case's PHI markers.
    """
    rng = np.random.default_rng(index)
    name, pid, birth = phi_markers(index)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(index, "sop")
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(index, "study")
    ds.SeriesInstanceUID = _uid(index, "series")
    ds.StudyDate = "20240102"
    ds.StudyTime = "101010"
    ds.AccessionNumber = f"ACC{index:05d}"
    if modality is not None:
        ds.Modality = modality
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = birth
    ds.PatientSex = "O"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"  # deliberately unreliable: the router must use pixels
    if not with_pixels:
        return ds
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels is None:
        pixels = _pixels_for(rng, rows, cols, frames, bits_allocated, bits_stored, signed)
    _set_native_pixels(ds, pixels)
    return ds


def _pixels_for(
    rng: np.random.Generator, rows: int, cols: int, frames: int, bits_allocated: int, bits_stored: int, signed: bool
) -> np.ndarray:
    """Grayscale pixels filling ``bits_stored`` bits, shaped (rows, cols) or (frames, rows, cols)."""
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits_allocated, 8) // 8}")
    if signed:
        lo, hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        lo, hi = 0, 2**bits_stored - 1
    stack = [lo + _synthetic_xray(rows, cols, rng, hi - lo) for _ in range(frames)]
    arr = np.rint(np.stack(stack)).astype(dtype)
    return arr[0] if frames == 1 else arr


def _set_native_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Store an array as little-endian native Pixel Data with the right VR."""
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OW" if pixels.dtype.itemsize > 1 else "OB"


def _colour_dataset(index: int, photometric: str, planar: int, *, rows: int, cols: int, frames: int = 1) -> Dataset:
    """An 8-bit colour Secondary Capture (RGB or YBR_FULL) of a grayscale-looking picture with a tint."""
    rng = np.random.default_rng(index)
    sop = SC_MULTIFRAME_COLOUR if frames > 1 else SC_IMAGE
    ds = base_dataset(index, modality="OT", sop_class=sop, with_pixels=False)
    gray = np.stack([_synthetic_xray(rows, cols, rng, 255.0) for _ in range(frames)])
    rgb = np.stack([gray, gray * 0.9, gray * 0.8], axis=-1)
    if photometric == "YBR_FULL":
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
        rgb = np.stack([y, cb, cr], axis=-1)
    arr = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if planar == 1:
        arr = np.moveaxis(arr, -1, 1)  # (frames, 3, rows, cols)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = planar
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def to_bytes(ds: Dataset, *, implicit_vr: bool | None = None, little_endian: bool | None = None) -> bytes:
    """Serialise ``ds`` as a Part 10 file (or a bare dataset when it has no file meta)."""
    buf = io.BytesIO()
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        dcmwrite(buf, ds, implicit_vr=True if implicit_vr is None else implicit_vr,
                 little_endian=True if little_endian is None else little_endian)
    else:
        dcmwrite(buf, ds, enforce_file_format=True, implicit_vr=implicit_vr, little_endian=little_endian)
    return buf.getvalue()


def with_transfer_syntax(ds: Dataset, uid: str) -> bytes:
    """Serialise ``ds`` as explicit VR little endian, then declare ``uid`` in the File Meta.

    pydicom refuses to write a transfer syntax it does not know, which is exactly
    what a broken sender produces; so the File Meta group is written by hand.
    """
    body = io.BytesIO()
    bare = ds.copy()
    del bare.file_meta
    dcmwrite(body, bare, implicit_vr=False, little_endian=True)
    uid_bytes = uid.encode("ascii", "replace")
    uid_bytes += b"\0" * (len(uid_bytes) % 2)
    elements = b""
    for tag, vr, value in (
        ((0x0002, 0x0001), b"OB", b"\x00\x01"),
        ((0x0002, 0x0002), b"UI", _even(str(ds.file_meta.MediaStorageSOPClassUID).encode())),
        ((0x0002, 0x0003), b"UI", _even(str(ds.file_meta.MediaStorageSOPInstanceUID).encode())),
        ((0x0002, 0x0010), b"UI", uid_bytes),
        ((0x0002, 0x0012), b"UI", _even(b"1.2.826.0.1.3680043.8.498.1")),
    ):
        if vr == b"OB":
            elements += struct.pack("<HH", *tag) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
        else:
            elements += struct.pack("<HH", *tag) + vr + struct.pack("<H", len(value)) + value
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HI", 4, len(elements))
    return b"\0" * 128 + b"DICM" + group_length + elements + body.getvalue()


def _item(value: bytes) -> bytes:
    """One encapsulated item: (FFFE,E000), its length, the value."""
    return b"\xfe\xff\x00\xe0" + struct.pack("<I", len(value)) + value


def _even(value: bytes) -> bytes:
    """UI values are padded to even length with a NUL."""
    return value + b"\0" * (len(value) % 2)


def _encode_frames(ds: Dataset, syntax: str, arr: np.ndarray | None = None) -> list[bytes]:
    """Compress every frame of a native dataset with pydicom's encoders (RLE, JPEG-LS, JPEG 2000)."""
    work = copy.deepcopy(ds)  # compress() rewrites the File Meta, which a shallow copy shares
    work.compress(syntax, arr, generate_instance_uid=False)
    from pydicom.encaps import generate_frames

    frames = int(getattr(work, "NumberOfFrames", 1) or 1)
    return list(generate_frames(work.PixelData, number_of_frames=frames))


def _jpeg_baseline(gray: np.ndarray) -> bytes:
    """An 8-bit JPEG baseline codestream of a 2-D uint8 image (Pillow, quality 90)."""
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _set_encapsulated(ds: Dataset, syntax: str, fragments: list[bytes], *, has_bot: bool = True) -> None:
    """Replace Pixel Data with encapsulated ``fragments`` (one per frame) under ``syntax``.

    Items are built by hand rather than with :func:`pydicom.encaps.encapsulate`,
    which (rightly) refuses empty fragments; the delimiter is added by the writer.
    """
    ds.file_meta.TransferSyntaxUID = syntax
    offsets, position = [], 0
    for fragment in fragments:
        offsets.append(position)
        position += 8 + len(fragment)
    bot = struct.pack(f"<{len(offsets)}I", *offsets) if has_bot else b""
    ds.PixelData = _item(bot) + b"".join(_item(f) for f in fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


# --------------------------------------------------------------------------- generators
#
# Each generator yields (category, variant, expected, dataset-or-bytes). Datasets are
# serialised by build_corpus(); raw bytes are used as they are. Generators receive a
# running index so each case's UIDs and PHI markers are unique.

_Made = tuple[str, str, frozenset[str], "Dataset | bytes"]
_Gen = Callable[["_Counter"], Iterator[_Made]]


class _Counter:
    """Hands out consecutive case indices while generators run."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def _one(*outcomes: str) -> frozenset[str]:
    return frozenset(outcomes)


def _gen_valid(c: _Counter) -> Iterator[_Made]:
    """Unusual but valid radiographs: these must be classified, whatever their encoding."""
    for bits_stored in (8, 10, 12, 14, 15, 16):
        for signed in (False, True):
            i = c.take()
            r, w = _size(np.random.default_rng(i))
            ds = base_dataset(i, rows=r, cols=w, bits_stored=bits_stored, signed=signed, bits_allocated=16)
            yield "bits-stored", f"{bits_stored}{'-signed' if signed else ''}", _one(CLASSIFIED), ds
    for bits_stored in (10, 12, 14):
        # garbage in the unused high bits: a decoder that forgets to mask them sees noise
        i = c.take()
        ds = base_dataset(i, bits_stored=bits_stored)
        arr = np.frombuffer(ds.PixelData, dtype="<u2").copy()
        arr |= np.uint16(0xFFFF << bits_stored & 0xFFFF)
        _set_native_pixels(ds, arr.reshape(ds.Rows, ds.Columns))
        yield "high-bits-garbage", f"stored-{bits_stored}", _one(CLASSIFIED), ds
    for k in range(6):
        i = c.take()
        r, w = _size(np.random.default_rng(i))
        yield "eight-bit", f"{r}x{w}", _one(CLASSIFIED), base_dataset(i, rows=r, cols=w, bits_allocated=8, bits_stored=8)
    for k in range(8):
        i = c.take()
        r, w = _size(np.random.default_rng(i))
        ds = base_dataset(i, rows=r, cols=w, photometric="MONOCHROME1", bits_stored=(12, 16, 10, 8)[k % 4],
                          bits_allocated=8 if k % 4 == 3 else 16)
        yield "monochrome1", f"{k}", _one(CLASSIFIED), ds
    for modality, sop in (("CR", CR_IMAGE), ("DX", DX_PRESENTATION), ("DX", "1.2.840.10008.5.1.4.1.1.1.1.1"),
                          ("OT", SC_IMAGE), ("DR", DX_PRESENTATION), ("RG", CR_IMAGE)):
        i = c.take()
        yield "projection-sop", f"{modality}-{sop.rsplit('.', 2)[-2]}-{sop.rsplit('.', 1)[-1]}", _one(CLASSIFIED), \
            base_dataset(i, modality=modality, sop_class=sop)
    for slope, intercept in ((1, -1024), (2, 0), (0.5, 100), (-1, 4095), (0, 0), (1e-3, 0), (1, 0), (3.5, -7000)):
        i = c.take()
        ds = base_dataset(i)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
        yield "rescale", f"slope{slope}-int{intercept}", _one(CLASSIFIED), ds
    windows = ((2048, 4096), (500, 100), ([1000, 2000], [500, 800]), (0, 0), (-5000, 10), (2048, -1), (1e6, 1e6))
    for center, width in windows:
        i = c.take()
        ds = base_dataset(i)
        ds.WindowCenter, ds.WindowWidth = center, width
        yield "window", f"c{center}-w{width}".replace(" ", ""), _one(CLASSIFIED), ds
    for entries, first, bits in ((256, 0, 16), (4096, 0, 16), (4096, 100, 12), (16, 0, 8)):
        i = c.take()
        ds = base_dataset(i)
        item = Dataset()
        item.LUTDescriptor = [entries, first, bits]
        lut = np.linspace(0, 2**bits - 1, entries).astype("<u2")
        item.LUTData = lut.tobytes()
        item["LUTData"].VR = "OW"
        ds.VOILUTSequence = Sequence([item])
        yield "voi-lut-sequence", f"{entries}-{first}-{bits}", _one(CLASSIFIED), ds
    for bits in (32,):
        for signed in (False, True):
            i = c.take()
            yield "thirty-two-bit", "signed" if signed else "unsigned", _one(CLASSIFIED), \
                base_dataset(i, bits_allocated=32, bits_stored=32 if not signed else 20, signed=signed)
    for frames in (2, 3, 5, 8):
        for bits in (8, 16):
            i = c.take()
            sop = SC_MULTIFRAME_BYTE if bits == 8 else SC_MULTIFRAME_WORD
            ds = base_dataset(i, rows=64, cols=64, modality="OT", sop_class=sop, frames=frames,
                              bits_allocated=bits, bits_stored=bits)
            yield "multi-frame", f"{frames}x{bits}bit", _one(CLASSIFIED), ds
    for k, (photometric, planar) in enumerate((("RGB", 0), ("RGB", 1), ("YBR_FULL", 0), ("YBR_FULL", 1)) * 3):
        i = c.take()
        r, w = _size(np.random.default_rng(i))
        yield "colour", f"{photometric.lower()}-planar{planar}-{k}", _one(CLASSIFIED), \
            _colour_dataset(i, photometric, planar, rows=r, cols=w)
    for frames in (2, 3):
        i = c.take()
        yield "colour-multi-frame", f"rgb-{frames}", _one(CLASSIFIED), _colour_dataset(i, "RGB", 0, rows=64, cols=64,
                                                                                          frames=frames)
    for k in range(2):
        # palette colour: a LUT maps 8-bit indices to grey levels
        i = c.take()
        ds = base_dataset(i, bits_allocated=8, bits_stored=8, modality="OT", sop_class=SC_IMAGE,
                          photometric="PALETTE COLOR")
        ramp = (np.linspace(0, 65535, 256)).astype("<u2").tobytes()
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", ramp)
        yield "palette-colour", f"{k}", _one(CLASSIFIED), ds
    for k in range(4):
        i = c.take()
        yield "missing-modality", f"{k}", _one(CLASSIFIED), base_dataset(i, modality=None)
    for k, (r, w) in enumerate(((1, 1), (2, 2), (1, 256), (256, 1), (3, 250), (250, 3), (16, 16), (8, 200))):
        i = c.take()
        # tiny or needle-shaped: either classified after resizing or refused with a reason that names Rows/Columns
        yield "extreme-aspect", f"{r}x{w}", _one(CLASSIFIED, INVALID), base_dataset(i, rows=r, cols=w)
    for k, value in enumerate((0, 4095, 2048)):
        i = c.take()
        ds = base_dataset(i, pixels=np.full((96, 96), value, dtype=np.uint16), rows=96, cols=96)
        yield "constant-image", f"value{value}", _one(CLASSIFIED), ds
    for k, charset in enumerate(("ISO_IR 192", "ISO_IR 100", "ISO_IR 144", "GB18030")):
        i = c.take()
        ds = base_dataset(i)
        ds.SpecificCharacterSet = charset
        ds.StudyDescription = "\u00e9tude" if charset != "ISO_IR 144" else "\u0441\u043d\u0438\u043c\u043e\u043a"
        ds.InstitutionName = "x" * 64
        ds.add_new(0x00091010, "LO", "private value")  # private tag without a creator
        yield "unusual-text", charset.replace(" ", "_"), _one(CLASSIFIED), ds
    for k in range(3):
        # YBR_FULL_422 uncompressed: two chroma samples shared by each pair of pixels
        i = c.take()
        ds = _colour_dataset(i, "YBR_FULL", 0, rows=64, cols=64)
        ybr = np.frombuffer(ds.PixelData, np.uint8).reshape(64, 32, 2, 3)
        packed = np.stack([ybr[:, :, 0, 0], ybr[:, :, 1, 0], ybr[:, :, 0, 1], ybr[:, :, 0, 2]], axis=-1)
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = packed.astype(np.uint8).tobytes()
        yield "colour", f"ybr_full_422-{k}", _one(CLASSIFIED), ds
    for k, pad in enumerate((0, 4095, 65535)):
        # a padded border (PixelPaddingValue): real DR detectors produce these
        i = c.take()
        ds = base_dataset(i)
        arr = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns).copy()
        arr[:, :8] = pad
        arr[:8, :] = pad
        _set_native_pixels(ds, arr)
        ds.PixelPaddingValue = pad
        yield "pixel-padding", f"{pad}", _one(CLASSIFIED), ds
    for k in range(3):
        # MONOCHROME1 with signed pixels and a rescale: three transforms that must compose
        i = c.take()
        ds = base_dataset(i, photometric="MONOCHROME1", signed=True, bits_stored=(12, 14, 16)[k])
        ds.RescaleSlope, ds.RescaleIntercept = 1, 1000
        yield "monochrome1", f"signed-rescaled-{k}", _one(CLASSIFIED), ds
    for k, depth in enumerate((8, 32, 64)):
        # deeply nested sequences: a parser that recurses naively may blow its stack (see ORTHANC_CRASHERS)
        i = c.take()
        ds = base_dataset(i)
        inner = Dataset()
        inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
        for _ in range(depth):
            outer = Dataset()
            outer.AnatomicRegionSequence = Sequence([inner])
            inner = outer
        ds.AnatomicRegionSequence = inner.AnatomicRegionSequence
        yield "deep-sequence", f"depth{depth}", _one(CLASSIFIED), ds


def _gen_syntaxes(c: _Counter) -> Iterator[_Made]:
    """Valid encodings beyond explicit little endian: implicit, big endian, deflate, RLE, JPEG family."""
    for k in range(3):
        i = c.take()
        ds = base_dataset(i, transfer_syntax=ImplicitVRLittleEndian)
        yield "syntax-implicit", f"{k}", _one(CLASSIFIED), to_bytes(ds, implicit_vr=True, little_endian=True)
    for k in range(3):
        i = c.take()
        ds = base_dataset(i, transfer_syntax=ExplicitVRBigEndian)
        # big endian pixel words: rewrite the little endian bytes swapped
        arr = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2")
        ds.PixelData = arr.tobytes()
        yield "syntax-big-endian", f"{k}", _one(CLASSIFIED), to_bytes(ds, implicit_vr=False, little_endian=False)
    for k in range(3):
        i = c.take()
        ds = base_dataset(i, transfer_syntax=DeflatedExplicitVRLittleEndian)
        yield "syntax-deflate", f"{k}", _one(CLASSIFIED), ds
    for k in range(3):
        i = c.take()
        yield "no-file-meta", f"{k}", _one(CLASSIFIED), _without_file_meta(base_dataset(i))
    for syntax, label in ((RLELossless, "rle"), (JPEGLSLossless, "jpeg-ls"), (JPEG2000Lossless, "jpeg2000")):
        for k, bits in enumerate((8, 12, 16)):
            i = c.take()
            ds = base_dataset(i, bits_allocated=8 if bits == 8 else 16, bits_stored=bits)
            _set_encapsulated(ds, syntax, _encode_frames(ds, syntax))
            yield f"syntax-{label}", f"{bits}bit", _one(CLASSIFIED), ds
    for k in range(3):
        i = c.take()
        ds = base_dataset(i, bits_allocated=8, bits_stored=8)
        gray = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(ds.Rows, ds.Columns)
        _set_encapsulated(ds, JPEGBaseline8Bit, [_jpeg_baseline(gray)])
        yield "syntax-jpeg-baseline", f"{k}", _one(CLASSIFIED), ds
    i = c.take()
    ds = base_dataset(i, rows=64, cols=64, frames=3, modality="OT", sop_class=SC_MULTIFRAME_WORD)
    _set_encapsulated(ds, RLELossless, _encode_frames(ds, RLELossless))
    yield "syntax-rle", "multi-frame", _one(CLASSIFIED), ds


def _without_file_meta(ds: Dataset) -> bytes:
    """Implicit VR dataset with no preamble and no File Meta: old archives still hold these."""
    buf = io.BytesIO()
    bare = ds.copy()
    del bare.file_meta
    dcmwrite(buf, bare, implicit_vr=True, little_endian=True)
    return buf.getvalue()


def _gen_out_of_scope(c: _Counter) -> Iterator[_Made]:
    """Valid DICOM that is not a radiograph: skipped with the reason."""
    modalities = (
        ("CT", "1.2.840.10008.5.1.4.1.1.2"), ("MR", "1.2.840.10008.5.1.4.1.1.4"),
        ("US", "1.2.840.10008.5.1.4.1.1.6.1"), ("NM", "1.2.840.10008.5.1.4.1.1.20"),
        ("PT", "1.2.840.10008.5.1.4.1.1.128"), ("XA", "1.2.840.10008.5.1.4.1.1.12.1"),
        ("MG", "1.2.840.10008.5.1.4.1.1.1.2"), ("RF", "1.2.840.10008.5.1.4.1.1.12.2"),
        ("CT", "1.2.840.10008.5.1.4.1.1.2.1"), ("MR", "1.2.840.10008.5.1.4.1.1.4.1"),
    )
    for modality, sop in modalities:
        for k in range(2):
            i = c.take()
            ds = base_dataset(i, modality=modality, sop_class=sop, signed=(modality == "CT"), bits_stored=12)
            if modality == "CT":
                ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            yield "non-projection-modality", f"{modality.lower()}-{k}", _one(NON_PROJECTION), ds
    for k in range(3):
        # a CT labelled with the Secondary Capture class: the modality still decides
        i = c.take()
        yield "non-projection-modality", f"ct-as-secondary-capture-{k}", _one(NON_PROJECTION), \
            base_dataset(i, modality="CT", sop_class=SC_IMAGE)
    non_image = (
        ("SR", "1.2.840.10008.5.1.4.1.1.88.11", "basic-text-sr"),
        ("SR", "1.2.840.10008.5.1.4.1.1.88.22", "enhanced-sr"),
        ("SR", "1.2.840.10008.5.1.4.1.1.88.33", "comprehensive-sr"),
        ("KO", "1.2.840.10008.5.1.4.1.1.88.59", "key-object-selection"),
        ("PR", "1.2.840.10008.5.1.4.1.1.11.1", "grayscale-presentation-state"),
        ("PR", "1.2.840.10008.5.1.4.1.1.11.2", "colour-presentation-state"),
        ("DOC", "1.2.840.10008.5.1.4.1.1.104.1", "encapsulated-pdf"),
        ("DOC", "1.2.840.10008.5.1.4.1.1.104.2", "encapsulated-cda"),
        ("RTPLAN", "1.2.840.10008.5.1.4.1.1.481.5", "rt-plan"),
        ("ECG", "1.2.840.10008.5.1.4.1.1.9.1.1", "ecg-waveform"),
    )
    for modality, sop, label in non_image:
        for k in range(2):
            i = c.take()
            ds = base_dataset(i, modality=modality, sop_class=sop, with_pixels=False)
            if label == "encapsulated-pdf":
                pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
                ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
                ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
                ds.DocumentTitle = "report"
            elif "sr" in label or label == "key-object-selection":
                ds.ValueType = "CONTAINER"
                ds.ContinuityOfContent = "SEPARATE"
                ds.CompletionFlag = "COMPLETE"
                ds.VerificationFlag = "UNVERIFIED"
            # SR and PR may also carry a stray Pixel Data: the SOP class still decides
            if k == 1 and label != "encapsulated-pdf":
                _add_stray_pixels(ds, i)
            yield "non-image-sop", f"{label}-{k}", _one(NON_IMAGE), ds
    for k in range(6):
        i = c.take()
        yield "no-pixel-data", f"dx-{k}", _one(NO_PIXELS), \
            base_dataset(i, with_pixels=False, sop_class=(DX_PRESENTATION, CR_IMAGE)[k % 2])
    for k in range(2):
        # Float Pixel Data (7FE0,0008) but no (7FE0,0010): not something a radiograph carries
        i = c.take()
        ds = base_dataset(i, with_pixels=False)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 32, 32
        ds.BitsAllocated = 32
        ds.FloatPixelData = np.zeros(32 * 32, dtype="<f4").tobytes()
        yield "float-pixel-data", f"{k}", _one(NO_PIXELS, UNDECODABLE), ds


def _add_stray_pixels(ds: Dataset, index: int) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = _pixels_for(np.random.default_rng(index), 32, 32, 1, 8, 8, False).tobytes()


def _gen_truncated(c: _Counter) -> Iterator[_Made]:
    """Pixel Data shorter than Rows x Columns x BitsAllocated says, and files cut short."""
    for fraction in (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99):
        for bits in (8, 16):
            for multi in (False, True):
                i = c.take()
                ds = base_dataset(i, bits_allocated=bits, bits_stored=bits if bits == 8 else 12,
                                  frames=3 if multi else 1, rows=64 if multi else 128, cols=64 if multi else 128,
                                  modality="OT" if multi else "DX",
                                  sop_class=(SC_MULTIFRAME_BYTE if bits == 8 else SC_MULTIFRAME_WORD)
                                  if multi else DX_PRESENTATION)
                keep = int(len(ds.PixelData) * fraction) & ~1
                ds.PixelData = ds.PixelData[:keep]
                yield "truncated-pixel-data", f"{int(fraction * 100)}pct-{bits}bit{'-multi' if multi else ''}", \
                    _one(INCONSISTENT), ds
    for k, missing in enumerate((2, 4, 64, 256, 1024, 4094)):
        # a few bytes short: the frame is almost whole, still not the declared size
        i = c.take()
        ds = base_dataset(i)
        ds.PixelData = ds.PixelData[: len(ds.PixelData) - missing]
        yield "truncated-pixel-data", f"minus{missing}bytes", _one(INCONSISTENT), ds
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9, 0.999):
        for bits in (8, 16):
            # the file itself ends inside Pixel Data: its length field promises more than is there
            i = c.take()
            ds = base_dataset(i, bits_allocated=bits, bits_stored=bits if bits == 8 else 12)
            full = to_bytes(ds)
            pixel_start = len(full) - len(ds.PixelData)
            cut = pixel_start + int(len(ds.PixelData) * fraction)
            yield "truncated-file", f"in-pixels-{fraction}-{bits}bit", _one(INCONSISTENT, UNDECODABLE), full[:cut]
    for k, fraction in enumerate((0.05, 0.2, 0.4, 0.6, 0.8, 0.95)):
        # cut inside the header: whatever is left may read as not DICOM, or as a dataset without pixels
        i = c.take()
        ds = base_dataset(i)
        full = to_bytes(ds)
        header_len = len(full) - len(ds.PixelData)
        yield "truncated-file", f"in-header-{fraction}", ANY_REASON, full[: int(header_len * fraction)]
    for syntax, label in ((RLELossless, "rle"), (JPEGLSLossless, "jpeg-ls"), (JPEG2000Lossless, "jpeg2000")):
        for fraction in (0.3, 0.6, 0.95):
            # the file ends inside an encapsulated fragment
            i = c.take()
            ds = base_dataset(i)
            _set_encapsulated(ds, syntax, _encode_frames(ds, syntax))
            full = to_bytes(ds)
            cut = len(full) - int(len(ds.PixelData) * (1 - fraction))
            yield "truncated-file", f"in-{label}-fragment-{fraction}", _one(UNDECODABLE, INCONSISTENT), full[:cut]


def _gen_inconsistent(c: _Counter) -> Iterator[_Made]:
    """Rows, Columns, BitsAllocated, SamplesPerPixel or NumberOfFrames that do not match the data length."""
    for k, (dr, dc) in enumerate(((1, 0), (0, 1), (2, 0), (64, 64), (128, 0), (0, 300), (1000, 1000), (7, 3))):
        for bits in (8, 16):
            i = c.take()
            ds = base_dataset(i, bits_allocated=bits, bits_stored=bits if bits == 8 else 12)
            ds.Rows, ds.Columns = ds.Rows + dr, ds.Columns + dc
            yield "rows-columns-too-large", f"plus{dr}x{dc}-{bits}bit", _one(INCONSISTENT), ds
    for k, (r, w) in enumerate(((64, 64), (100, 100), (127, 128), (128, 127), (32, 500), (1, 1))):
        # declared smaller than the data: surplus bytes that cannot be padding
        i = c.take()
        ds = base_dataset(i, rows=128, cols=128)
        ds.Rows, ds.Columns = r, w
        yield "rows-columns-too-small", f"{r}x{w}", _one(INCONSISTENT), ds
    for k in range(6):
        # BitsAllocated 16 declared, 8-bit data stored
        i = c.take()
        ds = base_dataset(i, bits_allocated=8, bits_stored=8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        yield "bits-allocated-mismatch", f"says16-has8-{k}", _one(INCONSISTENT), ds
    for k in range(6):
        # BitsAllocated 8 declared, 16-bit data stored: twice too long
        i = c.take()
        ds = base_dataset(i, bits_allocated=16, bits_stored=12)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds["PixelData"].VR = "OB"
        yield "bits-allocated-mismatch", f"says8-has16-{k}", _one(INCONSISTENT), ds
    for k in range(4):
        i = c.take()
        ds = base_dataset(i, bits_allocated=16, bits_stored=12)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 16, 15
        yield "bits-allocated-mismatch", f"says32-has16-{k}", _one(INCONSISTENT), ds
    for value in (0, 3, 7, 12, 24, 64, 65535):
        i = c.take()
        ds = base_dataset(i)
        ds.BitsAllocated = value
        ds.BitsStored = min(12, value) if value else 0
        ds.HighBit = max(ds.BitsStored - 1, 0)
        yield "bits-allocated-absurd", f"{value}", _one(INVALID, INCONSISTENT), ds
    for stored, high in ((17, 16), (0, 0), (12, 3), (40, 39)):
        i = c.take()
        ds = base_dataset(i)
        ds.BitsStored, ds.HighBit = stored, high
        # HighBit disagreeing with BitsStored is commonly ignored by decoders: classified is fair too
        expected = _one(INVALID, CLASSIFIED) if stored == 12 else _one(INVALID)
        yield "bits-stored-absurd", f"stored{stored}-high{high}", expected, ds
    for k, spp in enumerate((3, 3, 2, 4)):
        # grayscale data declared as three samples (or a value no photometric allows)
        i = c.take()
        ds = base_dataset(i)
        ds.SamplesPerPixel = spp
        yield "samples-per-pixel-mismatch", f"{spp}-{k}", _one(INCONSISTENT, INVALID), ds
    for k in range(4):
        # colour data declared as one sample: three times too long
        i = c.take()
        ds = _colour_dataset(i, "RGB", 0, rows=64, cols=64)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        del ds.PlanarConfiguration
        yield "samples-per-pixel-mismatch", f"rgb-as-gray-{k}", _one(INCONSISTENT), ds
    for frames in (2, 4, 10, 1000):
        i = c.take()
        ds = base_dataset(i, rows=64, cols=64, modality="OT", sop_class=SC_MULTIFRAME_WORD, frames=1)
        ds.NumberOfFrames = frames
        yield "frames-mismatch", f"says{frames}-has1", _one(INCONSISTENT), ds
    for k, ba in enumerate((8, 16)):
        for frames in (3, 6):
            # multi-frame declared single frame: surplus data
            i = c.take()
            ds = base_dataset(i, rows=64, cols=64, modality="OT", sop_class=SC_MULTIFRAME_BYTE if ba == 8
                              else SC_MULTIFRAME_WORD, frames=frames, bits_allocated=ba, bits_stored=ba)
            ds.NumberOfFrames = 1
            yield "frames-mismatch", f"says1-has{frames}-{ba}bit", _one(INCONSISTENT), ds
    for k in range(4):
        # odd-length Pixel Data: one byte more than a 16-bit frame can use
        i = c.take()
        ds = base_dataset(i, rows=64, cols=64)
        raw = io.BytesIO()
        dcmwrite(raw, ds, enforce_file_format=True)
        data = raw.getvalue()
        # rewrite the OW length to an odd value and append one byte (pydicom would pad it)
        tag_at = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
        (length,) = struct.unpack_from("<I", data, tag_at + 8)
        patched = data[: tag_at + 8] + struct.pack("<I", length + 1) + data[tag_at + 12:] + bytes([k])
        yield "odd-length-pixel-data", f"{k}", _one(INCONSISTENT), patched


def _gen_missing_or_absurd(c: _Counter) -> Iterator[_Made]:
    """Image pixel module attributes missing or outside their allowed values."""
    required_missing = ("Rows", "Columns", "BitsAllocated")
    for keyword in required_missing:
        for k in range(4):
            i = c.take()
            ds = base_dataset(i)
            delattr(ds, keyword)
            yield "missing-attribute", f"{keyword}-{k}", _one(INVALID), ds
    for keyword in ("PhotometricInterpretation", "SamplesPerPixel", "PixelRepresentation", "BitsStored", "HighBit"):
        for k in range(3):
            # the standard requires them, decoders commonly assume the obvious default: either is a fair answer
            i = c.take()
            ds = base_dataset(i)
            delattr(ds, keyword)
            yield "missing-attribute", f"{keyword}-{k}", _one(CLASSIFIED, INVALID), ds
    absurd: list[tuple[str, object, frozenset[str]]] = [
        ("Rows", 0, _one(INVALID)),
        ("Columns", 0, _one(INVALID)),
        ("NumberOfFrames", 0, _one(INVALID)),
        ("NumberOfFrames", -3, _one(INVALID)),
        ("PhotometricInterpretation", "BANANA", _one(INVALID, UNDECODABLE)),
        ("PhotometricInterpretation", "", _one(INVALID, CLASSIFIED)),
        ("PhotometricInterpretation", "ARGB", _one(INVALID, INCONSISTENT, UNDECODABLE, CLASSIFIED)),
        ("SamplesPerPixel", 0, _one(INVALID)),
        ("PixelRepresentation", 7, _one(INVALID)),
        ("PlanarConfiguration", 5, _one(INVALID, CLASSIFIED)),
    ]
    for keyword, value, expected in absurd:
        for k in range(2):
            i = c.take()
            ds = base_dataset(i)
            setattr(ds, keyword, value)
            yield "absurd-attribute", f"{keyword}={value}-{k}", expected, ds
    for k, text in enumerate(("abc", "1.5", "", "9" * 12)):
        # NumberOfFrames is IS: a non-integer string must give a reason, not a ValueError
        i = c.take()
        ds = base_dataset(i)
        ds.add_new(0x00280008, "IS", None)
        ds[0x00280008]._value = text  # bypass validation, as a broken writer would
        yield "absurd-attribute", f"NumberOfFrames-text{k}", _one(INVALID, INCONSISTENT, TOO_LARGE, CLASSIFIED), ds


def _gen_gigantic(c: _Counter) -> Iterator[_Made]:
    """Files declaring sizes far past any radiograph, carrying only a few KB."""
    sizes = ((65535, 65535, 1), (65535, 65535, 100), (40000, 40000, 1), (60000, 2, 1),
             (512, 512, 2_000_000), (65535, 65535, 2_147_483_647), (30000, 30000, 8), (20000, 65535, 1))
    for rows, cols, frames in sizes:
        i = c.take()
        ds = base_dataset(i, rows=32, cols=32, modality="OT", sop_class=SC_MULTIFRAME_WORD if frames > 1
                          else DX_PRESENTATION)
        ds.Rows, ds.Columns = rows, cols
        if frames > 1:
            ds.NumberOfFrames = frames
        yield "gigantic-declared", f"{rows}x{cols}x{frames}", _one(TOO_LARGE, INCONSISTENT), ds
    for k, (rows, cols) in enumerate(((65535, 65535), (50000, 50000))):
        # compressed: the data is a valid 32x32 codestream, the header promises a giant
        i = c.take()
        ds = base_dataset(i, rows=32, cols=32)
        _set_encapsulated(ds, RLELossless, _encode_frames(ds, RLELossless))
        ds.Rows, ds.Columns = rows, cols
        yield "gigantic-declared", f"rle-{rows}x{cols}", _one(TOO_LARGE, INCONSISTENT, UNDECODABLE), ds
    for k, (rows, cols) in enumerate(((60000, 60000), (65000, 65000))):
        # a JPEG 2000 codestream whose own SIZ marker declares a giant (decoders allocate from it)
        i = c.take()
        ds = base_dataset(i, rows=32, cols=32)
        frame = _encode_frames(ds, JPEG2000Lossless)[0]
        frame = _patch_j2k_size(frame, rows, cols)
        _set_encapsulated(ds, JPEG2000Lossless, [frame])
        ds.Rows, ds.Columns = rows, cols
        yield "gigantic-declared", f"j2k-siz-{rows}x{cols}", _one(TOO_LARGE, UNDECODABLE), ds


def _patch_j2k_size(codestream: bytes, rows: int, cols: int) -> bytes:
    """Rewrite the Xsiz/Ysiz fields of a J2K SIZ marker (FF51)."""
    at = codestream.find(b"\xff\x51")
    if at < 0:
        return codestream
    out = bytearray(codestream)
    struct.pack_into(">II", out, at + 6, cols, rows)
    return bytes(out)


def _gen_bad_syntax(c: _Counter) -> Iterator[_Made]:
    """Transfer syntaxes nobody can decode, and syntaxes that lie about the data."""
    bogus = ("1.2.3.4.5.6.7", "9.9.9", "1.2.840.10008.1.2.4.999", "1.2.840.10008.1.2.99",
             "2.25.123456789", "1.2.840.10008.1.2.4.50.1")
    for uid in bogus:
        for k in range(2):
            # native little endian bytes under an unknown UID: nothing says how to read the pixels
            i = c.take()
            yield "bogus-transfer-syntax", f"{uid}-{k}", _one(BAD_TS), with_transfer_syntax(base_dataset(i), uid)
    for k, uid in enumerate(("not-a-uid", "1.2.840.10008.1.2.1 ", "1..2")):
        i = c.take()
        yield "bogus-transfer-syntax", f"malformed-uid-{k}", _one(BAD_TS, CLASSIFIED), \
            with_transfer_syntax(base_dataset(i), uid)
    video = (("1.2.840.10008.1.2.4.100", "mpeg2"), ("1.2.840.10008.1.2.4.102", "mpeg4"),
             ("1.2.840.10008.1.2.4.107", "hevc"), ("1.2.840.10008.1.2.4.94", "jpip"))
    for uid, label in video:
        for k in range(2):
            # real but unsupported codecs: encapsulated random bytes
            i = c.take()
            ds = base_dataset(i)
            fragment = np.random.default_rng(i).integers(0, 256, 2000, dtype=np.uint8).tobytes()
            _set_encapsulated(ds, uid, [fragment])
            yield "unsupported-transfer-syntax", f"{label}-{k}", _one(BAD_TS, UNDECODABLE), ds
    lies = ((JPEGBaseline8Bit, "jpeg-baseline"), (JPEGLSLossless, "jpeg-ls"), (JPEG2000Lossless, "jpeg2000"),
            (RLELossless, "rle"), ("1.2.840.10008.1.2.4.70", "jpeg-lossless"))
    for uid, label in lies:
        for k in range(2):
            # declares a compressed syntax, carries native pixels of defined length
            i = c.take()
            ds = base_dataset(i, bits_allocated=8, bits_stored=8)
            yield "syntax-says-compressed", f"{label}-{k}", _one(UNDECODABLE, INCONSISTENT), \
                with_transfer_syntax(ds, uid)
    for k in range(3):
        # declares explicit little endian, carries an encapsulated JPEG 2000 sequence
        i = c.take()
        ds = base_dataset(i)
        frames = _encode_frames(ds, JPEG2000Lossless)
        ds.PixelData = encapsulate(frames)
        yield "syntax-says-native", f"{k}", _one(INCONSISTENT, UNDECODABLE), ds
    for k in range(3):
        # deflate declared, data not deflated (and the reverse)
        i = c.take()
        raw = with_transfer_syntax(base_dataset(i), DeflatedExplicitVRLittleEndian)
        yield "syntax-deflate-broken", f"not-deflated-{k}", ANY_REASON, raw
        i = c.take()
        ds = base_dataset(i, transfer_syntax=DeflatedExplicitVRLittleEndian)
        body = to_bytes(ds)
        meta_end = _file_meta_end(body)
        compressed = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressed.compress(body[meta_end:]) + compressed.flush()
        cut = deflated[: len(deflated) // 2]
        yield "syntax-deflate-broken", f"half-stream-{k}", ANY_REASON, body[:meta_end] + cut


def _file_meta_end(data: bytes) -> int:
    """Offset where the dataset starts after the 128-byte preamble, 'DICM' and group 0002."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return 132 + 12 + group_length


def _gen_broken_fragments(c: _Counter) -> Iterator[_Made]:
    """Encapsulated Pixel Data whose fragments are damaged."""
    syntaxes = ((RLELossless, "rle"), (JPEGLSLossless, "jpeg-ls"), (JPEG2000Lossless, "jpeg2000"),
                (JPEGBaseline8Bit, "jpeg-baseline"))
    damages: list[tuple[str, Callable[[bytes, np.random.Generator], list[bytes]]]] = [
        ("garbage-fragment", lambda f, rng: [rng.integers(0, 256, len(f), dtype=np.uint8).tobytes()]),
        ("half-fragment", lambda f, rng: [f[: len(f) // 2 & ~1]]),
        ("empty-fragment", lambda f, rng: [b""]),
        ("header-only", lambda f, rng: [f[:64]]),
        ("flipped-bytes", lambda f, rng: [_flip(f, rng, 40)]),
        ("zeroed-middle", lambda f, rng: [f[: len(f) // 3] + b"\0" * (len(f) // 3) + f[2 * (len(f) // 3):]]),
    ]
    for syntax, label in syntaxes:
        for damage, fn in damages:
            i = c.take()
            ds = base_dataset(i, bits_allocated=8, bits_stored=8)
            frame = (_jpeg_baseline(np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns))
                     if syntax == JPEGBaseline8Bit else _encode_frames(ds, syntax)[0])
            fragments = [x + b"\0" * (len(x) % 2) for x in fn(frame, np.random.default_rng(i))]
            _set_encapsulated(ds, syntax, fragments)
            # flipped bytes in entropy-coded data can still decode to a (wrong) picture
            expected = _one(UNDECODABLE, INCONSISTENT, CLASSIFIED) if damage in ("flipped-bytes", "zeroed-middle") \
                else _one(UNDECODABLE, INCONSISTENT)
            yield "broken-fragments", f"{label}-{damage}", expected, ds
    for k, syntax in enumerate((RLELossless, JPEG2000Lossless, JPEGLSLossless)):
        # no items at all between the offset table and the delimiter
        i = c.take()
        ds = base_dataset(i)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = _item(b"")  # an empty Basic Offset Table, then the delimiter
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        yield "broken-fragments", f"no-fragments-{k}", _one(UNDECODABLE, INCONSISTENT), ds
    for k, syntax in enumerate((RLELossless, JPEG2000Lossless)):
        # a Basic Offset Table pointing past the end
        i = c.take()
        ds = base_dataset(i, rows=64, cols=64, frames=2, modality="OT", sop_class=SC_MULTIFRAME_WORD)
        _set_encapsulated(ds, syntax, _encode_frames(ds, syntax))
        data = bytearray(ds.PixelData)
        struct.pack_into("<I", data, 12, 0x7FFFFFF0)  # the second frame's offset
        ds.PixelData = bytes(data)
        yield "broken-fragments", f"bad-offset-table-{k}", _one(UNDECODABLE, INCONSISTENT, CLASSIFIED), ds
    for k, syntax in enumerate((RLELossless, JPEG2000Lossless)):
        # fewer frames encoded than NumberOfFrames says
        i = c.take()
        ds = base_dataset(i, rows=64, cols=64, frames=4, modality="OT", sop_class=SC_MULTIFRAME_WORD)
        frames = _encode_frames(ds, syntax)[:2]
        _set_encapsulated(ds, syntax, frames, has_bot=False)
        yield "broken-fragments", f"missing-frames-{k}", _one(UNDECODABLE, INCONSISTENT, CLASSIFIED), ds
    for k in range(4):
        # RLE header declaring a segment count the frame does not hold
        i = c.take()
        ds = base_dataset(i)
        frame = bytearray(_encode_frames(ds, RLELossless)[0])
        struct.pack_into("<I", frame, 0, (15, 0, 3, 200)[k])
        _set_encapsulated(ds, RLELossless, [bytes(frame)])
        yield "broken-fragments", f"rle-segment-count-{(15, 0, 3, 200)[k]}", _one(UNDECODABLE, INCONSISTENT), ds
    for k in range(3):
        # an item tag missing: the parser meets garbage where a (FFFE,E000) should be
        i = c.take()
        ds = base_dataset(i)
        frame = _encode_frames(ds, RLELossless)[0]
        _set_encapsulated(ds, RLELossless, [frame])
        data = bytearray(ds.PixelData)
        data[12:16] = b"\x12\x34\x56\x78"  # the first item tag, after a 12-byte offset table
        ds.PixelData = bytes(data)
        yield "broken-fragments", f"bad-item-tag-{k}", _one(UNDECODABLE, INCONSISTENT), ds


def _flip(data: bytes, rng: np.random.Generator, count: int) -> bytes:
    """``data`` with ``count`` random bytes XOR-ed, the first 32 bytes (headers) left intact."""
    out = bytearray(data)
    if len(out) > 64:
        for pos in rng.integers(32, len(out), count):
            out[int(pos)] ^= 0xA5
    return bytes(out)


def _gen_not_dicom(c: _Counter) -> Iterator[_Made]:
    """Empty files, random bytes and other files that are not DICOM at all."""
    for k in range(4):
        c.take()
        yield "empty-file", f"{k}", _one(EMPTY), b""
    lengths = (1, 2, 3, 7, 17, 31, 128, 131, 132, 133, 200, 500, 1000, 2000, 4096, 8192, 16384, 65536,
               1 << 17, 777, 12345, 99, 256, 3000)
    for k, length in enumerate(lengths):
        i = c.take()
        data = np.random.default_rng(i).integers(0, 256, length, dtype=np.uint8).tobytes()
        if data[128:132] == b"DICM":  # pragma: no cover - vanishingly unlikely, keeps the case honest
            data = data[:128] + b"XXXX" + data[132:]
        yield "garbage", f"{length}bytes", _one(NOT_DICOM, EMPTY), data
    others = {
        "text": b"This is a plain text note, not an image.\n" * 20,
        "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "zip": b"PK\x03\x04" + b"\0" * 60,
        "json": json.dumps({"PatientName": "not in a DICOM"}).encode(),
        "zeros": b"\0" * 4096,
        "html": b"<html><body>404 Not Found</body></html>",
    }
    for label, data in others.items():
        c.take()
        yield "not-dicom", label, _one(NOT_DICOM, EMPTY), data
    for k in range(6):
        # a valid preamble and magic, then garbage
        i = c.take()
        rng = np.random.default_rng(i)
        data = b"\0" * 128 + b"DICM" + rng.integers(0, 256, 200 + 300 * k, dtype=np.uint8).tobytes()
        yield "magic-then-garbage", f"{k}", ANY_REASON, data
    for k in range(2):
        c.take()
        yield "magic-only", f"{k}", _one(NOT_DICOM, EMPTY, NO_PIXELS, INVALID), b"\0" * 128 + b"DICM"


def _gen_corrupt_header(c: _Counter) -> Iterator[_Made]:
    """Valid files with one element header damaged: a length past the end, a VR that does not exist."""
    for k in range(12):
        i = c.take()
        ds = base_dataset(i)
        data = bytearray(to_bytes(ds))
        meta_end = _file_meta_end(bytes(data))
        rng = np.random.default_rng(i)
        if k % 3 == 0:
            # the Rows element (0028,0010) claims a huge length
            at = data.find(b"\x28\x00\x10\x00US", meta_end)
            struct.pack_into("<H", data, at + 6, 0xFFF0)
            variant = "rows-length"
        elif k % 3 == 1:
            # an invented VR on Study Date (0008,0020)
            at = data.find(b"\x08\x00\x20\x00DA", meta_end)
            data[at + 4: at + 6] = b"ZZ"
            variant = "bad-vr"
        else:
            # random bytes smeared over the middle of the dataset
            start = meta_end + int(rng.integers(0, 200))
            data[start: start + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            variant = "smeared"
        yield "corrupt-header", f"{variant}-{k}", ANY_REASON | {CLASSIFIED}, bytes(data)


def _gen_identifiers_in_wrong_tags(c: _Counter) -> Iterator[_Made]:
    """A sender that shifts fields puts patient identifiers where codes belong.

    The reason's detail quotes the offending tag, so it must not quote such a value verbatim:
    details reach the logs.
    """
    for k in range(2):
        i = c.take()
        ds = base_dataset(i)
        ds.Modality = f"{ds.PatientName} {ds.PatientID}"
        yield "identifier-in-wrong-tag", f"modality-{k}", _one(NON_PROJECTION), ds
    for k in range(2):
        i = c.take()
        ds = base_dataset(i, modality="CT")
        ds.Modality = str(ds.PatientBirthDate)  # a date where a modality code belongs
        yield "identifier-in-wrong-tag", f"modality-date-{k}", _one(NON_PROJECTION), ds
    for k in range(2):
        i = c.take()
        ds = base_dataset(i)
        ds.add_new(0x00080016, "UI", None)
        ds[0x00080016]._value = f"{ds.PatientID}.{ds.PatientBirthDate}"  # bypass UI validation
        yield "identifier-in-wrong-tag", f"sop-class-{k}", _one(NON_IMAGE), ds


_GENERATORS: tuple[_Gen, ...] = (
    _gen_valid,
    _gen_syntaxes,
    _gen_out_of_scope,
    _gen_truncated,
    _gen_inconsistent,
    _gen_missing_or_absurd,
    _gen_gigantic,
    _gen_bad_syntax,
    _gen_broken_fragments,
    _gen_not_dicom,
    _gen_corrupt_header,
    _gen_identifiers_in_wrong_tags,
)

#: Minimum corpus size the fault tests rely on (issue: "at least 500").
MINIMUM_CASES = 500


def iter_cases() -> Iterator[MalformedCase]:
    """Yield every case in a fixed order; indices start at 0 and are unique."""
    counter = _Counter()
    for gen in _GENERATORS:
        for category, variant, expected, made in gen(counter):
            index = counter.next - 1
            if isinstance(made, Dataset):
                sop = str(made.get("SOPInstanceUID", "")) or None
                data = to_bytes(made)
            else:
                data = made
                sop = _uid(index, "sop") if data[128:132] == b"DICM" or category == "no-file-meta" else None
            yield MalformedCase(index, category, _safe(variant), expected, data, sop)


def _safe(text: str) -> str:
    """File-name-safe variant label."""
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")[:60]


def build_corpus() -> list[MalformedCase]:
    """All cases in memory (a few MB)."""
    return list(iter_cases())


def write_corpus(directory: Path, cases: list[MalformedCase] | None = None) -> list[CorpusEntry]:
    """Write every case under ``directory`` and a ``manifest.json``; return the entries."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for case in cases if cases is not None else iter_cases():
        path = directory / case.name
        path.write_bytes(case.data)
        entries.append(CorpusEntry(path, case.index, case.category, case.variant, case.expected,
                                   case.sop_instance_uid, len(case.data)))
    manifest = [
        {"file": e.path.name, "index": e.index, "category": e.category, "variant": e.variant,
         "expected": sorted(e.expected), "sop_instance_uid": e.sop_instance_uid, "size": e.size}
        for e in entries
    ]
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return entries


if __name__ == "__main__":  # pragma: no cover - manual inspection: python -m tests.support.malformed DIR
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "malformed-corpus")
    written = write_corpus(out)
    print(f"{len(written)} files, {sum(e.size for e in written) / 1e6:.1f} MB in {out}")
