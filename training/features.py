"""Feature cache: run the frozen trunk once per (image, augmented view).

A full fine-tuning epoch costs ~48 min on a 2-core CPU; running the frozen stem and blocks 0-14
once per view through ONNX Runtime costs ~10 ms per view, after which the trained top (block 15,
head, classifier) takes ~2 ms per view and epoch. Features are stored as float16
``[views, 192, 7, 7]`` arrays.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bodypart_router.preprocess import to_model_input

from .augment import augment
from .data import Sample, load_gray
from .evaluate import cpu_session
from .model import EfficientNetLite0, normalise_gray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class View:
    """One cached input: a sample, and the seed of its augmentation (``None`` = unaugmented)."""

    sample: int
    seed: int | None


class _Trunk(torch.nn.Module):
    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(normalise_gray(x))


def export_trunk(model: EfficientNetLite0, path: Path) -> None:
    """Write the frozen trunk as ONNX for fast CPU feature extraction."""
    model.eval()
    torch.onnx.export(_Trunk(model), torch.zeros(1, 1, 224, 224), str(path), input_names=["image"],
                      output_names=["features"], dynamic_axes={"image": {0: "n"}, "features": {0: "n"}},
                      opset_version=17, dynamo=False)


def view_input(image: np.ndarray, seed: int | None) -> np.ndarray:
    """The model input ``(1,224,224)`` for one view of a loaded image: optionally augmented, then
    the shared preprocessing. ``image`` is not modified, so one load serves all views of a sample."""
    if seed is not None:
        image = augment(image, np.random.default_rng(seed))
    return to_model_input(image)


def render_view(sample: Sample, seed: int | None) -> np.ndarray:
    """The model input for one view of ``sample``, read from disk."""
    return view_input(load_gray(sample.path), seed)


class TrunkRunner:
    """ONNX Runtime session of the trunk, limited to the given number of threads."""

    def __init__(self, onnx_path: Path, threads: int) -> None:
        self.session = cpu_session(onnx_path, threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": batch})[0]


def extract(runner: TrunkRunner, samples: list[Sample], views: list[View], batch_size: int = 32,
            label: str = "features") -> np.ndarray:
    """Trunk features of ``views`` as float16; image decoding overlaps with inference."""
    out = np.empty((len(views), 192, 7, 7), dtype=np.float16)

    def render(chunk: list[View]) -> np.ndarray:
        # the views of a sample are consecutive: decode each image once per chunk, not once per view
        images = {i: load_gray(samples[i].path) for i in dict.fromkeys(v.sample for v in chunk)}
        return np.stack([view_input(images[v.sample], v.seed) for v in chunk])

    chunks = [views[i:i + batch_size] for i in range(0, len(views), batch_size)]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(render, chunks[0]) if chunks else None
        for k, _chunk in enumerate(chunks):
            batch = pending.result()
            pending = pool.submit(render, chunks[k + 1]) if k + 1 < len(chunks) else None
            out[k * batch_size:k * batch_size + len(batch)] = runner(batch)
            if k % 50 == 0 or k == len(chunks) - 1:
                done = min((k + 1) * batch_size, len(views))
                rate = (time.monotonic() - start) / done
                log.info("%s: %d/%d views, %.1f ms/view", label, done, len(views), rate * 1000)
    return out
