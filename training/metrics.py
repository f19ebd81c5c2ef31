"""Classification metrics with confidence intervals.

Per-class intervals come from a bootstrap over ``group_key`` groups (images of one patient or
one picture are resampled together); a Wilson interval is given for recall as well because it
behaves better than the bootstrap for a class with a handful of test images (abdominal).
"""

from __future__ import annotations

import math

import numpy as np

from bodypart_router.inference.classes import CLASS_NAMES

K = len(CLASS_NAMES)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``[true, predicted]`` counts (optionally weighted)."""
    return np.bincount(y_true * K + y_pred, weights=weights, minlength=K * K).reshape(K, K)


def prf_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class; 0 where undefined."""
    tp = np.diag(cm).astype(np.float64)
    pred = cm.sum(axis=0)
    true = cm.sum(axis=1)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes present in ``y_true``."""
    _, _, f1 = prf_from_confusion(confusion(y_true, y_pred))
    present = np.bincount(y_true, minlength=K) > 0
    return float(f1[present].mean())


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def report(y_true: np.ndarray, y_pred: np.ndarray, groups: list[str], n_boot: int = 2000,
           seed: int = 0) -> dict:
    """Per-class precision/recall/F1 with 95 % group-bootstrap CIs, macro-F1, confusion matrix."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    cm = confusion(y_true, y_pred)
    precision, recall, f1 = prf_from_confusion(cm)
    _, group_idx = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(group_idx.max()) + 1 if len(group_idx) else 0
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, 3, K))
    boot_macro = np.empty(n_boot)
    present = np.bincount(y_true, minlength=K) > 0
    for b in range(n_boot):
        # resample groups with replacement: each image weighted by its group's draw count
        draws = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        bcm = confusion(y_true, y_pred, weights=draws[group_idx].astype(np.float64))
        bp, br, bf = prf_from_confusion(bcm)
        boot[b] = (bp, br, bf)
        boot_macro[b] = bf[present].mean()
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    per_class = {}
    for k, name in enumerate(CLASS_NAMES):
        n_true = int(cm[k].sum())
        per_class[name] = {
            "support": n_true,
            "precision": float(precision[k]), "precision_ci95": [float(lo[0, k]), float(hi[0, k])],
            "recall": float(recall[k]), "recall_ci95": [float(lo[1, k]), float(hi[1, k])],
            "recall_wilson95": list(wilson(int(cm[k, k]), n_true)),
            "f1": float(f1[k]), "f1_ci95": [float(lo[2, k]), float(hi[2, k])],
        }
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "macro_f1": float(f1[present].mean()),
        "macro_f1_ci95": [float(np.percentile(boot_macro, 2.5)), float(np.percentile(boot_macro, 97.5))],
        "per_class": per_class,
        "confusion_matrix": {"rows_true_cols_pred": list(CLASS_NAMES), "counts": cm.astype(int).tolist()},
    }
