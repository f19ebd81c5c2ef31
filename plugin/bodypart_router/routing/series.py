"""One decision per series (``"DecisionLevel": "series"``): a score-weighted vote of its films.

AI servers receive series and studies; a two-view chest series whose lateral film came out
``uncertain`` should not reach the chest AI with one film missing. In ``series`` mode each
film is classified as usual (pixels and header fused, see fusion.py) but nothing is forwarded
until Orthanc reports the series stable (``StableAge`` seconds without a new instance).
Then:

* the series' class is the argmax of the sum of its films' fused probabilities: every film
  votes with all of its probability mass, so a sure film outweighs an unsure one, and the
  header takes part through each film's fused probabilities;
* the series' score is that sum divided by the number of films (``MinimumScore`` applies to it);
* a film whose own class is the series' class, or whose own score is below
  ``SeriesConfidentScore``, takes the series' class and score;
* a film that disagrees with a score of its own at or above ``SeriesConfidentScore`` keeps its
  own class and score (a spine film stored by mistake in a chest series still goes to the spine AI).

The films that agree are routed in the same pass, so they are forwarded together. The price is
latency: a film waits the series' stable age (Orthanc's ``StableAge``, 60 s by default) after
its series' last instance arrived, on top of its classification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

DEFAULT_CONFIDENT_SCORE: Final = 0.9


@dataclass(frozen=True)
class Member:
    """One classified film of the series: its fused class and probabilities."""

    instance_id: str
    class_name: str
    score: float
    scores: Mapping[str, float]


@dataclass(frozen=True)
class Assignment:
    instance_id: str
    class_name: str
    score: float
    kept_own: bool  # a confident film that disagrees with the series keeps its own class


@dataclass(frozen=True)
class SeriesVote:
    class_name: str
    score: float
    totals: dict[str, float]
    assignments: tuple[Assignment, ...]

    def as_dict(self) -> dict[str, object]:
        return {"Class": self.class_name, "Score": round(self.score, 4), "Films": len(self.assignments),
                "Totals": {c: round(v, 4) for c, v in self.totals.items()}}


def vote(members: Sequence[Member], confident_score: float = DEFAULT_CONFIDENT_SCORE) -> SeriesVote:
    """The series' class and what each film is routed as (see the module docstring)."""
    if not members:
        raise ValueError("a series vote needs at least one film")
    totals: dict[str, float] = {}
    for m in members:
        for c, p in m.scores.items():
            totals[c] = totals.get(c, 0.0) + float(p)
    series_class = max(totals, key=lambda c: totals[c])
    series_score = totals[series_class] / len(members)
    out = []
    for m in members:
        if m.class_name != series_class and m.score >= confident_score:
            out.append(Assignment(m.instance_id, m.class_name, m.score, True))
        else:
            out.append(Assignment(m.instance_id, series_class, series_score, False))
    return SeriesVote(series_class, series_score, totals, tuple(out))
