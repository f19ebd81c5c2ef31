"""The naive classifier that the router's pipeline is measured against.

This is what a first implementation does, and what the reference paper's description implies:
pydicom decodes every pixel at full resolution, the Modality LUT and the window are applied in
float64 on all ~7.5 million pixels, the result is scaled to 8 bits, and only then is the image
resized to the model's 224 px. Inference runs one image at a time on a default onnxruntime
session. It shares :func:`bodypart_router.imaging.preprocess.to_model_input` and the model with the router,
so the two differ only in how they get the pixels and how they run the network.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from bodypart_router.imaging.preprocess import to_model_input


def display_image(ds: pydicom.Dataset) -> np.ndarray:
    """Full-resolution uint8 display image: full decode, Modality LUT, VOI LUT/window in float."""
    pixels = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    lo, hi = float(pixels.min()), float(pixels.max())
    scaled = (pixels - lo) / (hi - lo or 1.0) * 255.0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        scaled = 255.0 - scaled
    return scaled.astype(np.uint8)


class NaiveClassifier:
    """Classifies one DICOM at a time the naive way (see the module docstring)."""

    def __init__(self, model_path: Path) -> None:
        self.session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def classify(self, dicom: bytes) -> np.ndarray:
        """Class probabilities, shape ``(5,)``, for one DICOM file's bytes."""
        ds = pydicom.dcmread(io.BytesIO(dicom))
        batch = to_model_input(display_image(ds))[None]
        return self.session.run(["probabilities"], {"image": batch})[0][0]
