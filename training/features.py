"""Feature cache: run the frozen ImageNet backbone once per (image, augmented view).

The backbone never changes during training, so each view costs one forward pass, ever; the
heads then train on the cached ``[views, 5120]`` float16 features in seconds per epoch. That is
what makes a leave-one-source-out run per source affordable on a 2-core CPU.

A view is an augmentation seed plus a quarter-turn count and a polarity flag: those two are
targets of the rotation and polarity heads, so they are drawn here, with their labels, and not
inside :func:`training.augment.augment`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bodypart_router.imaging.preprocess import to_model_input

from .augment import augment, turn_and_invert
from .data import Sample, load_gray
from .evaluate import cpu_session
from .model import EfficientNetLite0, normalise_gray

log = logging.getLogger(__name__)

#: Width of the cached features (1280 channels x 2x2 grid).
FEATURE_DIM = 1280 * 4


@dataclass(frozen=True)
class View:
    """One cached input: a sample, its augmentation seed (``None`` = none), and the quarter turns
    (counter-clockwise) and polarity inversion applied after it."""

    sample: int
    seed: int | None
    turns: int = 0
    inverted: bool = False


class _Backbone(torch.nn.Module):
    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.pooled_features(normalise_gray(x))


def export_backbone(model: EfficientNetLite0, path: Path) -> None:
    """Write the frozen backbone as ONNX for fast CPU feature extraction."""
    model.eval()
    torch.onnx.export(_Backbone(model), torch.zeros(1, 1, 224, 224), str(path), input_names=["image"],
                      output_names=["features"], dynamic_axes={"image": {0: "n"}, "features": {0: "n"}},
                      opset_version=17, dynamo=False)


def view_input(image: np.ndarray, view: View) -> np.ndarray:
    """The model input ``(1,224,224)`` for one view of a loaded image: augmented, turned and
    inverted as the view says, then the shared preprocessing. ``image`` is not modified."""
    if view.seed is not None:
        image = augment(image, np.random.default_rng(view.seed))
    return to_model_input(turn_and_invert(image, view.turns, view.inverted))


def render_view(sample: Sample, view: View) -> np.ndarray:
    """The model input for one view of ``sample``, read from disk."""
    return view_input(load_gray(sample.path), view)


class BackboneRunner:
    """ONNX Runtime session of the backbone, limited to the given number of threads."""

    def __init__(self, onnx_path: Path, threads: int) -> None:
        self.session = cpu_session(onnx_path, threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": batch})[0]


def extract(runner: BackboneRunner, samples: list[Sample], views: list[View], batch_size: int = 32,
            label: str = "features") -> np.ndarray:
    """Backbone features of ``views`` as float16; image decoding overlaps with inference."""
    out = np.empty((len(views), FEATURE_DIM), dtype=np.float16)

    def render(chunk: list[View]) -> np.ndarray:
        # the views of a sample are consecutive: decode each image once per chunk, not once per view
        images = {i: load_gray(samples[i].path) for i in dict.fromkeys(v.sample for v in chunk)}
        return np.stack([view_input(images[v.sample], v) for v in chunk])

    chunks = [views[i:i + batch_size] for i in range(0, len(views), batch_size)]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(render, chunks[0]) if chunks else None
        for k, _chunk in enumerate(chunks):
            batch = pending.result()
            pending = pool.submit(render, chunks[k + 1]) if k + 1 < len(chunks) else None
            out[k * batch_size:k * batch_size + len(batch)] = runner(batch)
            if k % 100 == 0 or k == len(chunks) - 1:
                done = min((k + 1) * batch_size, len(views))
                rate = (time.monotonic() - start) / done
                log.info("%s: %d/%d views, %.1f ms/view", label, done, len(views), rate * 1000)
    return out
