"""Decide where a classified instance goes: class + score -> destinations.

Pure and stateless so that the rule is easy to read and to test. A prediction below
``MinimumScore`` becomes the class ``uncertain`` (labelled as such, routed to
``UncertainRoutes``, which may be empty) unless ``BelowMinimum`` is ``"route"``, in which
case the predicted class is kept and routed as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

from .classes import UNCERTAIN
from .config import Destination, RouterConfig


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome for one instance."""

    class_name: str  # the class stored in metadata: a model class or "uncertain"
    predicted_class: str  # the model's top class, even when below the minimum score
    score: float
    destinations: tuple[Destination, ...]

    @property
    def uncertain(self) -> bool:
        return self.class_name == UNCERTAIN


def decide(config: RouterConfig, predicted_class: str, score: float) -> RoutingDecision:
    """Apply the minimum score and the routes table to one prediction."""
    if score < config.minimum_score and config.below_minimum == "uncertain":
        return RoutingDecision(UNCERTAIN, predicted_class, score, tuple(config.uncertain_routes))
    return RoutingDecision(predicted_class, predicted_class, score, tuple(config.routes.get(predicted_class, ())))
