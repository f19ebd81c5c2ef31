"""Reproduce the shipped model: ``python -m training.train --data ../shared/data/xray-bodypart --out models/``.

Pipeline (about an hour on a 2-core CPU):

1. split the manifest by ``group_key`` into train / val / test (:mod:`training.data`);
2. load ImageNet EfficientNet-Lite0 strictly and export its frozen trunk to ONNX;
3. cache trunk features of augmented training views, balanced per class (:mod:`training.features`);
4. train block 15 + head + classifier on the cache, class-weighted (:mod:`training.fit`);
5. export the whole network to ONNX and check it against PyTorch (:mod:`training.export`);
6. evaluate the exported model: test split with CIs, augmented test views, shortcut check, the
   shared real DICOMs, latency, and leave-one-region-out for the open-set ``others`` class;
7. write ``labels.json``, ``metrics.json`` and ``MODEL_CARD.md`` next to the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bodypart_router.classes import CLASS_NAMES

from . import card
from .data import OTHERS_REGIONS, SPLITS, Sample, load_gray, read_manifest, split_by_group
from .evaluate import OnnxModel, dicom_check, latency, shortcut_check
from .export import export_onnx
from .features import TrunkRunner, View, export_trunk, extract, render_view
from .fit import FitConfig, fit_top, predict_top
from .metrics import report
from .openset import choose_others_bias
from .model import load_imagenet, replace_classifier

log = logging.getLogger("training")

MODEL_NAME = "effnetlite0-bodypart-v1"
ONNX_NAME = "bodypart_router.onnx"


def view_seed(seed: int, sample: int, view: int) -> int:
    """Independent, reproducible seed for one augmented view."""
    return int(np.random.SeedSequence([seed, sample, view]).generate_state(1)[0])


def training_views(samples: list[Sample], train_idx: list[int], target_per_class: int,
                   max_views_per_image: int, seed: int) -> tuple[list[View], dict[str, int]]:
    """Augmented views of the training images, about ``target_per_class`` per class.

    Big classes get one or two views per image, scarce ones many (capped), which balances the
    classes seen by the top layers without discarding any image.
    """
    per_class = Counter(samples[i].label for i in train_idx)
    views_per_image = {k: int(min(max_views_per_image, max(1, round(target_per_class / n))))
                       for k, n in per_class.items()}
    views = [View(i, view_seed(seed, i, j)) for i in train_idx for j in range(views_per_image[samples[i].label])]
    return views, {CLASS_NAMES[k]: v for k, v in sorted(views_per_image.items())}


def cached_extract(cache_dir: Path, name: str, runner: TrunkRunner, samples: list[Sample],
                   views: list[View]) -> np.ndarray:
    """Trunk features, reused from ``cache_dir`` when the exact same views were computed before."""
    key = hash_views(samples, views)
    path = cache_dir / f"{name}-{key}.npy"
    if path.exists():
        log.info("%s: reusing %s", name, path)
        return np.load(path)
    feats = extract(runner, samples, views, label=name)
    np.save(path, feats)
    return feats


def hash_views(samples: list[Sample], views: list[View]) -> str:
    import hashlib

    from . import augment

    digest = hashlib.sha256(Path(augment.__file__).read_bytes())
    for v in views:
        digest.update(f"{samples[v.sample].path.name}:{v.seed};".encode())
    return digest.hexdigest()[:16]


def labels_of(samples: list[Sample], views: list[View]) -> np.ndarray:
    return np.array([samples[v.sample].label for v in views], dtype=np.int64)


def subsample_views(samples: list[Sample], views: list[View], seed: int, per_class: int = 2000,
                    per_scarce_image: int = 20) -> list[int]:
    """A cheaper training set for the leave-one-region-out runs (indices into ``views``).

    One view per image, at most ``per_class`` per class; classes with fewer images than that
    keep up to ``per_scarce_image`` views per image.
    """
    by_sample: dict[int, list[int]] = {}
    for k, v in enumerate(views):
        by_sample.setdefault(v.sample, []).append(k)
    n_images = Counter(samples[i].label for i in by_sample)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(n_images):
        members = sorted(i for i in by_sample if samples[i].label == label)
        if n_images[label] >= per_class:
            keep += [by_sample[i][0] for i in rng.permutation(members)[:per_class]]
        else:
            keep += [k for i in members for k in by_sample[i][:per_scarce_image]]
    return sorted(keep)


def leave_one_region_out(base, samples, views_by_split, feats_by_split, cfg: FitConfig,
                         seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Retrain the top without one region of ``others`` and count how often it still says others.

    Evaluated on every view of the held-out region (augmented training views and clean
    validation/test views), none of which that run has seen. Returns the per-region summary and
    the held-out probabilities (for :mod:`training.openset`).
    """
    others = CLASS_NAMES.index("others")
    loro_train = subsample_views(samples, views_by_split["train"], seed)
    results, heldout = {}, {}
    for region in OTHERS_REGIONS:
        def keep(v: View) -> bool:
            return samples[v.sample].region() != region

        tr = [k for k in loro_train if keep(views_by_split["train"][k])]
        va = [k for k, v in enumerate(views_by_split["val"]) if keep(v)]
        held_x = np.concatenate([feats_by_split[s][[k for k, v in enumerate(views_by_split[s]) if not keep(v)]]
                                 for s in ("train", "val", "test_clean")])
        if len(held_x) == 0:
            continue
        net, _ = fit_top(base, feats_by_split["train"][tr], labels_of(samples, views_by_split["train"])[tr],
                         feats_by_split["val"][va], labels_of(samples, views_by_split["val"])[va], cfg, seed,
                         label=f"loro[{region}]")
        heldout[region] = predict_top(net, held_x)
        pred = heldout[region].argmax(1)
        results[region] = {
            "n_views": int(len(pred)),
            "others_rate": float((pred == others).mean()),
            "predicted_counts": {c: int((pred == k).sum()) for k, c in enumerate(CLASS_NAMES)},
        }
        log.info("loro %s: %s", region, results[region])
    return results, heldout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with manifest.csv and images/")
    parser.add_argument("--out", type=Path, required=True, help="output folder (models/)")
    parser.add_argument("--dicom-dir", type=Path, default=None,
                        help="real DICOMs with manifest.csv (default: <data>/../dicom-xray if present)")
    parser.add_argument("--cache", type=Path, default=Path("training/cache"), help="feature cache folder")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--views-per-class", type=int, default=4000)
    parser.add_argument("--max-views-per-image", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--loro-epochs", type=int, default=2)
    parser.add_argument("--skip-loro", action="store_true", help="skip the leave-one-region-out runs")
    parser.add_argument("--limit", type=int, default=0, help="use at most N groups per class (smoke tests)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    started = time.monotonic()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed % 2**32)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)

    samples = read_manifest(args.data)
    splits = split_by_group(samples, args.seed)
    if args.limit:
        rng = np.random.default_rng(args.seed)
        for s in SPLITS:
            by_class = {k: [i for i in splits[s] if samples[i].label == k] for k in range(len(CLASS_NAMES))}
            splits[s] = sorted(j for idx in by_class.values()
                               for j in rng.permutation(idx)[: max(2, args.limit * (3 if s == "train" else 1))])
    split_counts = {s: {c: sum(samples[i].class_name == c for i in splits[s]) for c in CLASS_NAMES} for s in SPLITS}
    log.info("split: %s", split_counts)

    base = load_imagenet()
    replace_classifier(base, len(CLASS_NAMES), args.seed)
    trunk_path = args.cache / "trunk.onnx"
    export_trunk(base, trunk_path)
    runner = TrunkRunner(trunk_path, args.threads)

    train_views, views_per_image = training_views(samples, splits["train"], args.views_per_class,
                                                  args.max_views_per_image, args.seed)
    views = {
        "train": train_views,
        "val": [View(i, None) for i in splits["val"]],
        "val_aug": [View(i, view_seed(args.seed, i, 20_000)) for i in splits["val"]],
        "test_clean": [View(i, None) for i in splits["test"]],
        "test_aug": [View(i, view_seed(args.seed, i, 10_000)) for i in splits["test"]],
    }
    log.info("views per image: %s; cached views: %s", views_per_image, {k: len(v) for k, v in views.items()})
    t0 = time.monotonic()
    feats = {name: cached_extract(args.cache, name, runner, samples, v) for name, v in views.items()}
    feature_s = time.monotonic() - t0

    cfg = FitConfig(epochs=args.epochs)
    t0 = time.monotonic()
    net, history = fit_top(base, feats["train"], labels_of(samples, views["train"]), feats["val"],
                           labels_of(samples, views["val"]), cfg, args.seed, label="main")
    fit_s = time.monotonic() - t0

    loro_summary, openset = None, None
    if not args.skip_loro:
        t0 = time.monotonic()
        regions, heldout = leave_one_region_out(
            base, samples, {k: views[k] for k in ("train", "val", "test_clean")},
            {k: feats[k] for k in ("train", "val", "test_clean")}, FitConfig(epochs=args.loro_epochs), args.seed)
        loro_summary = {"epochs": args.loro_epochs, "regions": regions}
        openset = choose_others_bias(predict_top(net, feats["val_aug"]), labels_of(samples, views["val_aug"]), heldout)
        loro_s = time.monotonic() - t0
        with torch.no_grad():
            net._fc.bias[CLASS_NAMES.index("others")] += openset["bias"]
        log.info("others logit offset %.2f (held-out others rate %.3f at 0, %.3f chosen)", openset["bias"],
                 openset["curve"][0]["heldout_others_rate_mean"],
                 next(c for c in openset["curve"] if c["bias"] == openset["bias"])["heldout_others_rate_mean"])

    onnx_path = args.out / ONNX_NAME
    check = np.stack([render_view(samples[i], None) for i in splits["test"][:: max(1, len(splits["test"]) // 16)][:16]])
    export_facts = export_onnx(net, onnx_path, MODEL_NAME, check)
    (args.out / "labels.json").write_text(json.dumps(list(CLASS_NAMES), indent=2) + "\n")
    log.info("exported %s: %s", onnx_path, export_facts)

    served = OnnxModel(onnx_path, args.threads)
    test_idx = splits["test"]
    test_images = [load_gray(samples[i].path) for i in test_idx]
    test_probs = served.classify(test_images)
    y_test = np.array([samples[i].label for i in test_idx])
    groups_test = [samples[i].group_key for i in test_idx]
    test_report = report(y_test, test_probs.argmax(1), groups_test, seed=args.seed)
    by_source = {}
    for src in sorted({samples[i].source for i in test_idx}):
        m = np.array([samples[i].source == src for i in test_idx])
        by_source[src] = {"class": samples[test_idx[int(m.argmax())]].class_name, "n": int(m.sum()),
                          "accuracy": float((test_probs.argmax(1)[m] == y_test[m]).mean())}
    aug_pred = predict_top(net, feats["test_aug"]).argmax(1)
    aug_report = report(y_test, aug_pred, groups_test, n_boot=500, seed=args.seed)
    log.info("test macro-F1 %.4f %s; augmented %.4f", test_report["macro_f1"], test_report["macro_f1_ci95"],
             aug_report["macro_f1"])

    metrics = {
        "model_name": MODEL_NAME,
        "sha256": export_facts["sha256"],
        "command": " ".join(["python -m training.train", *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "split_counts": split_counts,
        "training": {"views_per_image": views_per_image, "cached_views": {k: len(v) for k, v in views.items()},
                     "fit": cfg.__dict__, "history": history},
        "export": export_facts,
        "test": test_report,
        "test_accuracy_by_source": by_source,
        "test_augmented": {k: aug_report[k] for k in ("n", "accuracy", "macro_f1", "macro_f1_ci95", "confusion_matrix")},
        "shortcut_check": shortcut_check(served, samples, test_idx, test_images),
        "latency": latency(onnx_path, test_images[0]),
    }
    dicom_dir = args.dicom_dir or args.data.parent / "dicom-xray"
    if (dicom_dir / "manifest.csv").exists():
        metrics["dicom_check"] = dicom_check(served, dicom_dir)
        log.info("dicom check: %d/%d agree, %d errors", metrics["dicom_check"]["agree"],
                 metrics["dicom_check"]["with_expected_class"], metrics["dicom_check"]["errors"])
    metrics["timing_s"] = {"features": feature_s, "fit": fit_s}
    if loro_summary is not None:
        metrics["leave_one_region_out"] = loro_summary
        metrics["openset_calibration"] = openset
        metrics["timing_s"]["loro_and_calibration"] = loro_s
    metrics["timing_s"]["total"] = time.monotonic() - started
    write_outputs(args.out, metrics, samples, splits)
    log.info("done in %.0f s", metrics["timing_s"]["total"])
    return 0


def write_outputs(out: Path, metrics: dict, samples: list[Sample], splits: dict[str, list[int]]) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(card.render(metrics, samples, splits))


if __name__ == "__main__":
    sys.exit(main())
