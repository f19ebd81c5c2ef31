"""Augmentations on the raw uint8 image, applied *before* the shared ``to_model_input``.

Each one removes a cue that identifies a source collection rather than a body part:

- resolution and blur: thumbnails (64 px MedNIST, humerus) and 224 px sets must not make
  "low resolution" or "sharp" a class cue;
- aspect ratio (random crops and pads): the pediatric set was squashed to 224x224 by its source;
- contrast and gamma: sources differ in windowing;
- collimation borders, small tilts, burned-in letters and markers, noise: what real films carry;
- partial films (a crop that shows part of the anatomy) and small films in a large grey field,
  as some sites store them: neither the framing nor the field may become a class cue.

Quarter turns and polarity inversion are *not* here: they are targets of the rotation and
polarity heads, applied with their labels by :func:`turn_and_invert`.

Every function takes a ``numpy.random.Generator`` so a view is reproducible from its seed.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Strings that resemble real burned-in markers.
MARKER_TEXTS = ("L", "R", "PA", "AP", "LAT", "ERECT", "SUPINE", "PORTABLE", "L", "R")


def random_aspect(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop or pad to a random aspect ratio in [0.6, 1.67] (log-uniform)."""
    h, w = image.shape
    target = float(np.exp(rng.uniform(np.log(0.6), np.log(1.67))))  # width / height
    if rng.random() < 0.6:  # crop: keep 75-100 % of one side
        if w / h > target:
            new_w = max(8, int(round(h * target)))
            new_w = max(new_w, int(w * 0.75))
            x0 = int(rng.integers(0, w - new_w + 1))
            return image[:, x0:x0 + new_w]
        new_h = max(8, int(round(w / target)))
        new_h = max(new_h, int(h * 0.75))
        y0 = int(rng.integers(0, h - new_h + 1))
        return image[y0:y0 + new_h, :]
    # pad with a uniform value (black or the edge value), as a detector or a screenshot would
    value = 0 if rng.random() < 0.7 else int(rng.integers(0, 256))
    if w / h < target:
        pad = min(int(round(h * target)) - w, w // 2)
        left = int(rng.integers(0, pad + 1))
        return cv2.copyMakeBorder(image, 0, 0, left, pad - left, cv2.BORDER_CONSTANT, value=value)
    pad = min(int(round(w / target)) - h, h // 2)
    top = int(rng.integers(0, pad + 1))
    return cv2.copyMakeBorder(image, top, pad - top, 0, 0, cv2.BORDER_CONSTANT, value=value)


def random_rotation(image: np.ndarray, rng: np.random.Generator, max_deg: float = 12.0) -> np.ndarray:
    """Rotate by a small angle; the uncovered corners are black, as on a rotated film scan."""
    h, w = image.shape
    angle = float(rng.uniform(-max_deg, max_deg))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def collimation_border(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint black or white frames of random width on some sides (shutters, collimators)."""
    out = image.copy()
    h, w = out.shape
    value = 0 if rng.random() < 0.6 else 255
    for side in range(4):
        if rng.random() < 0.6:
            frac = rng.uniform(0.02, 0.15)
            if side == 0:
                out[: int(h * frac)] = value
            elif side == 1:
                out[h - int(h * frac):] = value
            elif side == 2:
                out[:, : int(w * frac)] = value
            else:
                out[:, w - int(w * frac):] = value
    return out


def burned_in_text(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one to three markers (L/R letters, view names) near the edges."""
    out = image.copy()
    h, w = out.shape
    for _ in range(int(rng.integers(1, 4))):
        text = MARKER_TEXTS[int(rng.integers(len(MARKER_TEXTS)))]
        scale = max(h, w) / 300.0 * float(rng.uniform(0.5, 1.6))
        thickness = max(1, int(round(scale * 2)))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x = int(rng.integers(0, max(1, w - tw)))
        y = int(rng.integers(th, max(th + 1, h))) if rng.random() < 0.3 else \
            (th + int(rng.integers(0, max(1, h // 8)))) if rng.random() < 0.5 else \
            h - int(rng.integers(0, max(1, h // 8)))
        color = 255 if rng.random() < 0.8 else 0
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return out


def contrast_gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma in [0.6, 1.6] and a random window that clips a little of each end."""
    lut = np.arange(256, dtype=np.float32) / 255.0
    lut = lut ** float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    lo, hi = rng.uniform(0.0, 0.1), rng.uniform(0.9, 1.0)
    lut = np.clip((lut - lo) / (hi - lo), 0.0, 1.0)
    return cv2.LUT(image, (lut * 255.0 + 0.5).astype(np.uint8))


def resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Downscale the long side to 48-224 px and back, so detail level is not a class cue."""
    h, w = image.shape
    target = float(rng.uniform(48, 224))
    scale = target / max(h, w)
    if scale >= 1.0:
        return image
    small = cv2.resize(image, (max(4, int(w * scale)), max(4, int(h * scale))), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC
    return cv2.resize(small, (w, h), interpolation=interp)


def upscale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Upsample small images 2-4x, as a viewer or a re-export would: size alone is not a cue."""
    h, w = image.shape
    factor = float(rng.uniform(2.0, 4.0))
    return cv2.resize(image, (int(w * factor), int(h * factor)), interpolation=cv2.INTER_CUBIC)


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = float(rng.uniform(0.5, 2.0)) * max(image.shape) / 320.0
    return cv2.GaussianBlur(image, (0, 0), sigmaX=max(sigma, 0.3))


def noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = float(rng.uniform(2.0, 10.0))
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def partial_film(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep a random 55-90 % window of each side: a film that shows only part of the region."""
    h, w = image.shape
    fh, fw = rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.9)
    ch, cw = max(8, int(h * fh)), max(8, int(w * fw))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[y0:y0 + ch, x0:x0 + cw]


def grey_field(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place the film, at 40-80 % of the frame, in a large uniform grey field."""
    h, w = image.shape
    scale = rng.uniform(0.4, 0.8)
    big_h, big_w = int(h / scale), int(w / scale * rng.uniform(0.8, 1.25))
    big_w = max(big_w, w)
    field = np.full((big_h, big_w), int(rng.integers(60, 200)), dtype=np.uint8)
    y0, x0 = int(rng.integers(0, big_h - h + 1)), int(rng.integers(0, big_w - w + 1))
    field[y0:y0 + h, x0:x0 + w] = image
    return field


def turn_and_invert(image: np.ndarray, quarter_turns: int, inverted: bool) -> np.ndarray:
    """Turn an upright film ``quarter_turns`` x 90 degrees counter-clockwise, optionally inverted.

    The rotation target of the result is ``90 * quarter_turns``: the clockwise turn that makes
    it upright again.
    """
    out = np.rot90(image, quarter_turns) if quarter_turns % 4 else image
    if inverted:
        out = 255 - out
    return np.ascontiguousarray(out)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random training view of a uint8 grayscale image (still uint8, any size)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"augment expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    out = image
    if max(out.shape) < 200 and rng.random() < 0.5:
        out = upscale(out, rng)
    if rng.random() < 0.2:
        out = partial_film(out, rng)
    if rng.random() < 0.7:
        out = random_aspect(out, rng)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = random_rotation(np.ascontiguousarray(out), rng)
    out = np.ascontiguousarray(out)
    if rng.random() < 0.3:
        out = collimation_border(out, rng)
    if rng.random() < 0.4:
        out = burned_in_text(out, rng)
    if rng.random() < 0.7:
        out = contrast_gamma(out, rng)
    if rng.random() < 0.1:
        out = grey_field(out, rng)
    if rng.random() < 0.4:
        out = resolution(out, rng)
    if rng.random() < 0.2:
        out = blur(out, rng)
    if rng.random() < 0.25:
        out = noise(out, rng)
    return out
