"""One frame of encapsulated (compressed) Pixel Data."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from pydicom.encaps import get_frame

if TYPE_CHECKING:
    from ..geometry import Geometry


def frame_bytes(pixel_data: "bytes | memoryview", g: Geometry) -> bytes:
    """The chosen frame of encapsulated Pixel Data, cut from the value :func:`decode_dicom` already
    holds (asking the dataset again would make pydicom re-read and copy the deferred value)."""
    buffer = pixel_data if isinstance(pixel_data, (bytes, bytearray)) else io.BytesIO(pixel_data)
    return get_frame(buffer, g.frame_index, number_of_frames=g.frames)
