"""From stored values to a display-ready image: unused bits, Modality LUT, VOI LUT or window, inversion.

The float work runs on the already reduced array (see :mod:`.decode`). pydicom applies the
Modality LUT, the VOI LUT and the window; this module chooses between them and scales to [0, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_voi, apply_windowing

if TYPE_CHECKING:
    from .geometry import Geometry


def stored_range(g: Geometry) -> tuple[int, int]:
    if g.signed:
        return -(1 << (g.bits_stored - 1)), (1 << (g.bits_stored - 1)) - 1
    return 0, (1 << g.bits_stored) - 1


def clean_bits(arr: np.ndarray, g: Geometry) -> np.ndarray:
    """Mask the unused high bits (Bits Stored < Bits Allocated), sign-extending signed data.

    Old files keep overlays in those bits. Checked with a cheap min/max first,
    since most files leave them clear.
    """
    if g.bits_stored >= arr.dtype.itemsize * 8 or arr.dtype.kind not in "iu":
        return arr
    low, high = stored_range(g)
    if arr.min() >= low and arr.max() <= high:
        return arr
    shift = arr.dtype.itemsize * 8 - g.bits_stored
    if g.signed:
        signed = arr.astype(arr.dtype.str.replace("u", "i"), copy=False)
        return (signed << shift) >> shift
    return arr & np.array(high, dtype=arr.dtype)


def has_modality_transform(ds: Dataset) -> bool:
    if "ModalityLUTSequence" in ds:
        return True
    slope = ds.get("RescaleSlope", 1)
    intercept = ds.get("RescaleIntercept", 0)
    try:
        return float(slope) != 1.0 or float(intercept) != 0.0
    except (TypeError, ValueError):
        return False


def first_number(value: object) -> float | None:
    """First value of a possibly multi-valued number, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None and value != "" else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def apply_voi_or_window(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, str]:
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
    center = first_number(ds.get("WindowCenter"))
    width = first_number(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in WINDOW_FUNCTIONS:  # PS3.3 C.11.2.1.2: LINEAR unless one of the others
        function = "LINEAR"
    x = values.astype(np.float32, copy=False)
    sample = x[::2, ::2] if x.size > 100_000 else x  # percentiles of a 1/4 sample are as robust, 4x cheaper
    low, high = np.percentile(sample, (0.5, 99.5))
    if high <= low:
        low, high = float(x.min()), float(x.max())
    if (center is not None and width is not None and width > (1.0 if function == "LINEAR" else 0.0)
            # a window entirely outside the pixel values (a wrong or stale header) would give a blank image
            and not (center + width / 2 < low or center - width / 2 > high)):
        return window(x, center, width, function), f"window {center:g}/{width:g}"
    if high <= low:
        return np.zeros_like(x), "flat"
    return np.clip((x - low) / (high - low), 0.0, 1.0), "min-max"


#: The VOI LUT functions of PS3.3 C.11.2.1.2.
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
#: Bits of the output range handed to pydicom's windowing: 0 .. 2**16 - 1.
_WINDOW_BITS = 16


def window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's VOI window (``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``) scaled to [0, 1].

    pydicom maps a window onto the output range it reads from the dataset (Bits Stored, Pixel
    Representation, rescale); it is handed the one window chosen here on a fixed unsigned 16-bit
    range instead, so that the scale does not depend on a broken file's attributes."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = _WINDOW_BITS
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    out = apply_windowing(values, voi) / float((1 << _WINDOW_BITS) - 1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    return (unit * 255.0 + 0.5).astype(np.uint8)


def displays_inverted(ds: Dataset, g: Geometry) -> bool:
    """MONOCHROME1 (0 = white) or a MONOCHROME2 with Presentation LUT Shape (2050,0020) INVERSE.

    DX requires INVERSE alongside MONOCHROME1; that pair means one inversion, not two.
    """
    if g.photometric == "MONOCHROME1":
        return True
    return str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
