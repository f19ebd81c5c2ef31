"""The trained part of the model: heads on the frozen backbone's features, and their training.

One member is a fixed projection (principal components of the cached features, computed once)
followed by a small MLP shared by five heads: class (5), region (14), view (2), rotation (4) and
polarity (2). The shipped model averages several members trained from different seeds (an
ensemble: members disagree on what none of them learned, which lowers the score there).

Because the backbone is frozen, the augmentations that make the class heads invariant to turns
and polarity cannot remove orientation or polarity from the features the other heads read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES, ROTATIONS, VIEW_NAMES

log = logging.getLogger(__name__)

HEADS: dict[str, int] = {"class": len(CLASS_NAMES), "region": len(REGION_NAMES), "view": len(VIEW_NAMES),
                         "rotation": len(ROTATIONS), "inverted": 2}
IGNORE = -1


@dataclass(frozen=True)
class HeadConfig:
    """The recipe of the heads; chosen by the leave-one-source-out figures (see the model card)."""

    components: int = 512
    hidden: int = 256
    dropout: float = 0.3
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    #: Loss weight of each head relative to the class head.
    head_weights: dict[str, float] = field(default_factory=lambda: {
        "class": 1.0, "region": 0.7, "view": 0.3, "rotation": 0.5, "inverted": 0.3})
    members: int = 3


class Projection(nn.Module):
    """Centring and principal-component projection of the features (fixed, not trained)."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("components", torch.from_numpy(components.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components


def fit_projection(features: np.ndarray, components: int, sample: int = 20000, seed: int = 0) -> Projection:
    """Principal components of a sample of the cached features, whitened to unit variance."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(features), min(sample, len(features)), replace=False)
    x = features[np.sort(idx)].astype(np.float64)
    mean = x.mean(0)
    x -= mean
    cov = x.T @ x / max(1, len(x) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:components]
    scale = 1.0 / np.sqrt(np.maximum(values[order], 1e-6))
    return Projection(mean, vectors[:, order] * scale)


class Member(nn.Module):
    """MLP with one shared hidden layer and a linear output per head (logits)."""

    def __init__(self, in_dim: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Dropout(cfg.dropout / 2), nn.Linear(in_dim, cfg.hidden), nn.ReLU(),
                                  nn.Dropout(cfg.dropout))
        self.out = nn.ModuleDict({name: nn.Linear(cfg.hidden, n) for name, n in HEADS.items()})

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(z)
        return {name: layer(h) for name, layer in self.out.items()}


@dataclass
class Targets:
    """Per-view targets, ``IGNORE`` where unknown."""

    cls: np.ndarray
    region: np.ndarray
    view: np.ndarray
    rotation: np.ndarray
    inverted: np.ndarray

    def subset(self, idx: np.ndarray) -> "Targets":
        return Targets(*(getattr(self, f)[idx] for f in ("cls", "region", "view", "rotation", "inverted")))

    def concat(self, other: "Targets") -> "Targets":
        return Targets(*(np.concatenate([getattr(self, f), getattr(other, f)])
                         for f in ("cls", "region", "view", "rotation", "inverted")))

    def by_head(self) -> dict[str, np.ndarray]:
        return {"class": self.cls, "region": self.region, "view": self.view, "rotation": self.rotation,
                "inverted": self.inverted}


def _weights(y: np.ndarray, n: int, power: float) -> torch.Tensor:
    """Inverse-frequency loss weights (``power`` 1 = fully balanced) over the known targets."""
    counts = np.bincount(y[y >= 0], minlength=n).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum())) ** power, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def fit_member(z: np.ndarray, t: Targets, cfg: HeadConfig, seed: int, label: str = "fit") -> Member:
    """Train one member on projected features ``z`` with masked, class-weighted cross-entropies."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    member = Member(z.shape[1], cfg)
    opt = torch.optim.AdamW(member.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(z) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    targets = {k: torch.from_numpy(v.astype(np.int64)) for k, v in t.by_head().items()}
    losses = {k: nn.CrossEntropyLoss(weight=_weights(v, HEADS[k], 1.0 if k == "class" else 0.5),
                                     ignore_index=IGNORE, label_smoothing=cfg.label_smoothing)
              for k, v in t.by_head().items()}
    x_all = torch.from_numpy(z.astype(np.float32))
    member.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(z), generator=gen)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            out = member(x_all[idx])
            loss = torch.zeros(())
            for name, logits in out.items():
                y = targets[name][idx]
                if (y != IGNORE).any():
                    loss = loss + cfg.head_weights[name] * losses[name](logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.debug("%s epoch %d/%d loss %.4f", label, epoch + 1, cfg.epochs, total / len(z))
    log.info("%s: %d views, final loss %.4f", label, len(z), total / len(z))
    return member.eval()


class Ensemble(nn.Module):
    """Projection + members; outputs probabilities per head, with the calibrated class fusion.

    ``class`` probabilities combine the class head with the class implied by the region head
    (``region_weight``), are tempered (``temperature``) and shift the ``others`` log-probability
    by ``others_bias`` (open-set offset).
    """

    def __init__(self, projection: Projection, members: list[Member], temperature: float = 1.0,
                 region_weight: float = 0.5, others_bias: float = 0.0) -> None:
        super().__init__()
        self.projection = projection
        self.members = nn.ModuleList(members)
        self.register_buffer("region_to_class", torch.from_numpy(region_to_class_matrix()))
        self.temperature = float(temperature)
        self.region_weight = float(region_weight)
        self.others_bias = float(others_bias)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.combine(self.member_logits(features))

    def member_logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{head: [members, N, outputs]}`` before calibration."""
        z = self.projection(features)
        outs = [m(z) for m in self.members]
        return {name: torch.stack([o[name] for o in outs]) for name in HEADS}

    def combine(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Member logits -> calibrated probabilities per head."""
        probs = {name: F.softmax(v / self.temperature, dim=2).mean(0) for name, v in logits.items()}
        probs["class"] = fuse_class(probs["class"], probs["region"], self.region_to_class, self.region_weight,
                                    self.others_bias)
        return probs


def region_to_class_matrix() -> np.ndarray:
    """``[regions, classes]``: 1 where a region belongs to a class; ``chest`` to both chest classes."""
    from bodypart_router.inference.classes import region_classes

    m = np.zeros((len(REGION_NAMES), len(CLASS_NAMES)), dtype=np.float32)
    for r, name in enumerate(REGION_NAMES):
        for c in region_classes(name):
            m[r, CLASS_NAMES.index(c)] = 1.0
    return m


def fuse_class(p_class: torch.Tensor, p_region: torch.Tensor, region_to_class: torch.Tensor,
               region_weight: float, others_bias: float) -> torch.Tensor:
    """Class probabilities from the class head and the region head, then the open-set offset.

    The region head's chest mass is split between adult and pediatric in the proportion the class
    head gives them.
    """
    adult, ped = CLASS_NAMES.index("adult_chest"), CLASS_NAMES.index("pediatric_chest")
    from_region = p_region @ region_to_class  # chest mass counted in both chest columns
    chest_share = p_class[:, [adult, ped]] / p_class[:, [adult, ped]].sum(1, keepdim=True).clamp_min(1e-8)
    from_region = torch.cat([from_region[:, :adult], from_region[:, adult:adult + 1] * chest_share,
                             from_region[:, ped + 1:]], dim=1)
    fused = (1.0 - region_weight) * p_class + region_weight * from_region
    if others_bias:
        scale = torch.ones(len(CLASS_NAMES), dtype=fused.dtype)
        scale[CLASS_NAMES.index("others")] = math.exp(others_bias)
        fused = fused * scale
        fused = fused / fused.sum(1, keepdim=True)
    return fused


def member_logits(ensemble: Ensemble, features: np.ndarray, batch_size: int = 2048) -> dict[str, torch.Tensor]:
    """Uncalibrated member logits for cached features (to try calibrations without re-running)."""
    ensemble.eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            for name, v in ensemble.member_logits(torch.from_numpy(features[i:i + batch_size].astype(np.float32))).items():
                out[name].append(v)
    return {name: torch.cat(v, dim=1) if v else torch.zeros((len(ensemble.members), 0, HEADS[name]))
            for name, v in out.items()}


def calibrated(ensemble: Ensemble, logits: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Probabilities per head from member logits, with the ensemble's current calibration."""
    with torch.no_grad():
        return {name: p.numpy() for name, p in ensemble.combine(logits).items()}


def predict(ensemble: Ensemble, features: np.ndarray) -> dict[str, np.ndarray]:
    """Calibrated probabilities per head for cached features."""
    return calibrated(ensemble, member_logits(ensemble, features))


def train_ensemble(features: np.ndarray, t: Targets, cfg: HeadConfig, seed: int, label: str = "fit",
                   projection: Projection | None = None) -> Ensemble:
    """Fit the projection (unless given) and ``cfg.members`` members; calibration left neutral."""
    projection = projection or fit_projection(features, cfg.components, seed=seed)
    with torch.no_grad():
        z = torch.cat([projection(torch.from_numpy(features[i:i + 8192].astype(np.float32)))
                       for i in range(0, len(features), 8192)]).numpy()
    members = [fit_member(z, t, cfg, seed + k, label=f"{label}[{k}]") for k in range(cfg.members)]
    return Ensemble(projection, members)
