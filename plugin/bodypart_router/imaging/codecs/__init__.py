"""Pixel Data decoders, one module per codec family, and the choice between them.

Decoders, and why (all permissively licensed; no GPL code is loaded):

- :mod:`.native`: uncompressed (implicit/explicit VR, big endian; deflate is inflated by
  pydicom while parsing): a NumPy view of the Pixel Data bytes, without copies.
- :mod:`.jpeg2000`: JPEG 2000 (lossless and lossy, and HTJ2K): OpenJPEG (BSD-2-Clause) as
  bundled by pylibjpeg-openjpeg (MIT), called through ctypes because that is the only way to
  ask for a reduced resolution level, which makes a 2500x2048 decode ~15x cheaper.
- :mod:`.jpeg`: JPEG baseline 8-bit grayscale with OpenCV's libjpeg-turbo (Apache-2.0 /
  IJG-BSD) and DCT-domain scaling (1/2, 1/4, 1/8) during decode; the other JPEG processes
  (extended 12-bit, lossless) with GDCM through python-gdcm (BSD-3-Clause), used directly,
  frame by frame, because pydicom refuses to hand 12-bit JPEG Extended to it although GDCM
  decodes it.
- :mod:`.jpeg_ls`: JPEG-LS with CharLS (pyjpegls), GDCM as the fallback.
- :mod:`.pydicom_codecs`: RLE Lossless and anything else pydicom has a decoder for (colour
  images, palettes, unusual bit depths), through :func:`pydicom.pixels.pixel_array`.

pylibjpeg-libjpeg is deliberately not used: it is GPL-3.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pydicom.uid as uids
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array

from ..resample import area_reduce, reduction_factor
from ..voi import clean_bits, to_uint8
from . import jpeg2000
from .jpeg import baseline_frame, gdcm_frame
from .jpeg_ls import jpeg_ls_frame
from .native import native_frame
from .pydicom_codecs import pydicom_frame_or_unsupported

if TYPE_CHECKING:
    from ..geometry import Geometry


JPEG_GDCM_SYNTAXES = {
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLosslessSV1,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
}

JPEG_LS_SYNTAXES = {uids.JPEGLSLossless, uids.JPEGLSNearLossless}

JPEG2000_SYNTAXES = {
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.HTJ2KLossless,
    uids.HTJ2KLosslessRPCL,
    uids.HTJ2K,
}

NATIVE_SYNTAXES = {
    uids.ImplicitVRLittleEndian,
    uids.ExplicitVRLittleEndian,
    uids.ExplicitVRBigEndian,
    uids.DeflatedExplicitVRLittleEndian,
}

KNOWN_SYNTAXES = NATIVE_SYNTAXES | JPEG_GDCM_SYNTAXES | JPEG2000_SYNTAXES | {uids.RLELossless}


def decode_gray_reduced(ds: Dataset, g: Geometry, pixel_data: "bytes | memoryview", target: int) -> tuple[np.ndarray, int]:
    """Stored values of the chosen frame, reduced so the short side stays >= ``target``."""
    full_factor = reduction_factor((g.rows, g.columns), target)
    ts = g.transfer_syntax
    if not ts.is_encapsulated and g.bits_allocated in (8, 16, 32):
        raw = native_frame(pixel_data, g)
        return area_reduce(clean_bits(raw, g), full_factor), full_factor
    if ts in JPEG2000_SYNTAXES and jpeg2000.available():
        return jpeg2000.jpeg2000_frame(pixel_data, g, full_factor, target)
    if ts == uids.JPEGBaseline8Bit and g.bits_allocated == 8:
        decoded = baseline_frame(pixel_data, g, full_factor, target)
        if decoded is not None:
            return decoded
    if ts in JPEG_LS_SYNTAXES and g.bits_allocated in (8, 16):
        raw = jpeg_ls_frame(pixel_data, g)
    elif ts in JPEG_GDCM_SYNTAXES:
        raw = gdcm_frame(pixel_data, g)
    elif ts in JPEG2000_SYNTAXES or ts == uids.RLELossless or not ts.is_encapsulated:
        raw = pixel_array(ds, index=g.frame_index if g.frames > 1 else None)
    else:
        raw = pydicom_frame_or_unsupported(ds, g)
    raw = raw.reshape(raw.shape[-2:]) if raw.ndim > 2 else raw
    return area_reduce(clean_bits(raw, g), full_factor), full_factor


def decode_colour(ds: Dataset, g: Geometry, target: int) -> tuple[np.ndarray, int]:
    """Colour and palette images: decode with pydicom, reduce, then take the luma (ITU-R BT.601)."""
    arr = pydicom_frame_or_unsupported(ds, g)
    if g.photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        high = float(arr.max()) or 1.0
    else:
        high = float((1 << g.bits_stored) - 1)
    if arr.ndim == 2:  # some decoders already return one channel
        rgb = arr[..., None].repeat(3, axis=-1)
    else:
        rgb = arr
    factor = reduction_factor(rgb.shape[:2], target)
    rgb = area_reduce(rgb.astype(np.float32), factor)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return to_uint8(np.clip(luma / high, 0.0, 1.0)), factor
