"""Leave-one-source-out and leave-one-region-out runs: what another hospital would see.

A random split scores films of the sources the model trained on; another hospital's films are
not like that. Each run here trains the heads without one whole source (every source with at
least ``MIN_SOURCE_IMAGES`` images) or without one whole region of ``others``, and scores the
held-out films as stored. The out-of-fold predictions also choose the calibration (temperature,
region weight, open-set offset) that the shipped model uses, so that the score means the same
thing on films unlike the training pool.

The principal-component projection is fitted once on every training view (no labels); the
heads, which carry all the supervision, never see the held-out films.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from bodypart_router.classes import CLASS_NAMES, REGION_NAMES

from .data import Sample
from .features import View
import torch

from .heads import Ensemble, HeadConfig, Projection, Targets, calibrated, member_logits, train_ensemble
from .labels import region_of

log = logging.getLogger(__name__)

MIN_SOURCE_IMAGES = 20
#: Regions of ``others`` held out one at a time.
OTHERS_REGIONS = ("pelvis_hip", "skull", "dental", "shoulder_arm", "elbow_forearm", "hand_wrist",
                  "thigh_knee_leg", "ankle_foot")
#: Calibration candidates searched on the out-of-fold predictions.
TEMPERATURES = (1.0, 1.5, 2.0, 2.5, 3.0)
REGION_WEIGHTS = (0.0, 0.25, 0.5, 0.75)
OTHERS_BIASES = (0.0, 0.5, 1.0, 1.5)
#: Share of images the calibration must still route on the held-out films.
MIN_COVERAGE = 0.85


@dataclass(frozen=True)
class Fold:
    kind: str  # "source" or "region"
    name: str
    held_out: frozenset[int]  # sample indices


def folds(samples: list[Sample]) -> list[Fold]:
    out = []
    sources = sorted({s.source for s in samples})
    for src in sources:
        idx = frozenset(i for i, s in enumerate(samples) if s.source == src)
        if len(idx) >= MIN_SOURCE_IMAGES:
            out.append(Fold("source", src, idx))
    for region in OTHERS_REGIONS:
        idx = frozenset(i for i, s in enumerate(samples) if region_of(s) == region)
        if idx:
            out.append(Fold("region", region, idx))
    return out


@dataclass
class FoldResult:
    fold: Fold
    samples: np.ndarray  # held-out sample indices
    ensemble: Ensemble
    logits: dict[str, torch.Tensor]  # member logits of the held-out films as stored

    def probs(self, clean_features: np.ndarray | None, temperature: float, region_weight: float,
              others_bias: float) -> dict[str, np.ndarray]:
        self.ensemble.temperature = temperature
        self.ensemble.region_weight = region_weight
        self.ensemble.others_bias = others_bias
        return calibrated(self.ensemble, self.logits)


def run_folds(samples: list[Sample], aug_views: list[View], aug_features: np.ndarray, aug_targets: Targets,
              clean_features: np.ndarray, projection: Projection, cfg: HeadConfig, seed: int) -> list[FoldResult]:
    """Train one ensemble per fold on the augmented views of every image it does not hold out."""
    view_sample = np.array([v.sample for v in aug_views])
    results = []
    for fold in folds(samples):
        keep = ~np.isin(view_sample, np.fromiter(fold.held_out, dtype=np.int64))
        ens = train_ensemble(aug_features[keep], aug_targets.subset(np.flatnonzero(keep)), cfg, seed,
                             label=f"{fold.kind}:{fold.name}", projection=projection)
        held = np.array(sorted(fold.held_out))
        results.append(FoldResult(fold, held, ens, member_logits(ens, clean_features[held])))
    return results


def fold_table(samples: list[Sample], results: list[FoldResult], clean_features: np.ndarray,
               calibration: dict, minimum_score: float) -> list[dict]:
    """One row per held-out source or region: accuracy, coverage, confidently wrong share."""
    rows = []
    for r in results:
        probs = r.probs(clean_features, **calibration)
        y = np.array([samples[i].label for i in r.samples])
        pred, score = probs["class"].argmax(1), probs["class"].max(1)
        routed = score >= minimum_score
        region_true = np.array([REGION_NAMES.index(g) if (g := region_of(samples[i])) else -1 for i in r.samples])
        known = region_true >= 0
        rows.append({
            "kind": r.fold.kind, "name": r.fold.name, "n": int(len(y)),
            "classes": {c: int((y == k).sum()) for k, c in enumerate(CLASS_NAMES) if (y == k).any()},
            "accuracy": float((pred == y).mean()),
            "coverage": float(routed.mean()),
            "confidently_wrong": float((routed & (pred != y)).mean()),
            "routed_wrong": float((pred[routed] != y[routed]).mean()) if routed.any() else 0.0,
            "region_accuracy": float((probs["region"].argmax(1)[known] == region_true[known]).mean()) if known.any() else None,
            "predicted": {c: int((pred == k).sum()) for k, c in enumerate(CLASS_NAMES) if (pred == k).any()},
        })
    return rows


def choose_calibration(samples: list[Sample], results: list[FoldResult], clean_features: np.ndarray,
                       minimum_score: float) -> dict:
    """Pick temperature, region weight and open-set offset on the held-out films.

    Among the candidates that still route ``MIN_COVERAGE`` of the pooled held-out films, keep
    the one with the lowest mean-plus-worst confidently wrong share over the folds (every fold
    counts equally, so a small source weighs as much as a large one, and the worst row weighs
    most); ties go to the higher coverage.
    """
    ys = [np.array([samples[i].label for i in r.samples]) for r in results]
    curve = []
    for t, w, b in itertools.product(TEMPERATURES, REGION_WEIGHTS, OTHERS_BIASES):
        wrong, routed_n, total = [], 0, 0
        for r, y in zip(results, ys):
            p = r.probs(clean_features, t, w, b)["class"]
            pred, score = p.argmax(1), p.max(1)
            routed = score >= minimum_score
            wrong.append(float((routed & (pred != y)).mean()))
            routed_n += int(routed.sum())
            total += len(y)
        curve.append({"temperature": t, "region_weight": w, "others_bias": b,
                      "coverage": routed_n / max(1, total), "confidently_wrong_mean": float(np.mean(wrong)),
                      "confidently_wrong_worst": float(np.max(wrong))})
    allowed = [c for c in curve if c["coverage"] >= MIN_COVERAGE] or curve
    best = min(allowed, key=lambda c: (c["confidently_wrong_mean"] + c["confidently_wrong_worst"], -c["coverage"]))
    log.info("calibration: %s", best)
    return {"chosen": {k: best[k] for k in ("temperature", "region_weight", "others_bias")},
            "chosen_figures": best, "min_coverage": MIN_COVERAGE, "curve": curve}
