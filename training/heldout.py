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
from pathlib import Path

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
TEMPERATURES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
REGION_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
OTHERS_BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
#: Share of images the calibration must still route on the held-out films (class-balanced).
MIN_COVERAGE = 0.85
#: Share of routed held-out films allowed to go to the wrong class (class-balanced).
MAX_ROUTED_WRONG = 0.03


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
              clean_features: np.ndarray, projection: Projection, cfg: HeadConfig, seed: int,
              cache: Path | None = None) -> list[FoldResult]:
    """Train one ensemble per fold on the augmented views of every image it does not hold out.

    With ``cache`` (a file named by what produced the runs), the held-out logits are saved there
    and reused, so that the calibration can be revisited without training every run again.
    """
    if cache is not None and cache.exists():
        log.info("held-out runs: reusing %s", cache)
        saved = torch.load(cache, weights_only=False)
        neutral = Ensemble(projection, [])
        return [FoldResult(f, np.asarray(saved[(f.kind, f.name)]["samples"]), neutral, saved[(f.kind, f.name)]["logits"])
                for f in folds(samples)]
    view_sample = np.array([v.sample for v in aug_views])
    results = []
    for fold in folds(samples):
        keep = ~np.isin(view_sample, np.fromiter(fold.held_out, dtype=np.int64))
        ens = train_ensemble(aug_features[keep], aug_targets.subset(np.flatnonzero(keep)), cfg, seed,
                             label=f"{fold.kind}:{fold.name}", projection=projection)
        held = np.array(sorted(fold.held_out))
        results.append(FoldResult(fold, held, ens, member_logits(ens, clean_features[held])))
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        torch.save({(r.fold.kind, r.fold.name): {"samples": r.samples, "logits": r.logits} for r in results}, tmp)
        tmp.rename(cache)
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


def dominant_class(samples: list[Sample], r: FoldResult) -> int:
    return int(np.bincount([samples[i].label for i in r.samples], minlength=len(CLASS_NAMES)).argmax())


def _balanced(values: dict[int, list[float]]) -> float:
    """Mean over classes of the mean over that class's runs: every class counts the same,
    however many sources or regions it has (``others`` has most)."""
    return float(np.mean([np.mean(v) for v in values.values() if v]))


def choose_calibration(samples: list[Sample], results: list[FoldResult], clean_features: np.ndarray | None,
                       minimum_score: float) -> dict:
    """Pick the region weight and open-set offset, then the temperature, on the held-out films.

    Each run is filed under the class most of its held-out films belong to, and every figure is
    balanced over the classes (``others`` has 16 runs, pediatric chest one).

    1. Region weight and ``others`` offset: the pair with the best class-balanced held-out
       accuracy at temperature 1 (the temperature does not change the arg-max).
    2. Temperature: the lowest one whose class-balanced share of wrong films among the routed
       ones is at most ``MAX_ROUTED_WRONG`` while at least ``MIN_COVERAGE`` are routed; if none
       reaches it, the one with the fewest wrong among routed that still routes
       ``MIN_COVERAGE``; if none routes that much, the highest coverage.
    """
    ys = [np.array([samples[i].label for i in r.samples]) for r in results]
    dominant = [dominant_class(samples, r) for r in results]
    curve = []
    for t, w, b in itertools.product(TEMPERATURES, REGION_WEIGHTS, OTHERS_BIASES):
        acc: dict[int, list[float]] = {}
        cov: dict[int, list[float]] = {}
        wrong: dict[int, list[float]] = {}
        for r, y, c in zip(results, ys, dominant):
            p = r.probs(clean_features, t, w, b)["class"]
            pred, routed = p.argmax(1), p.max(1) >= minimum_score
            acc.setdefault(c, []).append(float((pred == y).mean()))
            cov.setdefault(c, []).append(float(routed.mean()))
            wrong.setdefault(c, []).append(float((pred[routed] != y[routed]).mean()) if routed.any() else 0.0)
        curve.append({"temperature": t, "region_weight": w, "others_bias": b, "accuracy": _balanced(acc),
                      "coverage": _balanced(cov), "routed_wrong": _balanced(wrong),
                      "routed_wrong_worst": float(max(max(v) for v in wrong.values()))})
    at_one = [c for c in curve if c["temperature"] == 1.0]
    best = max(at_one, key=lambda c: (round(c["accuracy"], 4), -c["others_bias"], -c["region_weight"]))
    same = [c for c in curve if (c["region_weight"], c["others_bias"]) == (best["region_weight"], best["others_bias"])]
    ok = [c for c in same if c["routed_wrong"] <= MAX_ROUTED_WRONG and c["coverage"] >= MIN_COVERAGE]
    covering = [c for c in same if c["coverage"] >= MIN_COVERAGE]
    if ok:
        chosen = min(ok, key=lambda c: c["temperature"])
    elif covering:
        chosen = min(covering, key=lambda c: (c["routed_wrong"], c["temperature"]))
    else:
        chosen = max(same, key=lambda c: c["coverage"])
    log.info("calibration: %s", chosen)
    return {"chosen": {k: chosen[k] for k in ("temperature", "region_weight", "others_bias")},
            "chosen_figures": chosen, "min_coverage": MIN_COVERAGE, "max_routed_wrong": MAX_ROUTED_WRONG,
            "curve": curve}
