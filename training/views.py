"""Which views of which images are cached, and how many of each.

Four sets, all from one backbone pass per view:

- ``aug``: augmented, turned and inverted training views of *every* image. The final model uses
  those of the train and validation splits; each leave-one-source-out run uses those of every
  source but the held-out one.
- ``clean``: every image as stored (the held-out evaluations and the test split).
- ``turned``: each test image once turned by a random quarter and once inverted (rotation and
  polarity accuracy, and the class's invariance to both).
- ``quarters``: more turned and inverted views of every film outside the chest, for the
  orientation members only. Where a chest is upright is learned from thousands of chests; where
  a hand, a hip or a cervical spine is upright is learned from few, so each such film is seen
  turned by every quarter (upright ones are already in ``aug``), and films with no upright
  convention (MURA, periapicals) once more each way of polarity.

Scarce films get more views: abdominal films, and the version 2 hospital's pelvis, spines,
lateral and pediatric chests, which are the only ones of their kind.
"""

from __future__ import annotations

import numpy as np

from .data import Sample
from .features import View
from .labels import region_of, targets, view_of

#: Share of training views left upright; the rest are turned by 90, 180 or 270 degrees equally.
UPRIGHT_SHARE = 0.4
#: Share of training views whose polarity is inverted.
INVERTED_SHARE = 0.25


def view_seed(seed: int, sample: int, view: int) -> int:
    """Independent, reproducible seed for one augmented view."""
    return int(np.random.SeedSequence([seed, sample, view]).generate_state(1)[0])


def views_per_image(sample: Sample) -> int:
    """How many augmented views one image gets."""
    cls, source = sample.class_name, sample.source
    if cls == "abdominal":
        return 24
    if source == "unifesp_bodypart_xray":
        if cls == "pediatric_chest":
            return 16
        if cls == "adult_chest":
            return 6 if view_of(sample) == "lateral" else 3
        if cls == "spine" or region_of(sample) == "pelvis_hip":
            return 8
        return 4
    if source in ("periapical_gerarddd", "isbi2015_cephalograms", "hamedan_cephalograms", "lateral_spine_limsungjoo"):
        return 2
    return 1


def augmented_views(samples: list[Sample], seed: int) -> list[View]:
    """The ``aug`` set: every image, ``views_per_image`` views each, consecutive per image."""
    views = []
    for i, s in enumerate(samples):
        for j in range(views_per_image(s)):
            vs = view_seed(seed, i, j)
            rng = np.random.default_rng(vs ^ 0x5EED)
            turns = 0 if rng.random() < UPRIGHT_SHARE else int(rng.integers(1, 4))
            views.append(View(i, vs, turns, bool(rng.random() < INVERTED_SHARE)))
    return views


#: Seed offset of the ``quarters`` views, so that they never repeat an ``aug`` view.
QUARTERS_SEED_OFFSET = 7


def quarter_views(samples: list[Sample], seed: int) -> list[View]:
    """The ``quarters`` set: every film outside the chest, augmented; upright-stored ones turned by
    90, 180 and 270 degrees (a quarter of them also inverted), the others once as they are and
    once inverted. Consecutive per image."""
    views = []
    for i, s in enumerate(samples):
        if region_of(s) == "chest":
            continue
        if targets(s).upright:
            for turns in (1, 2, 3):
                vs = view_seed(seed + QUARTERS_SEED_OFFSET, i, turns)
                views.append(View(i, vs, turns, bool(np.random.default_rng(vs).random() < INVERTED_SHARE)))
        else:
            for inverted in (False, True):
                vs = view_seed(seed + QUARTERS_SEED_OFFSET, i, int(inverted))
                views.append(View(i, vs, int(np.random.default_rng(vs).integers(0, 4)), inverted))
    return views


def clean_views(indices: list[int]) -> list[View]:
    return [View(i, None) for i in indices]


def turned_views(indices: list[int], seed: int) -> list[View]:
    """Each image once turned by a random quarter (upright otherwise) and once inverted."""
    rng = np.random.default_rng(seed)
    out = []
    for i in indices:
        out.append(View(i, None, int(rng.integers(1, 4)), False))
        out.append(View(i, None, 0, True))
    return out
