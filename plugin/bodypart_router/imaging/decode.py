"""Turn a DICOM file (or a PNG/JPEG) into a small, display-ready 8-bit grayscale image.

The model needs 224x224 pixels; a CR is 2500x3000 16-bit. Decoding and
windowing the full image costs far more than the network, so the order of work
here is chosen for speed without changing the picture:

1. Cheap checks on the header, *before* any pixel is decoded: an X-ray SOP
   class and modality (:class:`~bodypart_router.imaging.xray_policy.XrayPolicy`), sane
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

Which decoder handles which transfer syntax, and why, is told in :mod:`.codecs`.

Every failure becomes :class:`~bodypart_router.errors.NotClassifiable` with a
:class:`~bodypart_router.errors.Reason` and a message naming the DICOM tag.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np
import pydicom
import pydicom.uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut

from ..errors import NotClassifiable, Reason
from .attributes import attribute
from .codec_headers import check_codec_header, check_inflated_size, deflated_dataset_offset
from .codecs import decode_colour, decode_gray_reduced
from .codecs.jpeg import CV2_REDUCED_GRAYSCALE
from .files import file_size, jpeg_size, looks_like_raw_dataset, png_size, read_bytes, read_head, sniff
from .geometry import MAX_FRAME_PIXELS, Geometry, text_of
from .preprocess import INPUT_SIZE
from .resample import area_reduce, reduction_factor
from .voi import apply_voi_or_window, displays_inverted, has_modality_transform, to_uint8
from .xray_policy import XrayPolicy

LOGGER = logging.getLogger(__name__)

#: Shortest side the decoded image is reduced to (at least): the model input side. Reductions
#: are powers of two (integer block means, JPEG 2000 resolution levels, JPEG DCT scaling), so
#: the result lies between 1x and 2x the model input and the final area resample is cheap.
TARGET_SHORT_SIDE = INPUT_SIZE

#: Largest file read at all.
MAX_FILE_BYTES = 2 * 1024**3
#: Largest PNG/JPEG (width x height) accepted.
MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS

DicomSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Dataset]
_DEFAULT_POLICY = XrayPolicy()


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
            policy.check(text_of(ds, "Modality"), text_of(ds, "SOPClassUID"))
        pixel_data = _pixel_data(ds, backing)
        geometry = Geometry.of(ds, pixel_data)
        image, reduction, voi = _decode_and_render(ds, geometry, pixel_data, target_short_side)
    except NotClassifiable:
        raise
    except MemoryError as exc:
        raise NotClassifiable(Reason.IMAGE_TOO_LARGE, f"out of memory while decoding {attribute('PixelData')}: {exc}") from exc
    except Exception as exc:  # a decoder's error on bad data, or a bug here: a reason, and the traceback in the log
        detail = f"{attribute('PixelData')} could not be decoded: {_short(exc)}"
        LOGGER.exception(f"{detail}; it gets failed:{Reason.UNDECODABLE_PIXELS.value}")
        raise NotClassifiable(Reason.UNDECODABLE_PIXELS, detail) from exc
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
    data = source if isinstance(source, (bytes, bytearray)) else read_bytes(source)
    kind = sniff(data[:132])
    if kind not in ("png", "jpeg"):
        raise NotClassifiable(Reason.NOT_DICOM, "neither DICOM nor a PNG/JPEG image")
    size = png_size(data) if kind == "png" else jpeg_size(data)
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
    image = cv2.imdecode(buf, CV2_REDUCED_GRAYSCALE[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise NotClassifiable(Reason.UNDECODABLE_PIXELS, f"the {kind.upper()} data could not be decoded")
    factor = reduction_factor(image.shape, TARGET_SHORT_SIDE)
    image = area_reduce(image, factor)
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
    if sniff(read_head(path)) in ("png", "jpeg"):
        return decode_image_file(path)
    return decode_dicom(path, policy=policy)


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
        size = file_size(source)
        if size > MAX_FILE_BYTES:
            raise NotClassifiable(Reason.IMAGE_TOO_LARGE, f"the file has {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        data = read_bytes(source)
    head = data[:132]
    fileobj = io.BytesIO(data)  # shares ``data``: no copy
    if not data:
        raise NotClassifiable(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    if head[128:132] != b"DICM" and not looks_like_raw_dataset(head):
        raise NotClassifiable(Reason.NOT_DICOM, "no DICM prefix at byte 128 and no DICOM elements at the start")
    deflated_at = deflated_dataset_offset(data)
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
        return ds, None  # offsets refer to the inflated stream, not to the file
    return ds, data


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
        header = pydicom.dcmread(fileobj, force=True, stop_before_pixels=True)  # type: ignore[arg-type]  # a path or a file
    except Exception:
        header = None
    if header is None or len(header) == 0 or "Rows" not in header:
        error = NotClassifiable(Reason.NOT_DICOM, f"not a readable DICOM file: {_short(exc)}")
    else:
        if policy is not None:  # a truncated CT is still a CT: skip it for that reason first
            policy.check(text_of(header, "Modality"), text_of(header, "SOPClassUID"))
        error = NotClassifiable(Reason.INCONSISTENT_PIXELS,
                                f"the header reads but {attribute('PixelData')} is truncated or malformed: {_short(exc)}")
    LOGGER.info(f"pydicom could not read the file; it gets {error.state}", exc_info=exc)
    raise error from exc


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
    return memoryview(backing)[tell : tell + int(element.length)]  # type: ignore[attr-defined]  # deferred: a RawDataElement


def _decode_and_render(ds: Dataset, g: Geometry, pixel_data: "bytes | memoryview", target: int) -> tuple[np.ndarray, int, str]:
    """Decode the chosen frame at reduced size and map it to display-ready uint8."""
    check_codec_header(pixel_data, g)
    if g.samples == 3 or g.photometric == "PALETTE COLOR":
        gray, reduction = decode_colour(ds, g, target)
        return gray, reduction, "colour to luma"
    raw, reduction = decode_gray_reduced(ds, g, pixel_data, target)
    values = apply_modality_lut(raw, ds) if has_modality_transform(ds) else raw
    unit, voi = apply_voi_or_window(np.asarray(values), ds)
    if displays_inverted(ds, g):
        unit = 1.0 - unit
    return to_uint8(unit), reduction, voi


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
