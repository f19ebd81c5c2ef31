"""Members dedicated to how the film is stored: rotation, polarity and view.

The class and region members share one hidden layer among five heads, a layer sized for what
the held-out runs showed about the class. How a film is turned or inverted is a different
question, asked of the same frozen features, and it gains from a wider layer of its own and a
longer fit (limbs, whose upright is a convention, are where the shared layer fell short). These
members take over the rotation, polarity and view outputs of the shipped ensemble; they never
touch the class, so the calibration chosen on the held-out runs is not affected.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bodypart_router.inference import polarity, rotation

from .heads import IGNORE, Ensemble, HeadConfig, Member, Projection, Targets, fit_member

#: The outputs these members own.
ORIENTATION_HEADS = ("view", "rotation", "inverted")


def orientation_config(base: HeadConfig) -> HeadConfig:
    return HeadConfig(components=base.components, hidden=512, dropout=0.2, epochs=20, batch_size=base.batch_size,
                      lr=base.lr, weight_decay=base.weight_decay, label_smoothing=0.05,
                      head_weights={"class": 0.0, "region": 0.0, "view": 0.5, "rotation": 1.0, "inverted": 1.0},
                      members=2)


class ServingEnsemble(Ensemble):
    """The class and region members, plus orientation members for view, rotation and polarity."""

    def __init__(self, base: Ensemble, orientation: list[Member]) -> None:
        super().__init__(base.projection, list(base.members), base.temperature, base.region_weight, base.others_bias)
        self.orientation = nn.ModuleList(orientation)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = self.combine(self.member_logits(features))
        if len(self.orientation):
            z = self.projection(features)
            outs = [m(z) for m in self.orientation]
            for name in ORIENTATION_HEADS:
                probs[name] = torch.stack([F.softmax(o[name], dim=1) for o in outs]).mean(0)
        return probs


def train_orientation(features: np.ndarray, t: Targets, projection: Projection, base: HeadConfig,
                      seed: int, members: int | None = None) -> list[Member]:
    """Fit the orientation members (``members``, default as configured) on the same projected
    features (class and region masked)."""
    cfg = orientation_config(base)
    if members is not None:
        cfg = dataclasses.replace(cfg, members=members)
    with torch.no_grad():
        z = torch.cat([projection(torch.from_numpy(features[i:i + 8192].astype(np.float32)))
                       for i in range(0, len(features), 8192)]).numpy()
    masked = Targets(np.full_like(t.cls, IGNORE), np.full_like(t.region, IGNORE), t.view, t.rotation, t.inverted)
    return [fit_member(z, masked, cfg, seed + 100 + k, label=f"orientation[{k}]") for k in range(cfg.members)]


def _outputs(ensemble: ServingEnsemble, features: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    ensemble.eval()
    out: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            for name, p in ensemble(torch.from_numpy(features[i:i + batch_size].astype(np.float32))).items():
                out.setdefault(name, []).append(p.numpy())
    return {name: np.concatenate(v) for name, v in out.items()}


def predict_serving(ensemble: ServingEnsemble, features: np.ndarray, looks: np.ndarray,
                    batch_size: int = 2048) -> dict[str, np.ndarray]:
    """Every output of the shipped model for cached features, as the router serves it: the
    exported graph's outputs, with polarity and rotation settled by the second looks' features
    (``looks``, one per view) where the first answer is unsure
    (:mod:`bodypart_router.inference.second_look`)."""
    probs = _outputs(ensemble, features, batch_size)
    second = _outputs(ensemble, looks, batch_size)
    if "inverted" in probs:
        p = polarity.decide(probs["inverted"][:, 1], second["inverted"][:, 1])
        probs["inverted"] = np.stack([1.0 - p, p], axis=1)
    if "rotation" in probs:
        probs["rotation"] = rotation.decide(probs["rotation"], second["rotation"])
    return probs
