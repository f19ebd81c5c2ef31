"""Polarity and rotation as served: features of the second looks, and the held-out-source
check of both rules.

Serving takes a second look at a film whose polarity or rotation answer is unsure: its negative
turned by a quarter (:mod:`bodypart_router.inference.second_look`). To score exactly that, the
evaluation needs backbone features of those second-look images: :class:`LookRunner` makes them
from the model input the way serving does, cached like every other view set. The runners
compose: the look of a film's negative is ``LookRunner(NegativeRunner(runner))``, that of a film
turned by ``t`` quarters ``LookRunner(TurnedRunner(runner, t))``.

:func:`heldout_orientation` trains an orientation member without one whole source and scores
that source's films, by the heads alone and by the served rules: polarity of the films as stored
and inverted, rotation of the upright films as stored and turned by each quarter. That is what
another hospital's turned and inverted films would see.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from bodypart_router.inference import polarity, rotation, second_look

from .data import Sample
from .heads import HeadConfig, Member, Projection, Targets
from .heldout import folds
from .labels import targets
from .orientation import train_orientation

log = logging.getLogger(__name__)

#: Orientation members per held-out run (the shipped model has ``orientation_config().members``);
#: one keeps the 20-odd runs within the training budget.
HELDOUT_MEMBERS = 1
#: The view sets of a film turned by 0, 1, 2 and 3 quarters, and of their second looks.
QUARTER_VIEWS = ("clean", "turn1", "turn2", "turn3")
QUARTER_LOOKS = ("look", "look-turn1", "look-turn2", "look-turn3")


class NegativeRunner:
    """The backbone run on the negatives of its inputs, as serving makes them."""

    def __init__(self, runner: Callable[[np.ndarray], np.ndarray]) -> None:
        self.runner = runner

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(polarity.negative(batch))


class LookRunner:
    """The backbone run on the second-look images of its inputs, as serving makes them."""

    def __init__(self, runner: Callable[[np.ndarray], np.ndarray]) -> None:
        self.runner = runner

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(second_look.image(batch))


class TurnedRunner:
    """The backbone run on its inputs turned by ``quarter_turns`` counter-clockwise, as serving turns them."""

    def __init__(self, runner: Callable[[np.ndarray], np.ndarray], quarter_turns: int) -> None:
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


def polarity_accuracies(film: np.ndarray, film_look: np.ndarray, copy: np.ndarray,
                        copy_look: np.ndarray) -> dict[str, float]:
    """Polarity accuracy of films stored correctly (target: not inverted) and of their inverted
    copies (target: inverted), by the head alone and by the served rule: each the head's
    probability of "inverted" for the film or copy and for its second look."""
    served_film = polarity.decide(film, film_look)
    served_copy = polarity.decide(copy, copy_look)
    return {"alone_as_stored": float((film < 0.5).mean()), "alone_inverted": float((copy >= 0.5).mean()),
            "served_as_stored": float((served_film < 0.5).mean()), "served_inverted": float((served_copy >= 0.5).mean()),
            "second_pass": float(polarity.needs_negative(film).mean())}


def rotation_accuracies(quarters: np.ndarray, looks: np.ndarray) -> dict[str, float]:
    """Rotation accuracy of upright films as stored and turned by 90, 180 and 270 degrees, by the
    head alone and by the served rule. ``quarters`` ``[N, 4, 4]``: the head's answer for each film
    turned counter-clockwise by 0..3 quarters (the copy turned ``t`` needs ``t``); ``looks`` the
    same for the second look of each of those copies."""
    alone, served, asked = [], [], []
    for t in range(4):
        first = quarters[:, t]
        alone.append(first.argmax(1) == t)
        served.append(rotation.decide(first, looks[:, t]).argmax(1) == t)
        asked.append(rotation.needs_turns(first))
    return {"alone_as_stored": float(alone[0].mean()), "alone_turned": float(np.concatenate(alone[1:]).mean()),
            "served_as_stored": float(served[0].mean()), "served_turned": float(np.concatenate(served[1:]).mean()),
            "second_pass": float(np.concatenate(asked).mean())}


def heldout_orientation(samples: list[Sample], fit_sample: np.ndarray, fit_features: np.ndarray,
                        fit_targets: Targets, views: dict[str, np.ndarray], projection: Projection, cfg: HeadConfig,
                        seed: int, cache: Path | None = None) -> list[dict]:
    """One row per source with at least ``MIN_SOURCE_IMAGES`` films (see :mod:`training.heldout`).

    ``fit_*`` are the orientation members' training views (their sample index, features and
    targets). ``views`` holds features of every film: ``clean`` (as stored), ``negative``,
    ``turn1``..``turn3`` (turned counter-clockwise), and the second look of each: ``look``,
    ``look-negative``, ``look-turn1``..``look-turn3``. With ``cache``, rows are saved there and
    reused.
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

        row: dict = {"name": fold.name, "n": int(len(held)), "polarity": polarity_accuracies(
            *(answers(views[k], held, "inverted")[:, 1] for k in ("clean", "look", "negative", "look-negative")))}
        upright = np.array([i for i in held if targets(samples[i]).upright], dtype=np.int64)
        if len(upright):
            quarters, looks = (np.stack([answers(views[k], upright, "rotation") for k in keys], axis=1)
                               for keys in (QUARTER_VIEWS, QUARTER_LOOKS))
            row["rotation"] = {"n": int(len(upright)), **rotation_accuracies(quarters, looks)}
        log.info("held-out orientation %s", row)
        rows.append(row)
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.rename(cache)
    return rows
