"""Open-set calibration of the ``others`` class.

``others`` has to catch anatomy that training never showed (pelvis, feet, dental films ...).
A classifier trained on a closed set tends to send such images to whichever named class is
nearest, often the scarce, heavily weighted abdominal class. A constant added to the ``others``
logit moves borderline images back to ``others``.

The offset is chosen without the test split: the leave-one-region-out runs give images of
anatomy unseen by their model (the open-set side), augmented validation views give the named
classes under distribution shift (the cost side). The largest offset that costs at most
``tolerance`` of augmented-validation macro-F1 is kept.
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
                       tolerance: float = 0.005) -> dict:
    """Pick the others-logit offset; return it with the whole trade-off curve for the card."""
    base_f1 = macro_f1(val_y, val_probs.argmax(1))
    curve = []
    for bias in GRID:
        f1 = macro_f1(val_y, biased_argmax(val_probs, bias))
        rates = {region: float((biased_argmax(p, bias) == OTHERS).mean()) for region, p in heldout_probs.items()}
        curve.append({"bias": bias, "val_aug_macro_f1": f1,
                      "heldout_others_rate_mean": float(np.mean(list(rates.values()))) if rates else 0.0,
                      "heldout_others_rate": rates})
    allowed = [c for c in curve if c["val_aug_macro_f1"] >= base_f1 - tolerance]
    chosen = max(allowed, key=lambda c: (c["heldout_others_rate_mean"], -c["bias"]))
    return {"bias": chosen["bias"], "tolerance": tolerance, "val_aug_macro_f1_unbiased": base_f1, "curve": curve}
