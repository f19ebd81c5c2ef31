"""Reproduce the shipped model: ``python -m training.train --data ../shared/data/xray-bodypart --out models/``.

Pipeline (about 55 minutes on a 2-core CPU):

1. split the manifest by ``group_key`` into train / val / test (:mod:`training.data`), and derive
   the region and view targets (:mod:`training.labels`);
2. load ImageNet EfficientNet-Lite0 strictly and export it, frozen, as the feature backbone;
3. cache backbone features of augmented, turned and inverted views of every image, of every
   image as stored, of turned and inverted test images, and more turned views of every film
   outside the chest for the orientation members (:mod:`training.views`); and of every film
   negated and turned by each quarter, with the second look serving takes at each where unsure
   (:mod:`training.second_looks`);
4. leave-one-source-out and leave-one-region-out runs (:mod:`training.heldout`), which choose the
   calibration (temperature, region weight, open-set offset) on films unlike the training pool,
   and leave-one-source-out runs of the polarity and rotation rules (:mod:`training.second_looks`);
5. train the shipped ensemble of heads on the train and validation splits (:mod:`training.heads`);
6. export backbone + heads to ONNX and check it against PyTorch (:mod:`training.export`);
7. evaluate the exported model: test split, turned and inverted copies, shortcut check, the
   shared real DICOMs, latency;
8. write ``labels.json``, ``metrics.json`` and ``MODEL_CARD.md`` next to the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES, ROTATIONS, VIEW_NAMES
from bodypart_router.inference import polarity as polarity_rule
from bodypart_router.inference import rotation as rotation_rule

from . import card
from . import heads as heads_module
from .cache import cached_features, views_key
from .data import SPLITS, Sample, load_gray, read_manifest, split_by_group
from .evaluate import OnnxModel, dicom_check, latency, served_latency, shortcut_check
from .export import export_onnx
from .features import BackboneRunner, View, export_backbone, render_view
from .heads import IGNORE, HeadConfig, Targets, fit_projection, member_logits, train_ensemble
from .heldout import Fold, FoldResult, choose_calibration, fold_table, run_folds
from .labels import fine_group, targets
from .metrics import macro_f1, report
from .model import load_imagenet
from . import orientation as orientation_module
from . import second_looks as second_looks_module
from .orientation import ServingEnsemble, orientation_config, predict_serving, train_orientation
from .second_looks import (QUARTER_LOOKS, QUARTER_VIEWS, LookRunner, NegativeRunner, TurnedRunner, head_probabilities,
                           heldout_orientation, polarity_accuracies, rotation_accuracies)
from .views import augmented_views, clean_views, quarter_views, turned_views

log = logging.getLogger("training")

MODEL_NAME = "effnetlite0-bodypart-v2"
ONNX_NAME = "bodypart_router.onnx"
#: The plugin's and the CLI's default ``MinimumScore``: calibration is chosen for it.
MINIMUM_SCORE = 0.5


def view_targets(samples: list[Sample], views: list[View]) -> Targets:
    """Head targets of each view: class, region and view of its image; the rotation of the turn
    when the image is stored upright; the polarity flag."""
    per_sample = {i: targets(samples[i]) for i in {v.sample for v in views}}
    return Targets(
        cls=np.array([samples[v.sample].label for v in views], dtype=np.int64),
        region=np.array([per_sample[v.sample].region for v in views], dtype=np.int64),
        view=np.array([per_sample[v.sample].view for v in views], dtype=np.int64),
        rotation=np.array([v.turns % 4 if per_sample[v.sample].upright else IGNORE for v in views], dtype=np.int64),
        inverted=np.array([int(v.inverted) for v in views], dtype=np.int64),
    )


def limit_samples(samples: list[Sample], splits: dict[str, list[int]], limit: int, seed: int) -> list[Sample]:
    """At most ``limit`` images per (class, source), for smoke tests; splits are recomputed."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for key in sorted({(s.label, s.source) for s in samples}):
        members = [i for i, s in enumerate(samples) if (s.label, s.source) == key]
        keep += sorted(rng.permutation(members)[:limit].tolist())
    return [samples[i] for i in sorted(keep)]


def head_report(probs: dict[str, np.ndarray], t: Targets, minimum_score: float) -> dict:
    """Accuracy of every head where its target is known, and the routed figures of the class."""
    out: dict = {}
    for name, y in t.by_head().items():
        known = y != IGNORE
        out[f"{name}_accuracy"] = float((probs[name].argmax(1)[known] == y[known]).mean()) if known.any() else None
        out[f"{name}_n"] = int(known.sum())
    pred, score = probs["class"].argmax(1), probs["class"].max(1)
    routed = score >= minimum_score
    out["coverage"] = float(routed.mean())
    out["routed_wrong"] = float((pred[routed] != t.cls[routed]).mean()) if routed.any() else 0.0
    out["macro_f1"] = macro_f1(t.cls, pred)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with manifest.csv and images/")
    parser.add_argument("--out", type=Path, required=True, help="output folder (models/)")
    parser.add_argument("--dicom-dir", type=Path, default=None,
                        help="real DICOMs with manifest.csv (default: <data>/../dicom-xray if present)")
    parser.add_argument("--cache", type=Path, default=Path("training/cache"), help="feature cache folder")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=HeadConfig.members)
    parser.add_argument("--epochs", type=int, default=HeadConfig.epochs)
    parser.add_argument("--skip-heldout", action="store_true",
                        help="skip the leave-one-source/region-out runs (calibration stays neutral)")
    parser.add_argument("--limit", type=int, default=0, help="at most N images per class and source (smoke tests)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    started = time.monotonic()
    timing: dict[str, float] = {}
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed % 2**32)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    cfg = HeadConfig(members=args.members, epochs=args.epochs)

    samples = read_manifest(args.data)
    splits = split_by_group(samples, args.seed)
    if args.limit:
        samples = limit_samples(samples, splits, args.limit, args.seed)
        splits = split_by_group(samples, args.seed)
    split_counts = {s: {c: sum(samples[i].class_name == c for i in splits[s]) for c in CLASS_NAMES} for s in SPLITS}
    log.info("split: %s", split_counts)

    base = load_imagenet()
    backbone_path = args.cache / "backbone.onnx"
    export_backbone(base, backbone_path)
    runner = BackboneRunner(backbone_path, args.threads)

    views = {"clean": clean_views(list(range(len(samples)))), "turned": turned_views(splits["test"], args.seed + 1),
             "aug": augmented_views(samples, args.seed), "quarters": quarter_views(samples, args.seed)}
    t0 = time.monotonic()
    feats = {name: cached_features(args.cache, name, runner, samples, v) for name, v in views.items()}
    # every film as stored, negated and turned by each quarter, and the second look serving takes
    # at each of those where unsure; and the second looks of the turned and inverted test copies
    runners = {"negative": NegativeRunner(runner), **{f"turn{k}": TurnedRunner(runner, k) for k in (1, 2, 3)}}
    runners.update({"look": LookRunner(runner), "look-negative": LookRunner(runners["negative"]),
                    **{f"look-turn{k}": LookRunner(runners[f"turn{k}"]) for k in (1, 2, 3)}})
    film_views = {"clean": feats["clean"], **{name: cached_features(args.cache, f"{name}-clean", r, samples, views["clean"])
                                              for name, r in runners.items()}}
    turned_looks = cached_features(args.cache, "look-turned", LookRunner(runner), samples, views["turned"])
    timing["features"] = time.monotonic() - t0
    aug_t = view_targets(samples, views["aug"])
    aug_sample = np.array([v.sample for v in views["aug"]])
    fit_split = np.isin(aug_sample, np.array(splits["train"] + splits["val"]))
    projection = fit_projection(feats["aug"][fit_split], cfg.components, seed=args.seed)

    calibration = {"temperature": 1.0, "region_weight": 0.5, "others_bias": 0.0}
    heldout: dict | None = None
    if not args.skip_heldout:
        t0 = time.monotonic()
        runs_key = hashlib.sha256(f"{views_key(samples, views['aug'])}:{views_key(samples, views['clean'])}:"
                                  f"{cfg!r}:{args.seed}:".encode() + Path(heads_module.__file__).read_bytes()).hexdigest()[:16]
        results = run_folds(samples, views["aug"], feats["aug"], aug_t, feats["clean"], projection, cfg, args.seed,
                            cache=args.cache / f"heldout-{runs_key}.pt")
        train_only = np.isin(aug_sample, np.array(splits["train"]))
        val_heads = train_ensemble(feats["aug"][train_only], aug_t.subset(np.flatnonzero(train_only)), cfg, args.seed,
                                   label="validation", projection=projection)
        val_idx = np.array(splits["val"])
        validation = FoldResult(Fold("validation", "val split", frozenset(splits["val"])), val_idx, val_heads,
                                member_logits(val_heads, feats["clean"][val_idx]))
        choice = choose_calibration(samples, results, validation, MINIMUM_SCORE)
        calibration = choice["chosen"]
        neutral = {"temperature": 1.0, "region_weight": 0.0, "others_bias": 0.0}
        heldout = {
            "minimum_score": MINIMUM_SCORE,
            "calibration": choice,
            "rows": fold_table(samples, results, feats["clean"], calibration, MINIMUM_SCORE),
            "rows_uncalibrated_class_head_only": fold_table(samples, results, feats["clean"], neutral, MINIMUM_SCORE),
            "by_group": group_table(samples, results, calibration),
            "single_member": single_member_figures(samples, results, calibration),
        }
        quarters_sample = np.array([v.sample for v in views["quarters"]], dtype=np.int64)
        orientation_key = hashlib.sha256(f"{runs_key}:{views_key(samples, views['quarters'])}".encode() + b"".join(
            Path(m.__file__).read_bytes() for m in (orientation_module, second_looks_module, polarity_rule, rotation_rule)
        )).hexdigest()[:16]
        heldout["orientation"] = heldout_orientation(
            samples, np.concatenate([aug_sample, quarters_sample]), np.concatenate([feats["aug"], feats["quarters"]]),
            aug_t.concat(view_targets(samples, views["quarters"])), film_views, projection, cfg, args.seed, cache=args.cache / f"heldout-orientation-{orientation_key}.json")
        timing["heldout"] = time.monotonic() - t0

    t0 = time.monotonic()
    fit_t = aug_t.subset(np.flatnonzero(fit_split))
    ensemble = train_ensemble(feats["aug"][fit_split], fit_t, cfg, args.seed, label="final", projection=projection)
    ensemble.temperature, ensemble.region_weight, ensemble.others_bias = (
        calibration["temperature"], calibration["region_weight"], calibration["others_bias"])
    quarters_fit = np.isin(np.array([v.sample for v in views["quarters"]], dtype=np.int64),
                           np.array(splits["train"] + splits["val"]))
    orientation_t = fit_t.concat(view_targets(samples, views["quarters"]).subset(np.flatnonzero(quarters_fit)))
    orientation_features = np.concatenate([feats["aug"][fit_split], feats["quarters"][quarters_fit]])
    ensemble = ServingEnsemble(ensemble, train_orientation(orientation_features, orientation_t, projection, cfg, args.seed))
    del orientation_features
    timing["fit"] = time.monotonic() - t0
    torch.save(ensemble, args.cache / "final-ensemble.pt")  # for analysis; the shipped artefact is the ONNX file

    onnx_path = args.out / ONNX_NAME
    check_idx = splits["test"][:: max(1, len(splits["test"]) // 16)][:16]
    check = np.stack([render_view(samples[i], View(i, None)) for i in check_idx])
    export_facts = export_onnx(base, ensemble, onnx_path, MODEL_NAME, check)
    (args.out / "labels.json").write_text(json.dumps(list(CLASS_NAMES), indent=2) + "\n")
    log.info("exported %s: %s", onnx_path, export_facts)

    # --- evaluation of the shipped model -----------------------------------------------------
    test_idx = np.array(splits["test"])
    test_upright = np.array([i for i in test_idx if targets(samples[i]).upright], dtype=np.int64)
    clean_t = view_targets(samples, views["clean"])
    test_probs = predict_serving(ensemble, feats["clean"][test_idx], film_views["look"][test_idx])
    y_test = clean_t.cls[test_idx]
    test_report = report(y_test, test_probs["class"].argmax(1), [samples[i].group_key for i in test_idx], seed=args.seed)
    test_heads = head_report(test_probs, clean_t.subset(test_idx), MINIMUM_SCORE)
    by_source = {}
    for src in sorted({samples[i].source for i in test_idx}):
        m = np.array([samples[i].source == src for i in test_idx])
        by_source[src] = {"n": int(m.sum()), "accuracy": float((test_probs["class"].argmax(1)[m] == y_test[m]).mean())}
    turned_t = view_targets(samples, views["turned"])
    turned_probs = predict_serving(ensemble, feats["turned"], turned_looks)
    turned = {"turned": head_report({k: v[0::2] for k, v in turned_probs.items()}, turned_t.subset(np.arange(0, len(views["turned"]), 2)), MINIMUM_SCORE),
              "inverted": head_report({k: v[1::2] for k, v in turned_probs.items()}, turned_t.subset(np.arange(1, len(views["turned"]), 2)), MINIMUM_SCORE),
              "upright_macro_f1": test_heads["macro_f1"],
              "upright_rotation_accuracy": test_heads["rotation_accuracy"],
              "upright_inverted_accuracy": test_heads["inverted_accuracy"],
              "polarity_alone_and_served": polarity_accuracies(
                  *(head_probabilities(ensemble.projection, ensemble.orientation, film_views[k][test_idx], "inverted")[:, 1]
                    for k in ("clean", "look", "negative", "look-negative"))),
              "rotation_alone_and_served": rotation_accuracies(*(np.stack(
                  [head_probabilities(ensemble.projection, ensemble.orientation, film_views[k][test_upright], "rotation")
                   for k in keys], axis=1) for keys in (QUARTER_VIEWS, QUARTER_LOOKS)))}
    turned["rotation_by_group"] = rotation_by_group(samples, views["turned"][0::2], turned_t.subset(
        np.arange(0, len(views["turned"]), 2)), turned_probs["rotation"][0::2])
    log.info("test macro-F1 %.4f; heads %s; turned/inverted %s", test_report["macro_f1"], test_heads, turned)

    served = OnnxModel(onnx_path, args.threads)
    test_images = [load_gray(samples[i].path) for i in test_idx]
    metrics = {
        "model_name": MODEL_NAME,
        "sha256": export_facts["sha256"],
        "command": " ".join(["python -m training.train", *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "split_counts": split_counts,
        "outputs": {"class": list(CLASS_NAMES), "region": list(REGION_NAMES), "view": list(VIEW_NAMES),
                    "rotation": list(ROTATIONS), "inverted": [False, True]},
        "training": {"views": {k: len(v) for k, v in views.items()}, "fit_views": int(fit_split.sum()),
                     "orientation_fit_views": int(fit_split.sum() + quarters_fit.sum()),
                     "heads": {k: v for k, v in cfg.__dict__.items()}, "calibration": calibration,
                     "orientation_heads": {k: v for k, v in orientation_config(cfg).__dict__.items()},
                     "targets_known": {k: int((v != IGNORE).sum()) for k, v in fit_t.by_head().items()}},
        "export": export_facts,
        "test": test_report,
        "test_heads": test_heads,
        "test_accuracy_by_source": by_source,
        "test_turned_and_inverted": turned,
        "shortcut_check": shortcut_check(served, samples, list(test_idx), test_images),
        "latency": {**latency(onnx_path, test_images[0]), **served_latency(onnx_path, test_images)},
    }
    if heldout is not None:
        metrics["heldout"] = heldout
    dicom_dir = args.dicom_dir or args.data.parent / "dicom-xray"
    if (dicom_dir / "manifest.csv").exists():
        metrics["dicom_check"] = dicom_check(served, dicom_dir)
        log.info("dicom check: %d/%d agree, %d errors", metrics["dicom_check"]["agree"],
                 metrics["dicom_check"]["with_expected_class"], metrics["dicom_check"]["errors"])
    timing["total"] = time.monotonic() - started
    metrics["timing_s"] = timing
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(card.render(metrics, samples, splits))
    log.info("done in %.0f s", timing["total"])
    return 0


def rotation_by_group(samples: list[Sample], views: list[View], t: Targets, rotation: np.ndarray) -> dict:
    """Rotation accuracy of turned copies per kind of film: limbs, whose upright is a convention,
    are where it falls short, and the mean over thousands of chests would hide them."""
    hits: dict[str, list[bool]] = {}
    for k, v in enumerate(views):
        if t.rotation[k] != IGNORE:
            hits.setdefault(fine_group(samples[v.sample]), []).append(bool(rotation[k].argmax() == t.rotation[k]))
    return {g: {"n": len(h), "accuracy": float(np.mean(h))} for g, h in sorted(hits.items())}


def group_table(samples: list[Sample], results, calibration: dict) -> list[dict]:
    """Held-out figures per fine group (region, chest age and view) over the source folds.

    Every image is held out exactly once by its source fold, so this is how the model does on
    each kind of film when its hospital was never seen.
    """
    by_group: dict[str, list[tuple[int, int, float]]] = {}
    for r in results:
        if r.fold.kind != "source":
            continue
        p = r.probs(None, **calibration)["class"]
        for k, i in enumerate(r.samples):
            by_group.setdefault(fine_group(samples[i]), []).append((samples[i].label, int(p[k].argmax()), float(p[k].max())))
    rows = []
    for g, items in sorted(by_group.items()):
        y, pred, score = (np.array(v) for v in zip(*items))
        routed = score >= MINIMUM_SCORE
        rows.append({"group": g, "n": len(items), "accuracy": float((y == pred).mean()),
                     "coverage": float(routed.mean()), "confidently_wrong": float((routed & (y != pred)).mean())})
    return rows


def single_member_figures(samples: list[Sample], results, calibration: dict) -> dict:
    """Pooled held-out figures of one member against the ensemble (what the ensemble buys)."""
    out = {}
    for label, members in (("ensemble", None), ("one_member", slice(0, 1))):
        wrong, routed_n, correct, total = 0, 0, 0, 0
        for r in results:
            logits = r.logits if members is None else {k: v[members] for k, v in r.logits.items()}
            saved = r.logits
            r.logits = logits
            p = r.probs(None, **calibration)["class"]
            r.logits = saved
            y = np.array([samples[i].label for i in r.samples])
            routed = p.max(1) >= MINIMUM_SCORE
            wrong += int((routed & (p.argmax(1) != y)).sum())
            routed_n += int(routed.sum())
            correct += int((p.argmax(1) == y).sum())
            total += len(y)
        out[label] = {"accuracy": correct / total, "coverage": routed_n / total,
                      "routed_wrong": wrong / max(1, routed_n)}
    return out


if __name__ == "__main__":
    sys.exit(main())
