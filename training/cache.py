"""Backbone features on disk, keyed by exactly what produced them."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from . import augment, features
from .data import Sample
from .features import BackboneRunner, View, extract

log = logging.getLogger(__name__)


def views_key(samples: list[Sample], views: list[View]) -> str:
    """Digest of the augmentation and preprocessing code and of every view's definition."""
    from bodypart_router.imaging import preprocess

    digest = hashlib.sha256()
    for module in (augment, features, preprocess):
        digest.update(Path(module.__file__).read_bytes())
    for v in views:
        digest.update(f"{samples[v.sample].path.name}:{v.seed}:{v.turns}:{int(v.inverted)};".encode())
    return digest.hexdigest()[:16]


def cached_features(cache_dir: Path, name: str, runner: BackboneRunner, samples: list[Sample],
                    views: list[View]) -> np.ndarray:
    """Features of ``views``, reused from ``cache_dir`` when the same views were computed before."""
    path = cache_dir / f"{name}-{views_key(samples, views)}.npy"
    if path.exists():
        log.info("%s: reusing %s", name, path)
        return np.load(path)
    feats = extract(runner, samples, views, label=name)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.rename(path)
    return feats
