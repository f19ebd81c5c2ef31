"""Header fusion: the header's body part weighs in on the routed class, as evidence of known reliability.

The header vocabulary is the audit's (:func:`bodypart_router.routing.audit.header_classes`): the first
of Body Part Examined, Series Description, Protocol Name and Study Description that names a
known region gives the set ``H`` of classes the header allows, narrowed to adult or pediatric
chest by the patient's age. ``H`` is empty when no tag names a region.

``HeaderEvidence`` says how ``H`` is used:

* ``"off"``: the pixels decide alone (the header is only audited).
* ``"tie-break"``: the pixels decide when their top score reaches ``MinimumScore``; below it,
  and when the header names a region, the model's probabilities are restricted to ``H`` and
  renormalised. An unsure film whose header is clear is routed by the header; a sure film is
  never changed.
* ``"prior"`` (Bayes): the header is a noisy observation of the true class. It is right with
  probability ``1 - e``, where ``e`` is ``HeaderErrorRate``. Right, it names the true
  class's region; wrong, one of the ``R - 1`` other regions (``R`` = 4: chest, abdomen,
  spine, other). So the likelihood of what the header says is ``1 - e`` for a class in
  ``H`` and ``e / (R - 1)`` for a class outside it, and the fused probabilities are
  ``p(c) * L(c)``, normalised. The default ``e`` is measured with the shipped model, not
  assumed (``make bench-fusion``; the figures are in the README). At 0.5 a header multiplies
  the odds of its classes by 3: it decides when the model hesitates and loses against a model
  that is more than 3 times surer of another class.

The result says what decided (metadata ``BodyPartSource``): ``pixels`` (no usable header, or
fusion off), ``pixels+header`` (both agree), ``header`` (the header changed the class the
pixels alone would have given) or ``conflict`` (the header names other classes and the pixels
won). The routed score is the fused probability, and ``MinimumScore`` applies to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .audit import Region, header_classes

OFF, TIE_BREAK, PRIOR = "off", "tie-break", "prior"
MODES: Final[tuple[str, ...]] = (OFF, TIE_BREAK, PRIOR)
DEFAULT_HEADER_ERROR_RATE: Final = 0.5
#: Regions a header can name (the audit's :class:`Region`): a wrong header names one of the others.
HEADER_REGIONS: Final = len(Region)

PIXELS, PIXELS_HEADER, HEADER, CONFLICT = "pixels", "pixels+header", "header", "conflict"
SOURCES: Final[tuple[str, ...]] = (PIXELS, PIXELS_HEADER, HEADER, CONFLICT)



@dataclass(frozen=True)
class Fused:
    """The fused verdict for one instance."""

    class_name: str
    score: float
    scores: dict[str, float]
    source: str
    header_classes: tuple[str, ...] = ()
    header_tag: str | None = None
    age_years: float | None = None
    pixel_class: str = ""
    pixel_score: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """What ``explain`` shows of the fusion."""
        return {
            "Source": self.source,
            "PixelClass": self.pixel_class,
            "PixelScore": round(self.pixel_score, 4),
            "HeaderClasses": list(self.header_classes),
            "HeaderTag": self.header_tag,
            "AgeYears": None if self.age_years is None else round(self.age_years, 2),
            "FusedScores": {c: round(p, 4) for c, p in self.scores.items()},
        }


#: View Position (0018,5101) values, as modalities write them, and the view they mean.
_VIEW_POSITIONS: Final = {"AP": "frontal", "PA": "frontal", "APAXIAL": "frontal", "PAAXIAL": "frontal",
                          "LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral",
                          "LLD": "lateral", "RLD": "lateral", "LATERALE": "lateral", "SEITLICH": "lateral"}


def header_view(tags: Mapping[str, Any]) -> str | None:
    """``frontal``/``lateral`` from View Position (0018,5101), None when absent or unknown (OBL, ...).

    Rules use it for ``View`` only when the model gives no view of its own."""
    value = tags.get("ViewPosition")
    if not isinstance(value, str):
        return None
    return _VIEW_POSITIONS.get("".join(c for c in value.upper() if c.isalpha()))


def _top(scores: Mapping[str, float]) -> tuple[str, float]:
    name = max(scores, key=lambda c: scores[c])
    return name, float(scores[name])


def fuse(scores: Mapping[str, float], tags: Mapping[str, Any], *, mode: str = PRIOR, minimum_score: float = 0.5,
         header_error_rate: float = DEFAULT_HEADER_ERROR_RATE) -> Fused:
    """Combine the model's probabilities (``{class: p}``) with the header (tags by keyword)."""
    if mode not in MODES:
        raise ValueError(f"HeaderEvidence must be one of {', '.join(MODES)}, not {mode!r}")
    pixel_class, pixel_score = _top(scores)
    allowed, tag, age = header_classes(tags) if mode != OFF else ((), None, None)
    allowed = tuple(c for c in allowed if c in scores)
    fused: dict[str, float] = {c: float(p) for c, p in scores.items()}
    if allowed and mode == PRIOR:
        e = min(max(header_error_rate, 1e-6), 1 - 1e-6)
        inside, outside = 1.0 - e, e / (HEADER_REGIONS - 1)
        weighted = {c: p * (inside if c in allowed else outside) for c, p in fused.items()}
        total = sum(weighted.values())
        if total > 0:
            fused = {c: w / total for c, w in weighted.items()}
    elif allowed and mode == TIE_BREAK and pixel_score < minimum_score:
        total = sum(fused[c] for c in allowed)
        if total > 0:
            fused = {c: (fused[c] / total if c in allowed else 0.0) for c in fused}
    class_name, score = _top(fused)
    if not allowed:
        source = PIXELS
    elif class_name != pixel_class:
        source = HEADER
    elif class_name in allowed:
        source = PIXELS_HEADER
    else:
        source = CONFLICT
    return Fused(class_name, score, fused, source, allowed, tag, age, pixel_class, pixel_score)
