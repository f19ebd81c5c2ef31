"""Train the top of the network (block 15, head convolution, classifier) on cached trunk features."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bodypart_router.classes import CLASS_NAMES

from .metrics import macro_f1
from .model import FIRST_TRAINED_BLOCK, EfficientNetLite0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    #: BatchNorm momentum of the trained layers: their ImageNet statistics must move to X-rays.
    bn_momentum: float = 0.1
    #: Loss weight of a class = (1 / its share of views) ** power: 1 = inverse frequency, 0 = none.
    class_weight_power: float = 1.0


def trainable_modules(model: EfficientNetLite0) -> list[nn.Module]:
    return [*model._blocks[FIRST_TRAINED_BLOCK:], model._conv_head, model._bn1, model._fc]


def set_trainable(model: EfficientNetLite0, bn_momentum: float) -> list[nn.Parameter]:
    """Freeze everything but the top; return the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for module in trainable_modules(model):
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
        for p in module.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def class_weights(labels: np.ndarray, power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights raised to ``power`` (1 for a perfectly balanced set) for the loss."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1) / len(CLASS_NAMES)) ** power, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def predict_top(model: EfficientNetLite0, features: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities of the top for cached features ``[N,192,7,7]``."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(features), batch_size):
            x = torch.from_numpy(features[i:i + batch_size].astype(np.float32))
            out.append(F.softmax(model.top(x), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASS_NAMES)), np.float32)


def fit_top(model: EfficientNetLite0, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
            val_y: np.ndarray, cfg: FitConfig, seed: int, label: str = "fit") -> tuple[EfficientNetLite0, list[dict]]:
    """Train the top with class-weighted cross-entropy; keep the epoch with the best val macro-F1.

    Returns a trained copy of ``model`` (the argument is not modified) and the per-epoch history.
    """
    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    params = set_trainable(model, cfg.bn_momentum)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, steps_per_epoch // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_y, cfg.class_weight_power), label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(train_y.astype(np.int64))
    best_f1, best_state, history = -1.0, None, []
    for epoch in range(cfg.epochs):
        model.train()
        for m in model.modules():  # the frozen trunk keeps its statistics (it is not run here anyway)
            if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
                m.eval()
        order = torch.randperm(len(train_x), generator=gen).numpy()
        running = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[i:i + cfg.batch_size])
            x = torch.from_numpy(train_x[idx].astype(np.float32))
            loss = loss_fn(model.top(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
        probs = predict_top(model, val_x)
        f1 = macro_f1(val_y, probs.argmax(1)) if len(val_y) else 0.0
        history.append({"epoch": epoch + 1, "train_loss": running / len(order), "val_macro_f1": f1})
        log.info("%s epoch %d/%d: loss %.4f, val macro-F1 %.4f", label, epoch + 1, cfg.epochs,
                 running / len(order), f1)
        if f1 > best_f1:
            best_f1, best_state = f1, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), history
