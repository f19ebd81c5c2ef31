"""Polarity and rotation as served: features of the negatives and quarter turns, and the
held-out-source check of both rules.

Serving asks the polarity head about a film's negative, and the rotation head about the film's
three quarter turns, where the first answer is unsure (:mod:`bodypart_router.inference.polarity`,
:mod:`bodypart_router.inference.rotation`). To score exactly that, the evaluation needs
backbone features of those second looks: :class:`NegativeRunner` and :class:`TurnedRunner` make
them from the model input the way serving does, cached like every other view set.

:func:`heldout_orientation` trains an orientation member without one whole source and scores
that source's films, by the heads alone and by the served rules: polarity of the films as stored
and inverted, rotation of the upright films as stored and turned by each quarter. That is what
another hospital's turned and inverted films would see.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bodypart_router.inference import polarity, rotation

from .data import Sample
from .features import BackboneRunner
from .heads import HeadConfig, Member, Projection, Targets
from .heldout import folds
from .labels import targets
from .orientation import train_orientation

log = logging.getLogger(__name__)

#: Orientation members per held-out run (the shipped model has ``orientation_config().members``);
#: one keeps the 20-odd runs within the training budget.
HELDOUT_MEMBERS = 1


class NegativeRunner:
    """The backbone run on the negatives of its inputs, as serving makes them."""

    def __init__(self, runner: BackboneRunner) -> None:
        self.runner = runner

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(polarity.negative(batch))


class TurnedRunner:
    """The backbone run on its inputs turned by ``quarter_turns`` counter-clockwise, as serving turns them."""

    def __init__(self, runner: BackboneRunner, quarter_turns: int) -> None:
        self.runner, self.quarter_turns = runner, quarter_turns

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(rotation.turned(batch, self.quarter_turns))


def head_probabilities(projection: Projection, members: Sequence[Member], features: np.ndarray, head: str,
                       batch_size: int = 4096) -> np.ndarray:
    """One head's probabilities alone, per view: the ``members``' softmaxes averaged, as in the
    shipped graph."""
    out = []
    with torch.no_grad():
        for m in members:
            m.eval()
        for i in range(0, len(features), batch_size):
            z = projection(torch.from_numpy(np.asarray(features[i:i + batch_size], np.float32)))
            out.append(torch.stack([torch.softmax(m(z)[head], 1) for m in members]).mean(0).numpy())
    return np.concatenate(out)


def polarity_accuracies(p_film: np.ndarray, p_negative: np.ndarray) -> dict[str, float]:
    """Polarity accuracy of films stored correctly (target: not inverted) and of their inverted
    copies (target: inverted), by the head alone and by the served rule. A film's negative is the
    inverted copy, and the inverted copy's negative is the film."""
    served_film = polarity.decide(p_film, p_negative)
    served_copy = polarity.decide(p_negative, p_film)
    return {"alone_as_stored": float((p_film < 0.5).mean()), "alone_inverted": float((p_negative >= 0.5).mean()),
            "served_as_stored": float((served_film < 0.5).mean()), "served_inverted": float((served_copy >= 0.5).mean()),
            "second_pass": float(polarity.needs_negative(p_film).mean())}


def rotation_accuracies(quarters: np.ndarray) -> dict[str, float]:
    """Rotation accuracy of upright films as stored and turned by 90, 180 and 270 degrees, by the
    head alone and by the served rule. ``quarters`` ``[N, 4, 4]``: the head's answer for each film
    turned counter-clockwise by 0..3 quarters (the copy turned ``t`` needs ``t``; its own turns
    by ``k`` are the film's turns by ``t + k``)."""
    alone, served, asked = [], [], []
    for t in range(4):
        first = quarters[:, t]
        copies = np.stack([quarters[:, (t + k) % 4] for k in rotation.TURNS])
        alone.append(first.argmax(1) == t)
        served.append(rotation.decide(first, copies).argmax(1) == t)
        asked.append(rotation.needs_turns(first))
    return {"alone_as_stored": float(alone[0].mean()), "alone_turned": float(np.concatenate(alone[1:]).mean()),
            "served_as_stored": float(served[0].mean()), "served_turned": float(np.concatenate(served[1:]).mean()),
            "second_pass": float(np.concatenate(asked).mean())}


def heldout_orientation(samples: list[Sample], fit_sample: np.ndarray, fit_features: np.ndarray,
                        fit_targets: Targets, clean: np.ndarray, negative: np.ndarray, turned: Sequence[np.ndarray],
                        projection: Projection, cfg: HeadConfig, seed: int, cache: Path | None = None) -> list[dict]:
    """One row per source with at least ``MIN_SOURCE_IMAGES`` films (see :mod:`training.heldout`).

    ``fit_*`` are the orientation members' training views (their sample index, features and
    targets); ``clean``, ``negative`` and ``turned`` (by 1, 2 and 3 quarters) are features of
    every film as stored, of its negative and of its quarter turns. With ``cache``, rows are
    saved there and reused.
    """
    if cache is not None and cache.exists():
        log.info("held-out orientation: reusing %s", cache)
        return json.loads(cache.read_text())
    rows = []
    for fold in folds(samples):
        if fold.kind != "source":
            continue
        held = np.array(sorted(fold.held_out))
        keep = np.flatnonzero(~np.isin(fit_sample, held))
        members = train_orientation(fit_features[keep], fit_targets.subset(keep), projection, cfg, seed,
                                    members=HELDOUT_MEMBERS)

        def answers(features: np.ndarray, idx: np.ndarray, head: str) -> np.ndarray:
            return head_probabilities(projection, members, features[idx], head)

        row: dict = {"name": fold.name, "n": int(len(held)),
                     "polarity": polarity_accuracies(answers(clean, held, "inverted")[:, 1],
                                                     answers(negative, held, "inverted")[:, 1])}
        upright = np.array([i for i in held if targets(samples[i]).upright], dtype=np.int64)
        if len(upright):
            quarters = np.stack([answers(f, upright, "rotation") for f in (clean, *turned)], axis=1)
            row["rotation"] = {"n": int(len(upright)), **rotation_accuracies(quarters)}
        log.info("held-out orientation %s", row)
        rows.append(row)
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.rename(cache)
    return rows
