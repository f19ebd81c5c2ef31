"""classify_per_s: decode + preprocess + infer, images/s, router pipeline versus naive baseline.

The router variant does what the plugin's classification workers do (``orthanc_plugin/workers.py``):
each worker takes up to ``BatchSize`` instances and hands their file paths to its own
classifier child process (:class:`bodypart_router.inference.engine.ChildEngine`, started at the lowest CPU
priority), which reads, decodes and preprocesses them one by one and classifies them in one
inference, on the cores shared out among the workers (``engine.child_inference_threads``).
``Workers`` workers do this side by side, so decoders that hold Python's GIL (JPEG-LS, JPEG
lossless) still run in parallel. Workers and batch size
default to the shipped configuration.

Both variants run on the same files, interleaved round by round (and in alternating order), so
that a background job slowing the machine down slows both alike and the speedup ratio stays
meaningful even when the absolute figures move. Each variant is warmed up once per transfer
syntax (lazy imports, onnxruntime's first-run allocations, the page cache) before anything is
timed, so disk speed is not measured.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bodypart_router.config import RouterConfig
from bodypart_router.inference.engine import (CHILD_PRIORITY, BatchResult, ChildEngine, Engine, Outcome, child_inference_threads,
                                    python_for_child)

from .baseline import NaiveClassifier

#: Classifies a list of DICOM file paths; returns anything (results are not checked here).
ClassifyMany = Callable[[Sequence[str]], object]


@dataclass(frozen=True)
class Variant:
    """One way of classifying, timed on ``images`` inputs per round."""

    name: str
    classify_many: ClassifyMany
    images: int


class RouterPipeline:
    """The plugin's classification path: one engine per worker, batches of ``batch_size``."""

    def __init__(self, engines: Sequence[Engine], batch_size: int = RouterConfig.batch_size) -> None:
        self.engines = list(engines)
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="bench-router")

    def classify_many(self, paths: Sequence[str]) -> list[Outcome]:
        batches = [paths[i : i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        # Worker k takes batches k, k + n, k + 2n...: each engine serves one thread, as in the plugin.
        n = len(self.engines)

        def worker(k: int) -> list[BatchResult]:
            return [self.engines[k].classify(b) for b in batches[k::n]]

        by_batch: list[BatchResult | None] = [None] * len(batches)
        for k, per_worker in enumerate(self._pool.map(worker, range(n))):
            by_batch[k::n] = per_worker
        outcomes = [o for r in by_batch if r is not None for o in r.outcomes]
        failed = [o for o in outcomes if not o.classified]
        if failed:
            raise RuntimeError(f"the router did not classify {len(failed)} benchmark image(s): {failed[0].detail}")
        return outcomes

    def close(self) -> None:
        self._pool.shutdown()
        for engine in self.engines:
            engine.close()


def router_engines(model_path: Path, workers: int) -> list[Engine]:
    """One classifier child process per worker, as the plugin starts them."""
    python = python_for_child(sys.prefix)
    if python is None:
        raise RuntimeError("no python interpreter of this version for the classifier child processes")
    threads = child_inference_threads(workers)
    return [ChildEngine(model_path, python=python, intra_op_threads=threads, niceness=CHILD_PRIORITY)
            for _ in range(workers)]


def standard_variants(model_path: Path, router_images: int, baseline_images: int, *,
                      shipped_workers: int, batch_size: int, workers: Sequence[int] = ()) -> list[Variant]:
    """The router as shipped (``router``), with other worker counts, and the naive baseline."""
    variants = []
    for n in dict.fromkeys([shipped_workers, *workers]):
        name = "router" if n == shipped_workers else f"router_{n}_workers"
        pipeline = RouterPipeline(router_engines(model_path, n), batch_size=batch_size)
        variants.append(Variant(name, pipeline.classify_many, router_images))
    naive = NaiveClassifier(model_path)
    variants.append(Variant("baseline", lambda paths: [naive.classify(Path(p).read_bytes()) for p in paths],
                            baseline_images))
    return variants


def _cycle(blobs: Sequence[str], n: int) -> list[str]:
    return [blobs[i % len(blobs)] for i in range(n)]


def measure(
    inputs: dict[str, Sequence[str]],
    variants: Sequence[Variant],
    rounds: int = 3,
    reference: str = "baseline",
    on_round: Callable[[str, str, float], None] | None = None,
) -> dict[str, dict]:
    """Images/s per transfer syntax and variant, with the speedup over ``reference``.

    Args:
        inputs: per transfer-syntax key, the DICOM files (paths) to cycle through.
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
