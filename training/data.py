"""The training manifest and its split into train / validation / test by ``group_key``.

Images that share a ``group_key`` (the same picture re-encoded, the same patient) always land in
the same split, so the test figures are not inflated by near-copies of training images. The
split is stratified by (class, source) so that every collection, including the 42 abdominal
films, is represented in validation and test.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bodypart_router.inference.classes import CLASS_NAMES

SPLITS = ("train", "val", "test")

#: Regions of ``others`` held out one at a time to measure open-set behaviour.
#: Each maps to the sources (and optional ``label_detail`` prefix) that make up the region.
OTHERS_REGIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "skull_cephalogram": (("hamedan_cephalograms", ""),),
    "knee": (("knee_oa_kl_clahe224", ""),),
    "hand": (("rsna_boneage_hands_1200", ""), ("mednist_64px", "mednist_class=Hand")),
    "upper_limb": (("roboflow_upperlimb_fracture_mura_like", ""), ("mura_humerus_64px", "")),
}


@dataclass(frozen=True)
class Sample:
    """One manifest row, reduced to what training needs."""

    path: Path
    label: int
    source: str
    license: str
    group_key: str
    label_detail: str
    orig_width: int
    orig_height: int

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]

    def region(self) -> str | None:
        """The ``OTHERS_REGIONS`` key this image belongs to, if any."""
        for name, parts in OTHERS_REGIONS.items():
            for source, detail_prefix in parts:
                if self.source == source and self.label_detail.startswith(detail_prefix):
                    return name
        return None


def read_manifest(data_dir: Path) -> list[Sample]:
    """Read ``manifest.csv``; unknown class names are an error, not silently dropped."""
    samples = []
    with open(data_dir / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["class"] not in CLASS_NAMES:
                raise ValueError(f"manifest.csv: unknown class {row['class']!r} for {row['path']}; "
                                 f"expected one of {CLASS_NAMES}")
            samples.append(Sample(
                path=data_dir / row["path"], label=CLASS_NAMES.index(row["class"]),
                source=row["source"], license=row["license"], group_key=row["group_key"],
                label_detail=row["label_detail"],
                orig_width=int(row["orig_width"] or 0), orig_height=int(row["orig_height"] or 0)))
    return samples


def _stable_rank(key: str, seed: int) -> str:
    """Seeded, platform-independent ordering key for a group."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_by_group(samples: list[Sample], seed: int, val_frac: float = 0.15,
                   test_frac: float = 0.15, min_eval_groups: int = 6) -> dict[str, list[int]]:
    """Assign sample indices to train/val/test with no ``group_key`` in two splits.

    Groups are stratified by (class, source) of their first member. Strata with few groups
    still give ``min_eval_groups`` (when they have at least three times as many) to val and to test,
    so a scarce class such as abdominal is measurable.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.group_key].append(i)
    strata: dict[tuple[int, str], list[str]] = defaultdict(list)
    for key, members in groups.items():
        first = samples[members[0]]
        strata[(first.label, first.source)].append(key)

    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for stratum in sorted(strata):
        keys = sorted(strata[stratum], key=lambda k: _stable_rank(k, seed))
        n = len(keys)
        n_val, n_test = round(n * val_frac), round(n * test_frac)
        if n >= 3 * min_eval_groups:
            n_val, n_test = max(n_val, min_eval_groups), max(n_test, min_eval_groups)
        elif n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        for j, key in enumerate(keys):
            split = "test" if j < n_test else "val" if j < n_test + n_val else "train"
            out[split].extend(groups[key])
    for name in SPLITS:
        out[name].sort()
    return out


def load_gray(path: Path) -> np.ndarray:
    """Read an image file as 2-D uint8 grayscale."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return image
