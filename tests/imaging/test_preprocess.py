"""The one preprocessing function shared by training and inference."""

from __future__ import annotations

import numpy as np
import pytest

from bodypart_router.imaging.preprocess import INPUT_SIZE, to_model_input


def picture(rows: int, cols: int) -> np.ndarray:
    """A smooth test picture: a bright disc on a darker gradient."""
    y, x = np.mgrid[0:rows, 0:cols]
    disc = ((y - rows / 2) ** 2 / (rows / 3) ** 2 + (x - cols / 2) ** 2 / (cols / 3) ** 2) < 1
    return (40 + 60 * x / cols + 120 * disc).astype(np.uint8)


@pytest.mark.parametrize("shape", [(64, 64), (224, 224), (600, 500), (300, 900)])
def test_any_size_becomes_a_square_float_input_in_unit_range(shape: tuple[int, int]) -> None:
    out = to_model_input(picture(*shape))
    assert out.shape == (1, INPUT_SIZE, INPUT_SIZE) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() - out.min() > 0.9  # contrast stretched to (nearly) the full range


def test_aspect_ratio_is_squashed_not_padded() -> None:
    """A wide picture fills the whole square: no padding band that would mark non-square sources."""
    out = to_model_input(picture(200, 600))[0]
    assert out[:10].std() > 0.01 and out[-10:].std() > 0.01


def test_contrast_and_brightness_changes_give_nearly_the_same_input() -> None:
    image = picture(400, 300)
    dimmer = (image.astype(np.float32) * 0.5 + 30).astype(np.uint8)
    assert np.abs(to_model_input(image) - to_model_input(dimmer)).mean() < 0.02


def test_flat_image_is_kept_as_its_gray_level() -> None:
    out = to_model_input(np.full((50, 50), 128, np.uint8))
    np.testing.assert_allclose(out, 128 / 255, atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint16)])
def test_wrong_shape_or_dtype_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        to_model_input(bad)
