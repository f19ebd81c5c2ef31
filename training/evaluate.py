"""Checks of the exported model beyond the test split: shortcuts, real DICOMs, latency."""

from __future__ import annotations

import csv
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bodypart_router.inference.classes import CLASS_NAMES
from bodypart_router.imaging.preprocess import to_model_input

from .data import Sample

log = logging.getLogger(__name__)


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session using at most ``threads`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """The exported model in ONNX Runtime, as the router runs it."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.session = cpu_session(path, threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"image": batch})[0]

    def classify(self, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Probabilities for uint8 images, through the shared preprocessing."""
        out = []
        for i in range(0, len(images), batch_size):
            out.append(self(np.stack([to_model_input(im) for im in images[i:i + batch_size]])))
        return np.concatenate(out)


def squash_224(image: np.ndarray) -> np.ndarray:
    """What the pediatric source did to its images: 224x224, aspect ratio ignored, JPEG q85."""
    small = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else small


def unsquash_large(image: np.ndarray) -> np.ndarray:
    """A 224 px pediatric image blown up to a typical CR size with a portrait aspect (1400x1120)."""
    return cv2.resize(image, (1120, 1400), interpolation=cv2.INTER_CUBIC)


def shortcut_check(model: OnnxModel, samples: list[Sample], test_idx: list[int],
                   test_images: list[np.ndarray]) -> dict:
    """Adult chests made to look like the pediatric source, and pediatric images made large.

    If the model had learned "224x224 squashed = pediatric", squashed adult chests would flip to
    pediatric_chest and enlarged pediatric images would flip away from it. ``test_images`` are the
    loaded images of ``test_idx``, in the same order (the caller has them already).
    """
    adult = CLASS_NAMES.index("adult_chest")
    pediatric = CLASS_NAMES.index("pediatric_chest")
    result = {}
    for name, cls, transform in (("adult_chest_squashed_224", adult, squash_224),
                                 ("pediatric_chest_upscaled_1400x1120", pediatric, unsquash_large)):
        # thumbnails (64 px) are left out: squashing them to 224 is an upscale, not the shortcut
        picked = [(i, im) for i, im in zip(test_idx, test_images, strict=True) if samples[i].label == cls
                  and (cls == pediatric or max(samples[i].orig_width, samples[i].orig_height) > 224)]
        idx = [i for i, _ in picked]
        originals = [im for _, im in picked]
        before = model.classify(originals).argmax(1)
        after = model.classify([transform(im) for im in originals]).argmax(1)
        result[name] = {
            "n": len(idx),
            "accuracy_before": float((before == cls).mean()) if idx else None,
            "accuracy_after": float((after == cls).mean()) if idx else None,
            "flipped": int((before != after).sum()),
            "flip_rate": float((before != after).mean()) if idx else None,
            "after_counts": {c: int((after == k).sum()) for k, c in enumerate(CLASS_NAMES)},
        }
        log.info("shortcut %s: %s", name, result[name])
    return result


#: What decodes the DICOM check's files (the name the model card prints): the serving decoder.
DICOM_DECODER = "bodypart_router.imaging.decode"


def dicom_to_uint8(path: Path) -> np.ndarray:
    """Display-ready uint8 pixels of a DICOM file, decoded as the router decodes it in service,
    so that the check covers the serving path."""
    from bodypart_router.imaging.decode import decode_file

    return np.asarray(decode_file(path).pixels)


def dicom_check(model: OnnxModel, dicom_dir: Path) -> dict:
    """Classify the shared real DICOMs and compare with their manifest's ``expected_class``."""
    rows = list(csv.DictReader(open(dicom_dir / "manifest.csv", newline="")))
    files = []
    for row in rows:
        entry = {"file": row["file"], "expected": row["expected_class"] or None}
        try:
            image = dicom_to_uint8(dicom_dir / row["file"])
        except Exception as exc:  # noqa: BLE001 - a file the decoder rejects is reported, not fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
            files.append(entry)
            continue
        probs = model.classify([image])[0]
        entry.update(predicted=CLASS_NAMES[int(probs.argmax())], score=float(probs.max()))
        files.append(entry)
    judged = [f for f in files if f["expected"] and "predicted" in f]
    agree = sum(f["predicted"] == f["expected"] for f in judged)
    return {"decoder": DICOM_DECODER, "files": files, "with_expected_class": len(judged), "agree": agree,
            "errors": sum("error" in f for f in files)}


def latency(model_path: Path, sample_image: np.ndarray, runs: int = 50) -> dict:
    """Median CPU latency per image: preprocessing, and the model at batch 1 with 2 threads."""
    model = OnnxModel(model_path, threads=2)
    x = to_model_input(sample_image)[None]
    for _ in range(5):
        model(x)
    infer = []
    for _ in range(runs):
        t = time.perf_counter()
        model(x)
        infer.append(time.perf_counter() - t)
    one_thread = OnnxModel(model_path, threads=1)
    x8 = np.repeat(x, 8, axis=0)
    one_thread(x8)
    batch8 = []
    for _ in range(max(3, runs // 5)):
        t = time.perf_counter()
        one_thread(x8)
        batch8.append((time.perf_counter() - t) / 8)
    big = cv2.resize(sample_image, (2000, 2500), interpolation=cv2.INTER_CUBIC)
    prep = []
    for _ in range(20):
        t = time.perf_counter()
        to_model_input(big)
        prep.append(time.perf_counter() - t)
    return {"onnxruntime_batch1_threads2_ms_median": 1000 * statistics.median(infer),
            "onnxruntime_batch1_threads2_ms_p90": 1000 * float(np.percentile(infer, 90)),
            "onnxruntime_batch8_threads1_ms_per_image_median": 1000 * statistics.median(batch8),
            "preprocess_2000x2500_ms_median": 1000 * statistics.median(prep)}


def served_latency(model_path: Path, images: list[np.ndarray], batches: int = 24) -> dict:
    """Per image, as the router serves the model on one core: the router's classifier at batch 8
    with one thread, including the second look for the films that need one (test films spread
    evenly over the split, so the share looked at twice is that of ordinary films)."""
    from bodypart_router.inference import second_look
    from bodypart_router.inference.classifier import Classifier

    clf = Classifier(model_path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    inputs = [to_model_input(im) for im in images[::max(1, len(images) // (8 * batches))][:8 * batches]]
    inputs = inputs[:len(inputs) - len(inputs) % 8]
    clf.predict_batch(inputs[:8])
    times = []
    for k in range(0, len(inputs), 8):
        t = time.perf_counter()
        clf.predict_batch(inputs[k:k + 8])
        times.append((time.perf_counter() - t) / 8)
    # which films took the second look: the first answers, once, outside the timed runs
    inverted, turn = cpu_session(model_path, 1).run(["inverted_probabilities", "rotation_probabilities"],
                                                    {"image": np.stack(inputs)})
    return {"served_batch8_threads1_ms_per_image_median": 1000 * statistics.median(times),
            "served_batch8_threads1_ms_per_image_mean": 1000 * statistics.fmean(times),
            "served_second_look_share": float(second_look.needed(inverted[:, 1], turn).mean())}
