"""classify_per_s: decode + preprocess + infer, images/s, router pipeline versus naive baseline.

The router variant does what the plugin's classification workers do (``orthanc_plugin/workers.py``):
each worker takes up to ``BatchSize`` instances, decodes them one by one from their DICOM bytes
with :func:`bodypart_router.decode.decode_dicom`, turns them into model inputs and classifies
them in one :meth:`~bodypart_router.classifier.Classifier.predict_batch` call; ``Workers`` threads
do this side by side, each running its inferences on one onnxruntime thread, as the plugin does
(``orthanc_plugin/footprint.py``). Workers and batch size default to the shipped configuration.

Both variants run in the same process on the same bytes, interleaved round by round (and in
alternating order), so that a background job slowing the machine down slows both alike and the
speedup ratio stays meaningful even when the absolute figures move. Each variant is warmed up
once per transfer syntax (lazy imports, onnxruntime's first-run allocations, process-pool start)
before anything is timed. The files are read into memory first: disk speed is not measured.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bodypart_router.classifier import Classifier, Prediction
from bodypart_router.config import RouterConfig
from bodypart_router.decode import decode_dicom
from bodypart_router.preprocess import to_model_input

from .baseline import NaiveClassifier

#: Classifies a list of DICOM files given as bytes; returns anything (results are not checked here).
ClassifyMany = Callable[[Sequence[bytes]], object]


@dataclass(frozen=True)
class Variant:
    """One way of classifying, timed on ``images`` inputs per round."""

    name: str
    classify_many: ClassifyMany
    images: int


#: onnxruntime threads per inference in the plugin's workers (``orthanc_plugin/footprint.py``).
PLUGIN_INFERENCE_THREADS = 1


class RouterPipeline:
    """The plugin's classification path, ``workers`` threads, batches of ``batch_size``."""

    def __init__(self, classifier: Classifier, workers: int = RouterConfig.workers,
                 batch_size: int = RouterConfig.batch_size) -> None:
        self.classifier = classifier
        self.workers = workers
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-router")

    def _batch(self, blobs: Sequence[bytes]) -> list[Prediction]:
        inputs = [to_model_input(decode_dicom(blob).pixels) for blob in blobs]
        return self.classifier.predict_batch(inputs)

    def classify_many(self, blobs: Sequence[bytes]) -> list[Prediction]:
        batches = [blobs[i : i + self.batch_size] for i in range(0, len(blobs), self.batch_size)]
        return [p for batch in self._pool.map(self._batch, batches) for p in batch]

    def close(self) -> None:
        self._pool.shutdown()


def standard_variants(model_path: Path, router_images: int, baseline_images: int, *,
                      shipped_workers: int, batch_size: int, workers: Sequence[int] = ()) -> list[Variant]:
    """The router as shipped (``router``), with other worker counts, and the naive baseline."""
    classifier = Classifier(model_path, intra_op_threads=PLUGIN_INFERENCE_THREADS)
    variants = []
    for n in dict.fromkeys([shipped_workers, *workers]):
        name = "router" if n == shipped_workers else f"router_{n}_workers"
        pipeline = RouterPipeline(classifier, workers=n, batch_size=batch_size)
        variants.append(Variant(name, pipeline.classify_many, router_images))
    naive = NaiveClassifier(model_path)
    variants.append(Variant("baseline", lambda blobs: [naive.classify(b) for b in blobs], baseline_images))
    return variants


def _cycle(blobs: Sequence[bytes], n: int) -> list[bytes]:
    return [blobs[i % len(blobs)] for i in range(n)]


def measure(
    inputs: dict[str, Sequence[bytes]],
    variants: Sequence[Variant],
    rounds: int = 3,
    reference: str = "baseline",
    on_round: Callable[[str, str, float], None] | None = None,
) -> dict[str, dict]:
    """Images/s per transfer syntax and variant, with the speedup over ``reference``.

    Args:
        inputs: per transfer-syntax key, the DICOM files (bytes) to cycle through.
        variants: what to compare; one of them should be named ``reference``.
        rounds: timed rounds per variant; the median round is reported.
        reference: the variant the other variants' speedups are relative to.
        on_round: called with (syntax, variant, images/s) after every timed round (progress).

    Returns:
        ``{syntax: {variant: {"images_per_s": median, "rounds": [...]}, "speedup": {variant: x}}}``
    """
    results: dict[str, dict] = {}
    for syntax, blobs in inputs.items():
        for variant in variants:  # warm-up, untimed
            variant.classify_many(list(blobs))
        rates: dict[str, list[float]] = {v.name: [] for v in variants}
        for r in range(rounds):
            for variant in variants if r % 2 == 0 else list(reversed(variants)):
                batch = _cycle(blobs, variant.images)
                start = time.perf_counter()
                variant.classify_many(batch)
                rate = len(batch) / (time.perf_counter() - start)
                rates[variant.name].append(rate)
                if on_round:
                    on_round(syntax, variant.name, rate)
        entry: dict = {
            name: {"images_per_s": round(statistics.median(r), 2), "rounds": [round(x, 2) for x in r]}
            for name, r in rates.items()
        }
        if reference in rates:
            base = statistics.median(rates[reference])
            entry["speedup"] = {
                name: round(statistics.median(r) / base, 2) for name, r in rates.items() if name != reference
            }
        results[syntax] = entry
    return results
