"""JPEG: baseline 8-bit grayscale with OpenCV's DCT scaling, the other processes with GDCM."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..resample import area_reduce, reduction_factor
from .encapsulated import frame_bytes

if TYPE_CHECKING:
    from ..geometry import Geometry

CV2_REDUCED_GRAYSCALE = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                          4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def baseline_frame(
    pixel_data: "bytes | memoryview", g: Geometry, factor: int, target: int
) -> tuple[np.ndarray, int] | None:
    """8-bit grayscale JPEG decoded with DCT scaling; None lets GDCM try instead."""
    scale = 1
    while scale < 8 and scale * 2 <= factor:
        scale *= 2
    buf = np.frombuffer(frame_bytes(pixel_data, g), np.uint8)
    arr = cv2.imdecode(buf, CV2_REDUCED_GRAYSCALE[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.shape != (math.ceil(g.rows / scale), math.ceil(g.columns / scale)):
        return None
    rest = reduction_factor(arr.shape, target)
    return area_reduce(arr, rest), scale * rest


def gdcm_frame(pixel_data: "bytes | memoryview", g: Geometry) -> np.ndarray:
    """Decode one JPEG / JPEG-LS frame with GDCM (including 12-bit JPEG Extended)."""
    import gdcm  # imported lazily: loading GDCM costs ~100 ms

    gdcm.Trace.WarningOff()  # libjpeg retries 12-bit data after an 8-bit attempt and says so on stderr
    gdcm.Trace.ErrorOff()  # failures are reported through the returned buffer instead
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(frame_bytes(pixel_data, g))
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
