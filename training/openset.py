"""Open-set calibration of the ``others`` class.

``others`` has to catch anatomy that training never showed (pelvis, feet, dental films ...).
A classifier trained on a closed set tends to send such images to whichever named class is
nearest, often the scarce, heavily weighted abdominal class. A constant added to the ``others``
logit moves borderline images back to ``others``.

The offset is chosen without the test split: the leave-one-region-out runs give images of
anatomy unseen by their model (the open-set side), augmented validation views give the named
classes under distribution shift (the cost side). The offset with the highest held-out others
rate is kept among those that send at most ``max_cost`` (0.5 %) more named-class validation views
to ``others`` than no offset does. Macro-F1 is not the cost measure: with eight abdominal
validation images it moves by whole steps on a single image.
"""

from __future__ import annotations

import numpy as np

from bodypart_router.classes import CLASS_NAMES

from .metrics import macro_f1

OTHERS = CLASS_NAMES.index("others")
#: Candidate offsets added to the others logit.
GRID = tuple(float(b) for b in np.round(np.arange(0.0, 3.01, 0.25), 2))


def biased_argmax(probs: np.ndarray, bias: float) -> np.ndarray:
    """Arg-max after adding ``bias`` to the others logit (log-probability)."""
    logits = np.log(np.clip(probs, 1e-12, 1.0))
    logits[:, OTHERS] += bias
    return logits.argmax(1)


def choose_others_bias(val_probs: np.ndarray, val_y: np.ndarray, heldout_probs: dict[str, np.ndarray],
                       max_cost: float = 0.005) -> dict:
    """Pick the others-logit offset; return it with the whole trade-off curve for the card."""
    named = val_y != OTHERS

    def moved(pred: np.ndarray) -> float:
        return float((pred[named] == OTHERS).mean()) if named.any() else 0.0

    base_moved = moved(val_probs.argmax(1))
    curve = []
    for bias in GRID:
        pred = biased_argmax(val_probs, bias)
        recalls = [float((pred[val_y == k] == k).mean()) for k in range(len(CLASS_NAMES))
                   if k != OTHERS and (val_y == k).any()]
        rates = {region: float((biased_argmax(p, bias) == OTHERS).mean()) for region, p in heldout_probs.items()}
        curve.append({"bias": bias, "val_aug_named_to_others": moved(pred),
                      "val_aug_named_recall_mean": float(np.mean(recalls)) if recalls else 0.0,
                      "val_aug_macro_f1": macro_f1(val_y, pred),
                      "heldout_others_rate_mean": float(np.mean(list(rates.values()))) if rates else 0.0,
                      "heldout_others_rate": rates})
    allowed = [c for c in curve if c["val_aug_named_to_others"] <= base_moved + max_cost]
    chosen = max(allowed, key=lambda c: (c["heldout_others_rate_mean"], -c["bias"]))
    return {"bias": chosen["bias"], "max_cost": max_cost, "val_aug_named_to_others_unbiased": base_moved,
            "curve": curve}
