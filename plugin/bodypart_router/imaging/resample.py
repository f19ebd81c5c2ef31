"""Integer area reduction: the cheap, exact way down to about twice the model's input size."""

from __future__ import annotations

import cv2
import numpy as np


def reduction_factor(shape: tuple[int, ...], target: int) -> int:
    """Largest integer factor that keeps the short side >= ``target`` (1 for small images)."""
    return max(1, min(int(shape[0]), int(shape[1])) // max(1, target))


def area_reduce(arr: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks, keeping an integer image's type (rounded).

    Rows are summed first, then columns, in integers: several times faster than OpenCV's
    INTER_AREA on a full-size radiograph (``docs/decisions.md``). The last rows and columns that
    do not fill a whole block (fewer than ``factor``) are left out.
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
