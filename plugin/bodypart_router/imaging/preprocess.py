"""The one preprocessing function shared by training and inference.

Training (``training/``) and serving (:mod:`bodypart_router.inference.classifier`) both call
:func:`to_model_input` on a display-ready 8-bit grayscale image, so the model
sees at inference exactly what it saw in training.

Every image is resized to ``INPUT_SIZE`` x ``INPUT_SIZE`` *without* keeping its
aspect ratio. The pediatric training images were squashed to 224x224 by their
source; squashing everything the same way stops "square image" from becoming a
pediatric cue. Contrast is stretched between robust percentiles so that DICOM
windowing and JPEG renderings from different sources land in the same range.
ImageNet normalisation and the gray->RGB expansion live inside the ONNX graph.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Side of the square model input, in pixels.
INPUT_SIZE = 224
#: Percentiles used for the contrast stretch.
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


def resize_square(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Area-resample a 2-D image to ``size`` x ``size`` (aspect ratio deliberately not kept)."""
    if image.shape == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def to_model_input(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Turn a 2-D uint8 grayscale image (0 = black) into a ``(1, size, size)`` float32 array in [0, 1].

    Args:
        image: display-ready grayscale image, any size, dtype uint8, bright = dense
            (bone white), as a radiologist would see it.
        size: model input side.

    Returns:
        ``float32`` array of shape ``(1, size, size)``, contrast-stretched to [0, 1].
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    small = resize_square(image, size)
    lo, hi = np.percentile(small, (LOW_PERCENTILE, HIGH_PERCENTILE))
    out = small.astype(np.float32)
    if hi - lo < 1.0:  # flat image: nothing to stretch
        out *= 1.0 / 255.0
    else:
        out -= lo
        out *= 1.0 / (hi - lo)
        np.clip(out, 0.0, 1.0, out=out)
    return out[None, :, :]
