"""VOI: pydicom's windowing against the PS3.3 formulas the router carried before (the same grey levels
but for rounding), and a display that agrees with pydicom's own pipeline (MONOCHROME1, VOI LUT
sequence, window)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from bodypart_router.imaging.decode import decode_file
from bodypart_router.imaging.voi import WINDOW_FUNCTIONS, to_uint8, window

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: Real radiographs kept beside the checkout; the tests use them when they are there.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom-xray"


def _files() -> list[Path]:
    found = sorted(FIXTURES.glob("*.dcm"))
    return found + (sorted(SHARED.glob("*.dcm")) if SHARED.is_dir() else [])


def ps33_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 written out: the router's own copy before it used pydicom's."""
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        out = (x - center) / width + 0.5
    else:
        out = (x - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0)


def _gray(path: Path) -> tuple[np.ndarray, pydicom.Dataset] | None:
    """The stored values of a grayscale image as pydicom decodes them, or None."""
    ds = pydicom.dcmread(path, force=True)
    if "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    try:
        arr = ds.pixel_array
    except Exception:  # noqa: BLE001  (no meta, truncated stream: not a windowing case)
        return None
    return (arr[0] if arr.ndim == 3 else arr), ds


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_pydicom_windowing_equals_the_formulas(path: Path) -> None:
    found = _gray(path)
    if found is None:
        pytest.skip("not a grayscale image pydicom decodes here")
    arr, ds = found
    x = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)[::4, ::4]
    low, high = np.percentile(x, (5, 95))
    windows = [((low + high) / 2, max(high - low, 2.0)), (float(np.median(x)), max((high - low) / 4, 2.0))]
    if "WindowCenter" in ds and "WindowWidth" in ds:
        windows.append((float(np.atleast_1d(ds.WindowCenter)[0]), float(np.atleast_1d(ds.WindowWidth)[0])))
    for center, width in windows:
        for function in WINDOW_FUNCTIONS:
            ours = to_uint8(window(x, center, width, function)).astype(int)
            reference = to_uint8(ps33_window(x, center, width, function).astype(np.float32)).astype(int)
            # pydicom computes in float64, the copy did in float32: a value that falls exactly between
            # two grey levels may round the other way (LINEAR_EXACT, on a few pixels of one file)
            differ = np.count_nonzero(ours != reference)
            assert np.abs(ours - reference).max() <= 1 and differ <= ours.size // 1000, (center, width, function)


@pytest.mark.parametrize("name", ["chest_mono1.dcm", "chest_mono2_inverse.dcm", "tibia_rescale_voilut.dcm",
                                  "chest_jpegls.dcm"])
def test_the_display_agrees_with_pydicoms_own_pipeline(name: str) -> None:
    """pydicom at full size (Modality LUT, VOI LUT sequence or window, MONOCHROME1 inverted)
    against the router's reduced decode: the same picture, bone bright in both."""
    arr, ds = _gray(FIXTURES / name)
    shown = apply_voi_lut(apply_modality_lut(arr, ds).astype(np.float64), ds, prefer_lut=True)
    if ds.PhotometricInterpretation == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE":
        shown = shown.max() - shown
    ours = decode_file(FIXTURES / name).pixels.astype(np.float32)
    reference = cv2.resize(shown.astype(np.float32), ours.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.corrcoef(reference.ravel(), ours.ravel())[0, 1] > 0.98
