"""Decide where a classified instance goes: the routed class, then the rules (see rules.py).

Pure and stateless so that the decision is easy to read, test and explain. A prediction below
``MinimumScore`` becomes the class ``uncertain`` (labelled as such) unless ``BelowMinimum`` is
``"route"``, in which case the predicted class is kept. The rules then run on the routed class
and the rest of the evidence (header tags, calling AET, the model's secondary outputs);
``UncertainRoutes`` is the last rule, for ``uncertain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..inference.classes import UNCERTAIN
from ..config import Destination, RouterConfig
from ..states import InstanceState, Reason
from .rules import Condition, Evidence, Rule, RuleResult, evaluate, table_rules

#: Names of the rule built from ``UncertainRoutes``, as ``explain`` shows it.
UNCERTAIN_RULE = "UncertainRoutes"


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome for one instance."""

    class_name: str  # the class stored in metadata: a model class or "uncertain"
    predicted_class: str  # the model's top class, even when below the minimum score
    score: float
    destinations: tuple[Destination, ...]
    #: Every rule's verdict, in order (what ``explain`` shows).
    rules: tuple[RuleResult, ...] = ()
    #: Failed quality requirements (``lateral``, ``rotated-90``, ``inverted``), first one first.
    held: tuple[Reason, ...] = ()
    #: What decided the class: ``pixels``, ``pixels+header``, ``header`` or ``conflict`` (see fusion.py).
    source: str = "pixels"
    #: The evidence the fusion weighed (see fusion.py); empty when it did not run.
    fusion: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uncertain(self) -> bool:
        return self.class_name == UNCERTAIN

    @property
    def state(self) -> InstanceState | None:
        """``held:<reason>`` when a rule held the film back, else None (the usual states apply)."""
        return InstanceState.of(self.held[0]) if self.held else None


def active_rules(config: RouterConfig) -> tuple[Rule, ...]:
    """The configured rules, then ``UncertainRoutes`` as a last rule for ``uncertain``."""
    rules = config.rules or table_rules(config.routes)
    if config.uncertain_routes:
        rules = rules + (Rule(UNCERTAIN_RULE, tuple(config.uncertain_routes),
                              (("Class", Condition("equals", (UNCERTAIN,))),)),)
    return rules


def routed_class(config: RouterConfig, predicted_class: str, score: float) -> str:
    """The class the rules see: ``uncertain`` below ``MinimumScore`` (unless ``BelowMinimum`` is ``route``)."""
    if score < config.minimum_score and config.below_minimum == "uncertain":
        return UNCERTAIN
    return predicted_class


def decide(config: RouterConfig, predicted_class: str, score: float, *, tags: Mapping[str, Any] | None = None,
           calling_aet: str | None = None, region: str | None = None, view: str | None = None,
           rotation: int | None = None, inverted: bool | None = None, source: str = "pixels",
           fusion: Mapping[str, Any] | None = None) -> RoutingDecision:
    """Apply the minimum score and the rules to one prediction and its evidence."""
    class_name = routed_class(config, predicted_class, score)
    evidence = Evidence(class_name, score, region=region, view=view, rotation=rotation, inverted=inverted,
                        calling_aet=calling_aet, tags=tags or {})
    results, destinations, held = evaluate(active_rules(config), evidence, tuple(config.quality_routes))
    return RoutingDecision(class_name, predicted_class, score, tuple(destinations), results, held, source,
                           dict(fusion or {}))


#: The model outputs besides the class probabilities that rules can test.
SECONDARY = ("region", "view", "rotation", "inverted")


def decide_evidence(config: RouterConfig, scores: Mapping[str, float], *, tags: Mapping[str, Any] | None = None,
                    calling_aet: str | None = None, secondary: Mapping[str, Any] | None = None) -> RoutingDecision:
    """The whole decision for one instance: header fusion (``HeaderEvidence``), then the minimum
    score and the rules. ``secondary`` holds the model's ``region``/``view``/``rotation``/``inverted``;
    without a view from the model, the header's View Position (AP/PA/LL...) gives it."""
    from .fusion import fuse, header_view  # kept local to keep this module's imports light

    fused = fuse(scores, tags or {}, mode=config.header_evidence, minimum_score=config.minimum_score,
                 header_error_rate=config.header_error_rate)
    extra = {k: (secondary or {}).get(k) for k in SECONDARY}
    fusion = fused.as_dict()
    if extra["view"] is None and tags:  # the model gives no view: the header's View Position, if any
        extra["view"] = header_view(tags)
        fusion["ViewFrom"] = "header" if extra["view"] else None
    elif extra["view"] is not None:
        fusion["ViewFrom"] = "pixels"
    return decide(config, fused.class_name, fused.score, tags=tags, calling_aet=calling_aet, source=fused.source,
                  fusion=fusion, **extra)


def outcome_evidence(outcome: Any) -> dict[str, Any]:
    """What is kept of a classification to decide again later (``explain``, ``reroute``):
    ``{"scores": {class: p}, "region": ..., "view": ..., "rotation": ..., "inverted": ...}``."""
    scores = dict(getattr(outcome, "scores", None) or {})
    if not scores and getattr(outcome, "class_name", None):
        scores = {outcome.class_name: float(outcome.score)}
    out: dict[str, Any] = {"scores": {c: float(p) for c, p in scores.items()}}
    for key in SECONDARY:
        out[key] = getattr(outcome, key, None)
    return out
