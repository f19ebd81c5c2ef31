"""Turn a DICOM file (or a PNG/JPEG) into a small, display-ready 8-bit grayscale image.

The model needs 224x224 pixels; a CR is 2500x3000 16-bit. Decoding and
windowing the full image costs far more than the network, so the order of work
here is chosen for speed without changing the picture:

1. Cheap checks on the header, *before* any pixel is decoded: an X-ray SOP
   class and modality (:class:`~bodypart_router.xray_policy.XrayPolicy`), sane
   Rows/Columns/BitsAllocated, a size limit, and a Pixel Data length that
   matches the geometry.
2. Decode only what the model needs: one frame (the middle one of a
   multi-frame image, the most representative of a sweep), at reduced
   resolution where the codec allows it (JPEG 2000 resolution levels, JPEG
   DCT scaling), mask the unused high bits (Bits Stored < Bits Allocated,
   sign-extending signed data), then an integer area reduction to a short
   side of at least ``2 x 224`` pixels.
3. Only then the float work on the small array: Modality LUT or Rescale
   Slope/Intercept; VOI LUT, else the first Window Center/Width, else the
   0.5-99.5 percentile range; inversion of MONOCHROME1 (or of Presentation
   LUT Shape INVERSE). Colour images become their BT.601 luma.

Decoders, and why (all permissively licensed; no GPL code is loaded):

- Native (uncompressed, implicit/explicit VR, big endian, deflate) and RLE
  Lossless: pydicom itself (MIT). Native pixels are read as a NumPy view of
  the Pixel Data bytes, without copies.
- JPEG 2000 (lossless and lossy, and HTJ2K): OpenJPEG (BSD-2-Clause) as
  bundled by pylibjpeg-openjpeg (MIT), called through
  :mod:`bodypart_router.jpeg2000` because that is the only way to ask for a
  reduced resolution level, which makes a 2500x2048 decode ~15x cheaper.
- JPEG baseline 8-bit grayscale: OpenCV's libjpeg-turbo (Apache-2.0 /
  IJG-BSD) with DCT-domain scaling (1/2, 1/4, 1/8) during decode.
- Other JPEG processes (extended 12-bit, lossless) and JPEG-LS: GDCM through
  python-gdcm (BSD-3-Clause). GDCM is used directly, frame by frame, because
  pydicom refuses to hand 12-bit JPEG Extended to it although GDCM decodes it.
- Anything else pydicom has a decoder for (colour images, palettes, unusual
  bit depths) goes through :func:`pydicom.pixels.pixel_array`.

pylibjpeg-libjpeg is deliberately not used: it is GPL-3.0.

Every failure becomes :class:`~bodypart_router.errors.NotClassifiable` with a
:class:`~bodypart_router.errors.Reason` and a message naming the DICOM tag.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import pydicom
import pydicom.uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array

from . import jpeg2000
from .codec_headers import check_frame_size, check_inflated_size
from .errors import NotClassifiable, Reason
from .preprocess import INPUT_SIZE
from .xray_policy import XrayPolicy

#: Shortest side the decoded image is reduced to (at least): the model input side. Reductions
#: are powers of two (integer block means, JPEG 2000 resolution levels, JPEG DCT scaling), so
#: the result lies between 1x and 2x the model input and the final area resample is cheap.
TARGET_SHORT_SIDE = INPUT_SIZE
#: Largest frame (Rows x Columns) the decoder accepts.
MAX_FRAME_PIXELS = 100_000_000
#: Largest Number of Frames x Rows x Columns x Samples per Pixel accepted.
MAX_TOTAL_SAMPLES = 1_000_000_000
#: Largest file read at all.
MAX_FILE_BYTES = 2 * 1024**3
#: Largest PNG/JPEG (width x height) accepted.
MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS

DicomSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Dataset]
_DEFAULT_POLICY = XrayPolicy()

_JPEG_GDCM_SYNTAXES = {
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLosslessSV1,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
}
_JPEG_LS_SYNTAXES = {uids.JPEGLSLossless, uids.JPEGLSNearLossless}
_JPEG2000_SYNTAXES = {
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.HTJ2KLossless,
    uids.HTJ2KLosslessRPCL,
    uids.HTJ2K,
}
_NATIVE_SYNTAXES = {
    uids.ImplicitVRLittleEndian,
    uids.ExplicitVRLittleEndian,
    uids.ExplicitVRBigEndian,
    uids.DeflatedExplicitVRLittleEndian,
}
_KNOWN_SYNTAXES = _NATIVE_SYNTAXES | _JPEG_GDCM_SYNTAXES | _JPEG2000_SYNTAXES | {uids.RLELossless}
_PHOTOMETRICS = {
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
    "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
}
_CV2_REDUCED_GRAYSCALE = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                          4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


@dataclass(frozen=True)
class DecodedImage:
    """A display-ready image (bone bright) plus the facts of how it was obtained."""

    pixels: np.ndarray          #: 2-D uint8, 0 = black, bone bright, reduced size
    source_rows: int            #: Rows of the original image
    source_columns: int         #: Columns of the original image
    photometric: str            #: Photometric Interpretation of the source ("" for PNG/JPEG files)
    transfer_syntax_uid: str    #: Transfer Syntax UID ("" for PNG/JPEG files)
    frame_index: int            #: 0-based frame used
    number_of_frames: int       #: frames in the source
    reduction: int              #: source side / decoded side, rounded (1 = full resolution)
    voi: str                    #: how gray levels were chosen, e.g. "window 550/1024" or "min-max"
    source_format: str = "dicom"  #: "dicom", "png" or "jpeg"


# --------------------------------------------------------------------------- entry points


def decode_dicom(
    source: DicomSource,
    *,
    policy: XrayPolicy | None = _DEFAULT_POLICY,
    target_short_side: int = TARGET_SHORT_SIDE,
) -> DecodedImage:
    """Decode a DICOM instance (a path, its bytes or a pydicom Dataset) into a :class:`DecodedImage`.

    ``policy`` decides which SOP classes and modalities are X-rays (None
    accepts anything with pixels). Raises :class:`NotClassifiable` for every
    input that cannot be turned into an image, never anything else.
    """
    if isinstance(source, Dataset):
        ds, backing = source, None
        _ensure_transfer_syntax(ds)
    else:
        ds, backing = _open_dicom(source, policy)
    try:
        if policy is not None:
            policy.check(_text(ds, "Modality"), _text(ds, "SOPClassUID"))
        pixel_data = _pixel_data(ds, backing)
        geometry = _Geometry.of(ds, pixel_data)
        image, reduction, voi = _decode_and_render(ds, geometry, pixel_data, target_short_side)
    except NotClassifiable:
        raise
    except MemoryError as exc:
        raise NotClassifiable(Reason.IMAGE_TOO_LARGE, f"out of memory while decoding Pixel Data (7FE0,0010): {exc}") from exc
    except Exception as exc:  # a decoder's own error on bad data: report it, never a traceback
        raise NotClassifiable(Reason.UNDECODABLE_PIXELS, f"Pixel Data (7FE0,0010) could not be decoded: {_short(exc)}") from exc
    return DecodedImage(
        pixels=image,
        source_rows=geometry.rows,
        source_columns=geometry.columns,
        photometric=geometry.photometric,
        transfer_syntax_uid=str(geometry.transfer_syntax),
        frame_index=geometry.frame_index,
        number_of_frames=geometry.frames,
        reduction=reduction,
        voi=voi,
    )


def decode_image_file(source: str | os.PathLike | bytes) -> DecodedImage:
    """Decode a PNG or JPEG file (already display-ready, bone bright) into a :class:`DecodedImage`."""
    data = source if isinstance(source, (bytes, bytearray)) else _read_bytes(source)
    kind = sniff(data[:132])
    if kind not in ("png", "jpeg"):
        raise NotClassifiable(Reason.NOT_DICOM, "neither DICOM nor a PNG/JPEG image")
    size = _png_size(data) if kind == "png" else _jpeg_size(data)
    if size is None:
        raise NotClassifiable(Reason.UNDECODABLE_PIXELS, f"the {kind.upper()} header is unreadable")
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise NotClassifiable(Reason.IMAGE_TOO_LARGE, f"{width}x{height} {kind.upper()} is over the {MAX_IMAGE_PIXELS} pixel limit")
    scale = 1
    if kind == "jpeg":  # DCT-domain scaling, but keep the short side >= the target
        while scale < 8 and min(width, height) // (scale * 2) >= TARGET_SHORT_SIDE:
            scale *= 2
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, _CV2_REDUCED_GRAYSCALE[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise NotClassifiable(Reason.UNDECODABLE_PIXELS, f"the {kind.upper()} data could not be decoded")
    factor = _reduction_factor(image.shape, TARGET_SHORT_SIDE)
    image = _area_reduce(image, factor)
    return DecodedImage(
        pixels=np.ascontiguousarray(image, dtype=np.uint8),
        source_rows=height,
        source_columns=width,
        photometric="",
        transfer_syntax_uid="",
        frame_index=0,
        number_of_frames=1,
        reduction=scale * factor,
        voi="as stored",
        source_format=kind,
    )


def decode_file(path: str | os.PathLike, *, policy: XrayPolicy | None = _DEFAULT_POLICY) -> DecodedImage:
    """Decode a file whatever it holds (DICOM with or without file meta, PNG, JPEG), judged by content."""
    if sniff(_read_head(path)) in ("png", "jpeg"):
        return decode_image_file(path)
    return decode_dicom(path, policy=policy)


def sniff(head: bytes) -> str:
    """Guess a file's kind from its first 132 bytes: "dicom", "png", "jpeg" or "unknown".

    "unknown" may still be a DICOM file without file meta (ACR-NEMA style);
    :func:`decode_dicom` decides that.
    """
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return "unknown"


#: Values larger than this are not read while parsing (pydicom ``defer_size``).
_DEFER_SIZE = 16384


def _open_dicom(
    source: str | os.PathLike | bytes | bytearray | memoryview, policy: XrayPolicy | None = None
) -> tuple[Dataset, bytes | None]:
    """Parse the header, deferring big values; also return the bytes the Pixel Data can be viewed in.

    Files are read whole, once: a memory map would save that copy but turns a
    file truncated while being read into a SIGBUS that kills the process.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        size = _file_size(source)
        if size > MAX_FILE_BYTES:
            raise NotClassifiable(Reason.IMAGE_TOO_LARGE, f"the file has {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        data = _read_bytes(source)
    head, backing = data[:132], data
    fileobj = io.BytesIO(data)  # shares ``data``: no copy
    if not data:
        raise NotClassifiable(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    if head[128:132] != b"DICM" and not _looks_like_raw_dataset(head):
        raise NotClassifiable(Reason.NOT_DICOM, "no DICM prefix at byte 128 and no DICOM elements at the start")
    deflated_at = _deflated_dataset_offset(data)
    if deflated_at is not None:
        check_inflated_size(memoryview(data)[deflated_at:])
    try:
        ds = pydicom.dcmread(fileobj, force=True, defer_size=_DEFER_SIZE)
    except Exception as exc:  # pydicom raises many types on garbage
        _raise_for_unreadable(fileobj, exc, policy)
    if len(ds) == 0:  # pydicom gives up silently on some truncated files
        _raise_for_unreadable(fileobj, ValueError("no DICOM data elements could be read"), policy)
    _ensure_transfer_syntax(ds)
    if ds.file_meta.TransferSyntaxUID == uids.DeflatedExplicitVRLittleEndian:
        backing = None  # offsets refer to the inflated stream, not to the file
    return ds, backing


def _deflated_dataset_offset(data: bytes) -> int | None:
    """Where the deflated dataset starts, if the file meta says Deflated Explicit VR Little Endian.

    Read from the raw file meta (group 0002, always explicit VR little endian), because pydicom
    inflates the whole dataset in one call, with no limit.
    """
    if data[128:132] != b"DICM" or uids.DeflatedExplicitVRLittleEndian.encode() not in data[132:4096]:
        return None
    i = 132
    while i + 8 <= len(data) and data[i:i + 2] == b"\x02\x00":
        vr = data[i + 4:i + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            i += 12 + int.from_bytes(data[i + 8:i + 12], "little")
        else:
            i += 8 + int.from_bytes(data[i + 6:i + 8], "little")
    return i


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Record the encoding of a dataset without file meta, as pydicom guessed it while reading.

    An in-memory dataset with no encoding at all is taken as explicit VR little endian.
    """
    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = ds.original_encoding
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        uids.ImplicitVRLittleEndian if implicit else
        uids.ExplicitVRBigEndian if little is False else uids.ExplicitVRLittleEndian
    )


def _raise_for_unreadable(fileobj: object, exc: Exception, policy: XrayPolicy | None) -> None:
    """Tell a broken Pixel Data element (truncated file) from a file that is not DICOM at all."""
    if isinstance(fileobj, io.BytesIO):
        fileobj.seek(0)
    try:
        header = pydicom.dcmread(fileobj, force=True, stop_before_pixels=True)
    except Exception:
        header = None
    if header is None or len(header) == 0 or "Rows" not in header:
        raise NotClassifiable(Reason.NOT_DICOM, f"not a readable DICOM file: {_short(exc)}") from exc
    if policy is not None:  # a truncated CT is still a CT: skip it for that reason first
        policy.check(_text(header, "Modality"), _text(header, "SOPClassUID"))
    raise NotClassifiable(
        Reason.INCONSISTENT_PIXELS,
        f"the header reads but Pixel Data (7FE0,0010) is truncated or malformed: {_short(exc)}",
    ) from exc


def _pixel_data(ds: Dataset, backing: bytes | None) -> bytes | memoryview:
    """The Pixel Data value, as a zero-copy view of the file's bytes when it was deferred.

    Copying a 15 MB value into a new bytes object costs more than everything
    else the decoder does for an uncompressed image; a view costs nothing.
    May be shorter than declared when the file is truncated.
    """
    if "PixelData" not in ds:
        return b""
    element = ds.get_item("PixelData", keep_deferred=True)
    tell = getattr(element, "value_tell", None)
    if backing is None or getattr(element, "value", b"") is not None or tell is None:
        return ds.PixelData
    return memoryview(backing)[tell : tell + int(element.length)]


# --------------------------------------------------------------------------- header checks


@dataclass(frozen=True)
class _Geometry:
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
    def of(cls, ds: Dataset, pixel_data: "bytes | memoryview") -> "_Geometry":
        if "PixelData" not in ds:
            other = " (it has Float/Double Float Pixel Data, not an X-ray)" if (
                "FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else ""
            raise NotClassifiable(Reason.NO_PIXEL_DATA, f"no Pixel Data (7FE0,0010){other}")
        rows = _positive_int(ds, "Rows", "(0028,0010)")
        columns = _positive_int(ds, "Columns", "(0028,0011)")
        bits_allocated = _positive_int(ds, "BitsAllocated", "(0028,0100)")
        if bits_allocated not in (1, 8, 16, 32):
            raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"Bits Allocated (0028,0100) is {bits_allocated}, expected 1, 8, 16 or 32")
        bits_stored = _optional_int(ds, "BitsStored", bits_allocated)
        if not 1 <= bits_stored <= bits_allocated:
            raise NotClassifiable(
                Reason.INVALID_ATTRIBUTE,
                f"Bits Stored (0028,0101) is {bits_stored}, expected 1 to Bits Allocated (0028,0100) = {bits_allocated}",
            )
        samples = _optional_int(ds, "SamplesPerPixel", 1)
        if samples not in (1, 3):
            raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"Samples per Pixel (0028,0002) is {samples}, expected 1 or 3")
        frames = _optional_int(ds, "NumberOfFrames", 1)
        if frames < 1:
            raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"Number of Frames (0028,0008) is {frames}, expected 1 or more")
        pixel_representation = _optional_int(ds, "PixelRepresentation", 0)
        if pixel_representation not in (0, 1):
            raise NotClassifiable(
                Reason.INVALID_ATTRIBUTE, f"Pixel Representation (0028,0103) is {pixel_representation}, expected 0 or 1")
        if rows * columns > MAX_FRAME_PIXELS:
            raise NotClassifiable(
                Reason.IMAGE_TOO_LARGE,
                f"Rows (0028,0010) x Columns (0028,0011) = {rows} x {columns} is over the {MAX_FRAME_PIXELS} pixel limit",
            )
        if frames * rows * columns * samples > MAX_TOTAL_SAMPLES:
            raise NotClassifiable(
                Reason.IMAGE_TOO_LARGE,
                f"Number of Frames (0028,0008) x Rows x Columns x Samples = {frames * rows * columns * samples} "
                f"is over the {MAX_TOTAL_SAMPLES} sample limit",
            )
        photometric = (_text(ds, "PhotometricInterpretation") or ("MONOCHROME2" if samples == 1 else "RGB")).upper()
        if photometric not in _PHOTOMETRICS:
            raise NotClassifiable(
                Reason.INVALID_ATTRIBUTE,
                f"Photometric Interpretation (0028,0004) is {photometric!r}, not one DICOM defines for images",
            )
        tsyntax = uids.UID(str(ds.file_meta.TransferSyntaxUID).strip().rstrip("\x00"))
        if tsyntax not in _KNOWN_SYNTAXES:
            name = tsyntax.name if tsyntax.is_transfer_syntax else "unknown"
            raise NotClassifiable(
                Reason.UNSUPPORTED_TRANSFER_SYNTAX,
                f"Transfer Syntax UID (0002,0010) {tsyntax} ({name}) is not supported; "
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
                    f"Transfer Syntax UID (0002,0010) {self.transfer_syntax} is compressed but Pixel Data "
                    "(7FE0,0010) is not encapsulated (no Item tag at its start)",
                )
            return
        samples = 2 if self.photometric == "YBR_FULL_422" else self.samples  # chroma is subsampled 2:1
        expected = math.ceil(self.frames * self.rows * self.columns * samples * self.bits_allocated / 8)
        actual = len(data)
        # Only the padding byte that makes an odd length even is allowed: anything else means the
        # attributes describe other data (wrong Rows/Columns/Bits Allocated) or the file is truncated.
        if actual not in (expected, expected + expected % 2):
            frames = f"Number of Frames (0028,0008) {self.frames} x " if self.frames > 1 else ""
            spp = f" x Samples per Pixel (0028,0002) {self.samples}" if self.samples > 1 else ""
            raise NotClassifiable(
                Reason.INCONSISTENT_PIXELS,
                f"{frames}Rows (0028,0010) {self.rows} x Columns (0028,0011) {self.columns}{spp} x "
                f"Bits Allocated (0028,0100) {self.bits_allocated} needs {expected} bytes, "
                f"Pixel Data (7FE0,0010) has {actual}",
            )


# --------------------------------------------------------------------------- decoding


def _check_codec_header(pixel_data: "bytes | memoryview", g: _Geometry) -> None:
    """A compressed frame must declare Rows x Columns in its own header before a decoder sees it
    (decoders allocate what their header says: see codec_headers.py)."""
    ts = g.transfer_syntax
    kind = ("JPEG 2000" if ts in _JPEG2000_SYNTAXES else "JPEG-LS" if ts in _JPEG_LS_SYNTAXES
            else "JPEG" if ts in _JPEG_GDCM_SYNTAXES or ts == uids.JPEGBaseline8Bit else None)
    if kind is not None:
        check_frame_size(_frame_bytes(pixel_data, g), kind, g.rows, g.columns)


def _decode_and_render(ds: Dataset, g: _Geometry, pixel_data: "bytes | memoryview", target: int) -> tuple[np.ndarray, int, str]:
    """Decode the chosen frame at reduced size and map it to display-ready uint8."""
    _check_codec_header(pixel_data, g)
    if g.samples == 3 or g.photometric == "PALETTE COLOR":
        gray, reduction = _decode_colour(ds, g, target)
        return gray, reduction, "colour to luma"
    raw, reduction = _decode_gray_reduced(ds, g, pixel_data, target)
    values = apply_modality_lut(raw, ds) if _has_modality_transform(ds) else raw
    unit, voi = _apply_voi(np.asarray(values), ds)
    if _displays_inverted(ds, g):
        unit = 1.0 - unit
    return _to_uint8(unit), reduction, voi


def _displays_inverted(ds: Dataset, g: _Geometry) -> bool:
    """MONOCHROME1 (0 = white) or a MONOCHROME2 with Presentation LUT Shape (2050,0020) INVERSE.

    DX requires INVERSE alongside MONOCHROME1; that pair means one inversion, not two.
    """
    if g.photometric == "MONOCHROME1":
        return True
    return str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"


def _decode_gray_reduced(ds: Dataset, g: _Geometry, pixel_data: "bytes | memoryview", target: int) -> tuple[np.ndarray, int]:
    """Stored values of the chosen frame, reduced so the short side stays >= ``target``."""
    full_factor = _reduction_factor((g.rows, g.columns), target)
    ts = g.transfer_syntax
    if not ts.is_encapsulated and g.bits_allocated in (8, 16, 32):
        raw = _native_frame(pixel_data, g)
        return _area_reduce(_clean_bits(raw, g), full_factor), full_factor
    if ts in _JPEG2000_SYNTAXES and jpeg2000.available():
        return _jpeg2000_frame(pixel_data, g, full_factor, target)
    if ts == uids.JPEGBaseline8Bit and g.bits_allocated == 8:
        decoded = _jpeg_baseline_frame(pixel_data, g, full_factor, target)
        if decoded is not None:
            return decoded
    if ts in _JPEG_LS_SYNTAXES and g.bits_allocated in (8, 16):
        raw = _jpeg_ls_frame(pixel_data, g)
    elif ts in _JPEG_GDCM_SYNTAXES:
        raw = _gdcm_frame(pixel_data, g)
    elif ts in _JPEG2000_SYNTAXES or ts == uids.RLELossless or not ts.is_encapsulated:
        raw = pixel_array(ds, index=g.frame_index if g.frames > 1 else None)
    else:
        raw = _pydicom_or_unsupported(ds, g)
    raw = raw.reshape(raw.shape[-2:]) if raw.ndim > 2 else raw
    return _area_reduce(_clean_bits(raw, g), full_factor), full_factor


def _native_frame(pixel_data: "bytes | memoryview", g: _Geometry) -> np.ndarray:
    """A zero-copy view of one frame of uncompressed Pixel Data."""
    kind = "i" if g.signed else "u"
    order = ">" if g.transfer_syntax == uids.ExplicitVRBigEndian else "<"
    dtype = np.dtype(f"{order}{kind}{g.bits_allocated // 8}")
    frame_len = g.rows * g.columns
    flat = np.frombuffer(pixel_data, dtype=dtype, count=frame_len, offset=g.frame_index * frame_len * dtype.itemsize)
    arr = flat.reshape(g.rows, g.columns)
    return arr.astype(arr.dtype.newbyteorder("=")) if order == ">" else arr


def _frame_bytes(pixel_data: "bytes | memoryview", g: _Geometry) -> bytes:
    """The chosen frame of encapsulated Pixel Data, cut from the value :func:`decode_dicom` already
    holds (asking the dataset again would make pydicom re-read and copy the deferred value)."""
    buffer = pixel_data if isinstance(pixel_data, (bytes, bytearray)) else io.BytesIO(pixel_data)
    return get_frame(buffer, g.frame_index, number_of_frames=g.frames)


def _jpeg2000_frame(pixel_data: "bytes | memoryview", g: _Geometry, factor: int, target: int) -> tuple[np.ndarray, int]:
    """Decode at the coarsest resolution level whose short side is still >= ``target``."""
    stream = _frame_bytes(pixel_data, g)
    level = int(math.log2(factor)) if factor > 1 else 0
    levels = jpeg2000.decomposition_levels(stream)
    if levels is not None:
        level = min(level, levels)
    try:
        decoded = jpeg2000.decode(stream, level)
    except jpeg2000.Jpeg2000Error as first:
        repaired = jpeg2000.without_trailing_segments(stream)
        if repaired is None:
            raise first
        decoded = jpeg2000.decode(repaired, level)
    # Lower resolution levels ring slightly outside the sample range: clip to the range of the
    # code-stream's own precision (which some writers set above Bits Stored), don't wrap.
    arr, bits = decoded.pixels, max(1, min(decoded.precision, 31))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if decoded.signed else (0, (1 << bits) - 1)
    np.clip(arr, low, high, out=arr)
    rest = _reduction_factor(arr.shape, target)
    reduced = _area_reduce(arr.astype(np.float32) if rest > 1 else arr, rest)
    return reduced, (1 << level) * rest


def _jpeg_baseline_frame(
    pixel_data: "bytes | memoryview", g: _Geometry, factor: int, target: int
) -> tuple[np.ndarray, int] | None:
    """8-bit grayscale JPEG decoded with DCT scaling; None lets GDCM try instead."""
    scale = 1
    while scale < 8 and scale * 2 <= factor:
        scale *= 2
    buf = np.frombuffer(_frame_bytes(pixel_data, g), np.uint8)
    arr = cv2.imdecode(buf, _CV2_REDUCED_GRAYSCALE[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.shape != (math.ceil(g.rows / scale), math.ceil(g.columns / scale)):
        return None
    rest = _reduction_factor(arr.shape, target)
    return _area_reduce(arr, rest), scale * rest


def _jpeg_ls_frame(pixel_data: "bytes | memoryview", g: _Geometry) -> np.ndarray:
    """Decode one JPEG-LS frame with CharLS (pyjpegls): about 1.7x faster than GDCM, same pixels."""
    try:
        from jpeg_ls import decode_buffer
    except ImportError:  # optional speed-up: GDCM decodes JPEG-LS too
        return _gdcm_frame(pixel_data, g)
    frame = _frame_bytes(pixel_data, g)
    if not frame.rstrip(b"\0").endswith(b"\xff\xd9"):
        # no End Of Image marker: a truncated stream, on which CharLS spends seconds before
        # failing while GDCM fails (or salvages it) in a millisecond
        return _gdcm_frame(pixel_data, g)
    buffer, _info = decode_buffer(frame)
    dtype = np.dtype(f"<{'i' if g.signed else 'u'}{2 if g.bits_allocated > 8 else 1}")
    expected = g.rows * g.columns * dtype.itemsize
    if len(buffer) < expected:
        raise ValueError(f"CharLS returned {len(buffer)} bytes for a {g.rows}x{g.columns} frame")
    return np.frombuffer(buffer, dtype=dtype, count=g.rows * g.columns).reshape(g.rows, g.columns)


def _gdcm_frame(pixel_data: "bytes | memoryview", g: _Geometry) -> np.ndarray:
    """Decode one JPEG / JPEG-LS frame with GDCM (including 12-bit JPEG Extended)."""
    import gdcm  # imported lazily: loading GDCM costs ~100 ms

    gdcm.Trace.WarningOff()  # libjpeg retries 12-bit data after an 8-bit attempt and says so on stderr
    gdcm.Trace.ErrorOff()  # failures are reported through the returned buffer instead
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(_frame_bytes(pixel_data, g))
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((g.columns, g.rows, 1))
    image.SetDataElement(element)
    pi = gdcm.PhotometricInterpretation.GetPIType(g.photometric)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(pi))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(g.transfer_syntax))))
    container = 8 if g.bits_stored <= 8 else 16
    image.SetPixelFormat(gdcm.PixelFormat(1, container, g.bits_stored, g.bits_stored - 1, int(g.signed)))
    buffer = image.GetBuffer()
    if buffer is None:
        raise ValueError(f"GDCM could not decode the {g.transfer_syntax.name} frame")
    data = buffer.encode("utf-8", "surrogateescape")
    dtype = np.dtype(f"<{'i' if g.signed else 'u'}{container // 8}")
    if len(data) < g.rows * g.columns * dtype.itemsize:
        raise ValueError(f"GDCM returned {len(data)} bytes for a {g.rows}x{g.columns} frame")
    return np.frombuffer(data, dtype, count=g.rows * g.columns).reshape(g.rows, g.columns)


def _pydicom_or_unsupported(ds: Dataset, g: _Geometry) -> np.ndarray:
    try:
        return pixel_array(ds, index=g.frame_index if g.frames > 1 else None)
    except (NotImplementedError, RuntimeError) as exc:
        if "No pixel data decoders" in str(exc) or "not supported" in str(exc).lower() or isinstance(exc, NotImplementedError):
            raise NotClassifiable(
                Reason.UNSUPPORTED_TRANSFER_SYNTAX,
                f"Transfer Syntax UID (0002,0010) {g.transfer_syntax} ({g.transfer_syntax.name}) has no decoder here",
            ) from exc
        raise


def _decode_colour(ds: Dataset, g: _Geometry, target: int) -> tuple[np.ndarray, int]:
    """Colour and palette images: decode with pydicom, reduce, then take the luma (ITU-R BT.601)."""
    arr = _pydicom_or_unsupported(ds, g)
    if g.photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        high = float(arr.max()) or 1.0
    else:
        high = float((1 << g.bits_stored) - 1)
    if arr.ndim == 2:  # some decoders already return one channel
        rgb = arr[..., None].repeat(3, axis=-1)
    else:
        rgb = arr
    factor = _reduction_factor(rgb.shape[:2], target)
    rgb = _area_reduce(rgb.astype(np.float32), factor)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return _to_uint8(np.clip(luma / high, 0.0, 1.0)), factor


# --------------------------------------------------------------------------- pixel value transforms


def _stored_range(g: _Geometry) -> tuple[int, int]:
    if g.signed:
        return -(1 << (g.bits_stored - 1)), (1 << (g.bits_stored - 1)) - 1
    return 0, (1 << g.bits_stored) - 1


def _clean_bits(arr: np.ndarray, g: _Geometry) -> np.ndarray:
    """Mask the unused high bits (Bits Stored < Bits Allocated), sign-extending signed data.

    Old files keep overlays in those bits. Checked with a cheap min/max first,
    since most files leave them clear.
    """
    if g.bits_stored >= arr.dtype.itemsize * 8 or arr.dtype.kind not in "iu":
        return arr
    low, high = _stored_range(g)
    if arr.min() >= low and arr.max() <= high:
        return arr
    shift = arr.dtype.itemsize * 8 - g.bits_stored
    if g.signed:
        signed = arr.astype(arr.dtype.str.replace("u", "i"), copy=False)
        return (signed << shift) >> shift
    return arr & np.array(high, dtype=arr.dtype)


def _has_modality_transform(ds: Dataset) -> bool:
    if "ModalityLUTSequence" in ds:
        return True
    slope = ds.get("RescaleSlope", 1)
    intercept = ds.get("RescaleIntercept", 0)
    try:
        return float(slope) != 1.0 or float(intercept) != 0.0
    except (TypeError, ValueError):
        return False


def _first(value: object) -> float | None:
    """First value of a possibly multi-valued number, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _apply_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str]:
    """Map modality values to [0, 1] with the VOI LUT, else the first window, else robust min/max.

    A window that lies entirely outside the 0.5-99.5 percentile range of the
    pixel values is ignored in favour of min/max.
    """
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        if "LUTData" in item and "LUTDescriptor" in item:
            out = apply_voi(values, ds, index=0).astype(np.float32)
            # The output range is 0 .. 2**bits - 1 (LUT Descriptor, third value); some writers
            # declare fewer bits than their data use, so the data's own maximum can widen it.
            lut = item.LUTData
            lut_values = np.frombuffer(lut, "<u2") if isinstance(lut, bytes) else np.asarray(lut)
            bits = int(item.LUTDescriptor[2]) if len(item.LUTDescriptor) > 2 else 16
            high = max(float((1 << bits) - 1), float(lut_values.max()))
            if high > 0:
                return np.clip(out / high, 0.0, 1.0), "VOI LUT"
    center = _first(ds.get("WindowCenter"))
    width = _first(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    x = values.astype(np.float32, copy=False)
    sample = x[::2, ::2] if x.size > 100_000 else x  # percentiles of a 1/4 sample are as robust, 4x cheaper
    low, high = np.percentile(sample, (0.5, 99.5))
    if high <= low:
        low, high = float(x.min()), float(x.max())
    window_ok = center is not None and width is not None and width > (1.0 if function == "LINEAR" else 0.0)
    if window_ok and (center + width / 2 < low or center - width / 2 > high):
        # A window entirely outside the pixel values (a wrong or stale header) would give a blank image.
        window_ok = False
    if window_ok:
        if function == "SIGMOID":
            out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
        elif function == "LINEAR_EXACT":
            out = (x - center) / width + 0.5
        else:  # LINEAR, DICOM PS3.3 C.11.2.1.2.1
            out = (x - (center - 0.5)) / (width - 1.0) + 0.5
        return np.clip(out, 0.0, 1.0), f"window {center:g}/{width:g}"
    if high <= low:
        return np.zeros_like(x), "flat"
    return np.clip((x - low) / (high - low), 0.0, 1.0), "min-max"


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return (unit * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- resizing


def _reduction_factor(shape: tuple[int, ...], target: int) -> int:
    """Largest integer factor that keeps the short side >= ``target`` (1 for small images)."""
    return max(1, min(int(shape[0]), int(shape[1])) // max(1, target))


def _area_reduce(arr: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks, keeping an integer image's type (rounded).

    Rows are summed first, then columns, in integers: on a 2500 x 3000 16-bit image this takes
    3 ms where OpenCV's INTER_AREA took 14 ms (``make bench``: ``classify_per_s``). The last
    rows and columns that do not fill a whole block (fewer than ``factor``) are left out.
    """
    if factor <= 1:
        return arr
    h, w = arr.shape[:2]
    h2, w2 = h // factor, w // factor
    if h2 == 0 or w2 == 0:  # smaller than one block: OpenCV averages what there is
        src = arr if arr.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64) else arr.astype(np.float32)
        return cv2.resize(src, (max(1, w2), max(1, h2)), interpolation=cv2.INTER_AREA)
    rest = arr.shape[2:]
    blocks = arr[: h2 * factor, : w2 * factor]
    integer = arr.dtype.kind in "iu"
    n = factor * factor
    if integer:
        fits_int32 = arr.dtype.itemsize <= 2 and n * 65536 < 2**31
        accumulator: type = np.int32 if fits_int32 else np.int64
    else:
        accumulator = np.float64
    rows = blocks.reshape(h2, factor, w2 * factor, *rest).sum(axis=1, dtype=accumulator)
    sums = rows.reshape(h2, w2, factor, *rest).sum(axis=2)
    if integer:
        return ((sums + n // 2) // n).astype(arr.dtype)
    return (sums / n).astype(arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32)


# --------------------------------------------------------------------------- small helpers


def _file_size(path: str | os.PathLike) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, f"cannot read the file: {exc.strerror or exc}") from exc


def _read_head(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)
    except IsADirectoryError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, "this is a folder, not a file") from exc
    except OSError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, f"cannot read the file: {exc.strerror or exc}") from exc


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, "this is a folder, not a file") from exc
    except OSError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, f"cannot read the file: {exc.strerror or exc}") from exc


def _looks_like_raw_dataset(data: bytes) -> bool:
    """A file without preamble/meta should start with a little- or big-endian group 0x0002..0x0028 tag."""
    if len(data) < 8:
        return False
    group_le = int.from_bytes(data[0:2], "little")
    group_be = int.from_bytes(data[0:2], "big")
    return 0x0002 <= group_le <= 0x0028 or 0x0002 <= group_be <= 0x0028


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first SOFn marker, without decoding."""
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None else str(value).strip()


def _positive_int(ds: Dataset, keyword: str, tag: str) -> int:
    name = _spaced(keyword)
    try:
        value = ds.get(keyword)
        number = int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{name} {tag} is missing or not a number")
    if number <= 0:
        raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{name} {tag} is {number}, expected a positive number")
    return number


def _optional_int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NotClassifiable(Reason.INVALID_ATTRIBUTE, f"{_spaced(keyword)} is {value!r}, not a number") from None


def _spaced(keyword: str) -> str:
    """``BitsAllocated`` -> ``Bits Allocated`` (DICOM attribute names as people read them)."""
    out = "".join(" " + c if c.isupper() else c for c in keyword).strip()
    return out.replace(" Per ", " per ").replace(" Of ", " of ")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
