"""File helpers: read a file's bytes or head with a clear reason, and tell DICOM, PNG and JPEG apart."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import NotClassifiable, Reason


def sniff(head: bytes) -> str:
    """Guess a file's kind from its first 132 bytes: "dicom", "png", "jpeg" or "unknown".

    "unknown" may still be a DICOM file without file meta (ACR-NEMA style);
    :func:`~bodypart_router.imaging.decode.decode_dicom` decides that.
    """
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return "unknown"


def file_size(path: str | os.PathLike) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, f"cannot read the file: {exc.strerror or exc}") from exc


def read_head(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)
    except IsADirectoryError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, "this is a folder, not a file") from exc
    except OSError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, f"cannot read the file: {exc.strerror or exc}") from exc


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, "this is a folder, not a file") from exc
    except OSError as exc:
        raise NotClassifiable(Reason.NOT_DICOM, f"cannot read the file: {exc.strerror or exc}") from exc


def looks_like_raw_dataset(data: bytes) -> bool:
    """A file without preamble/meta should start with a little- or big-endian group 0x0002..0x0028 tag."""
    if len(data) < 8:
        return False
    group_le = int.from_bytes(data[0:2], "little")
    group_be = int.from_bytes(data[0:2], "big")
    return 0x0002 <= group_le <= 0x0028 or 0x0002 <= group_be <= 0x0028


def png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int] | None:
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
