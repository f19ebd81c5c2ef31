"""JPEG-LS (lossless and near-lossless) with CharLS, GDCM as the fallback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .encapsulated import frame_bytes
from .jpeg import gdcm_frame

if TYPE_CHECKING:
    from ..geometry import Geometry


def jpeg_ls_frame(pixel_data: "bytes | memoryview", g: Geometry) -> np.ndarray:
    """Decode one JPEG-LS frame with CharLS (pyjpegls): about 1.7x faster than GDCM, same pixels."""
    try:
        from jpeg_ls import decode_buffer
    except ImportError:  # optional speed-up: GDCM decodes JPEG-LS too
        return gdcm_frame(pixel_data, g)
    frame = frame_bytes(pixel_data, g)
    if not frame.rstrip(b"\0").endswith(b"\xff\xd9"):
        # no End Of Image marker: a truncated stream, on which CharLS spends seconds before
        # failing while GDCM fails (or salvages it) in a millisecond
        return gdcm_frame(pixel_data, g)
    buffer, _info = decode_buffer(frame)
    dtype = np.dtype(f"<{'i' if g.signed else 'u'}{2 if g.bits_allocated > 8 else 1}")
    expected = g.rows * g.columns * dtype.itemsize
    if len(buffer) < expected:
        raise ValueError(f"CharLS returned {len(buffer)} bytes for a {g.rows}x{g.columns} frame")
    return np.frombuffer(buffer, dtype=dtype, count=g.rows * g.columns).reshape(g.rows, g.columns)
