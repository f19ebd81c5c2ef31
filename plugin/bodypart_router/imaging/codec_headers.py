"""Image sizes declared inside compressed pixel data, read before any decoder sees the data.

Why: a decoder allocates what its own header declares, not what the DICOM header says. A
72 KB JPEG 2000 whose SIZ marker declares 16384 x 16384 inside a 256 x 256 DICOM was decoded
to 2.3 GB; 65535 x 65535 reached 7.9 GB before the OOM killer; a JPEG-LS frame declaring
30000 x 30000 reached 3.6 GB. So the frame's own header is parsed here (a few dozen bytes)
and compared with Rows and Columns first, and a deflated dataset is inflated with a cap.
This module never imports ``orthanc``.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

import pydicom.uid as uids

from ..errors import NotClassifiable, Reason
from .attributes import attribute
from .codecs import JPEG2000_SYNTAXES, JPEG_GDCM_SYNTAXES, JPEG_LS_SYNTAXES
from .codecs.encapsulated import frame_bytes

if TYPE_CHECKING:
    from .geometry import Geometry

#: Largest inflated size of a deflated dataset (a 100-megapixel 16-bit frame is 200 MB).
MAX_INFLATED_BYTES = 256 * 1024 * 1024
#: Inflate in pieces this large, so that checking the size never holds more than one piece.
_INFLATE_CHUNK = 16 * 1024 * 1024

#: JPEG start-of-frame markers (SOF0-SOF15 except DHT C4, JPG C8, DAC CC); F7 is JPEG-LS's SOF55.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
#: Markers without a length field.
_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9}


def jpeg2000_size(stream: bytes) -> tuple[int, int] | None:
    """``(columns, rows)`` from the SIZ marker of a J2K code-stream (bare or in a JP2 file), or None."""
    start = 0 if stream[:4] == b"\xff\x4f\xff\x51" else stream.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(stream) < start + 42:
        return None
    # SOC, SIZ marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz
    lsiz = int.from_bytes(stream[start + 4:start + 6], "big")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", stream[start + 8:start + 24])
    csiz = int.from_bytes(stream[start + 40:start + 42], "big")
    if not 1 <= csiz <= 16384 or lsiz != 38 + 3 * csiz or xosiz >= xsiz or yosiz >= ysiz:
        return None  # not a SIZ segment: garbage
    return xsiz - xosiz, ysiz - yosiz


def jpeg_size(stream: bytes) -> tuple[int, int] | None:
    """``(columns, rows)`` from the start-of-frame segment of a JPEG or JPEG-LS stream, or None."""
    if stream[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(stream):
        if stream[i] != 0xFF:
            return None
        marker = stream[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        length = int.from_bytes(stream[i + 2:i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 10 > len(stream) or length != 8 + 3 * stream[i + 9]:
                return None  # not a frame header: garbage
            rows, columns = struct.unpack(">HH", stream[i + 5:i + 9])
            return columns, rows
        if marker == 0xDA or length < 2:  # start of scan before any frame header: malformed
            return None
        i += 2 + length
    return None


def check_frame_size(stream: bytes, kind: str, rows: int, columns: int) -> None:
    """Refuse a frame whose own header declares another size than Rows x Columns (or none at all)."""
    size = jpeg2000_size(stream) if kind == "JPEG 2000" else jpeg_size(stream)
    if size is None:
        raise NotClassifiable(Reason.UNDECODABLE_PIXELS, f"the {kind} frame in {attribute('PixelData')} has no readable image size in its header")
    if size != (columns, rows):
        raise NotClassifiable(
            Reason.INCONSISTENT_PIXELS,
            f"the {kind} frame in {attribute('PixelData')} declares {size[0]} x {size[1]} pixels but "
            f"{attribute('Columns')} x {attribute('Rows')} are {columns} x {rows}; not decoded",
        )


def check_inflated_size(deflated: bytes | memoryview, limit: int = MAX_INFLATED_BYTES) -> None:
    """Refuse a deflated dataset that inflates to more than ``limit`` bytes, holding one piece at a time."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    data = bytes(deflated)
    while data:
        try:
            piece = inflater.decompress(data, _INFLATE_CHUNK)
        except zlib.error:
            return  # corrupt: the reader fails at the same place, having inflated no more than we did
        total += len(piece)
        if total > limit:
            raise NotClassifiable(Reason.IMAGE_TOO_LARGE,
                                  f"the deflated dataset inflates to more than {limit // (1024 * 1024)} MiB; not read")
        data = inflater.unconsumed_tail
        if not piece and not data:
            break
    try:
        total += len(inflater.flush())
    except zlib.error:
        return
    if total > limit:
        raise NotClassifiable(Reason.IMAGE_TOO_LARGE,
                              f"the deflated dataset inflates to more than {limit // (1024 * 1024)} MiB; not read")


def deflated_dataset_offset(data: bytes) -> int | None:
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


def check_codec_header(pixel_data: "bytes | memoryview", g: Geometry) -> None:
    """A compressed frame must declare Rows x Columns in its own header before a decoder sees it
    (decoders allocate what their header says: see above)."""
    ts = g.transfer_syntax
    kind = ("JPEG 2000" if ts in JPEG2000_SYNTAXES else "JPEG-LS" if ts in JPEG_LS_SYNTAXES
            else "JPEG" if ts in JPEG_GDCM_SYNTAXES or ts == uids.JPEGBaseline8Bit else None)
    if kind is not None:
        check_frame_size(frame_bytes(pixel_data, g), kind, g.rows, g.columns)
