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

from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES

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


def _figures(samples: list[Sample], r: FoldResult, t: float, w: float, b: float,
             minimum_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per held-out film: correct, routed, wrong-and-routed."""
    y = np.array([samples[i].label for i in r.samples])
    p = r.probs(None, t, w, b)["class"]
    pred, routed = p.argmax(1), p.max(1) >= minimum_score
    return pred == y, routed, routed & (pred != y)


def _component(values: list[tuple[int, float, float, float]]) -> tuple[float, float, float]:
    """Class-balanced (accuracy, coverage, wrong among routed) over ``(class, acc, cov, wrong)``."""
    by_class: dict[int, list[tuple[float, float, float]]] = {}
    for c, a, cov, wr in values:
        by_class.setdefault(c, []).append((a, cov, wr))
    per = np.array([np.mean(v, axis=0) for v in by_class.values()])
    return tuple(float(x) for x in per.mean(axis=0))  # type: ignore[return-value]


def choose_calibration(samples: list[Sample], results: list[FoldResult], validation: FoldResult,
                       minimum_score: float) -> dict:
    """Pick the region weight and open-set offset, then the temperature.

    Three views of the future are weighed equally, each balanced over the classes so that
    ``others`` (16 runs) does not outvote pediatric chest (one):

    - *another hospital*: the leave-one-source-out runs, each filed under its main class;
    - *anatomy never seen*: the leave-one-region-out runs of ``others``;
    - *the same sources*: the validation split, scored by heads trained on the train split
      (without it, an offset that sends everything unsure to ``others`` would look free).

    1. Region weight and ``others`` offset: the best *worst* of the three accuracies at
       temperature 1 (the worst view decides; the temperature does not change the arg-max),
       ties going to the better mean.
    2. Temperature: the lowest whose mean wrong share among routed films is at most
       ``MAX_ROUTED_WRONG`` while ``MIN_COVERAGE`` are routed; else the fewest wrong among
       those that still route ``MIN_COVERAGE``; else temperature 1 (the model as trained).
    """
    sources = [r for r in results if r.fold.kind == "source"]
    regions = [r for r in results if r.fold.kind == "region"]
    dominant = {id(r): dominant_class(samples, r) for r in sources}
    val_y = np.array([samples[i].label for i in validation.samples])
    curve = []
    for t, w, b in itertools.product(TEMPERATURES, REGION_WEIGHTS, OTHERS_BIASES):
        comps = []
        src = []
        for r in sources:
            ok, routed, wrong = _figures(samples, r, t, w, b, minimum_score)
            src.append((dominant[id(r)], ok.mean(), routed.mean(), wrong.sum() / max(1, routed.sum())))
        comps.append(_component(src))
        reg = []
        for r in regions:
            ok, routed, wrong = _figures(samples, r, t, w, b, minimum_score)
            reg.append((0, ok.mean(), routed.mean(), wrong.sum() / max(1, routed.sum())))
        comps.append(_component(reg))
        ok, routed, wrong = _figures(samples, validation, t, w, b, minimum_score)
        comps.append(_component([(int(c), ok[val_y == c].mean(), routed[val_y == c].mean(),
                                  wrong[val_y == c].sum() / max(1, routed[val_y == c].sum()))
                                 for c in np.unique(val_y)]))
        acc, cov, rw = (float(np.mean([c[k] for c in comps])) for k in range(3))
        curve.append({"temperature": t, "region_weight": w, "others_bias": b, "accuracy": acc, "coverage": cov,
                      "routed_wrong": rw,
                      "by_component": {name: {"accuracy": c[0], "coverage": c[1], "routed_wrong": c[2]}
                                       for name, c in zip(("other_hospital", "unseen_anatomy", "same_sources"), comps)}})
    at_one = [c for c in curve if c["temperature"] == 1.0]
    best = max(at_one, key=lambda c: (round(min(v["accuracy"] for v in c["by_component"].values()), 4),
                                      round(c["accuracy"], 4), -c["others_bias"], -c["region_weight"]))
    same = [c for c in curve if (c["region_weight"], c["others_bias"]) == (best["region_weight"], best["others_bias"])]
    ok_t = [c for c in same if c["routed_wrong"] <= MAX_ROUTED_WRONG and c["coverage"] >= MIN_COVERAGE]
    covering = [c for c in same if c["coverage"] >= MIN_COVERAGE]
    if ok_t:
        chosen = min(ok_t, key=lambda c: c["temperature"])
    elif covering:
        chosen = min(covering, key=lambda c: (c["routed_wrong"], c["temperature"]))
    else:
        chosen = next(c for c in same if c["temperature"] == 1.0)
    log.info("calibration: %s", {k: v for k, v in chosen.items() if k != "by_component"})
    return {"chosen": {k: chosen[k] for k in ("temperature", "region_weight", "others_bias")},
            "chosen_figures": chosen, "min_coverage": MIN_COVERAGE, "max_routed_wrong": MAX_ROUTED_WRONG,
            "curve": curve}
