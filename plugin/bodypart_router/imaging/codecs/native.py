"""Uncompressed Pixel Data (implicit/explicit VR little endian, big endian, deflate once inflated)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pydicom.uid as uids

if TYPE_CHECKING:
    from ..geometry import Geometry


def native_frame(pixel_data: "bytes | memoryview", g: Geometry) -> np.ndarray:
    """A zero-copy view of one frame of uncompressed Pixel Data."""
    kind = "i" if g.signed else "u"
    order = ">" if g.transfer_syntax == uids.ExplicitVRBigEndian else "<"
    dtype = np.dtype(f"{order}{kind}{g.bits_allocated // 8}")
    frame_len = g.rows * g.columns
    flat = np.frombuffer(pixel_data, dtype=dtype, count=frame_len, offset=g.frame_index * frame_len * dtype.itemsize)
    arr = flat.reshape(g.rows, g.columns)
    return arr.astype(arr.dtype.newbyteorder("=")) if order == ">" else arr
