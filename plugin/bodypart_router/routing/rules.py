"""Routing rules: an ordered list of conditions on the pixels' verdict and the header, each naming destinations.

``Routes`` is either the historical ``{class: [destination, ...]}`` table or a list of rules::

    {"Name": "adult chest AI", "Class": "adult_chest", "Tags": {"PatientAge": {"Min": 18}},
     "Require": {"View": "frontal", "Rotation": 0, "Inverted": false},
     "Destinations": ["ai-chest"], "Continue": true}

Rules are tried in order. A rule matches when every condition it states holds; its
destinations are then added, and the search stops unless the rule says ``"Continue": true``.
The table form is the same thing with one rule per class. ``UncertainRoutes`` acts as a last
rule for the class ``uncertain``.

Conditions (every key is optional; a rule without conditions matches everything):

* ``Class``: the routed class (one of the model's classes, or ``uncertain``);
* ``Region``, ``View`` (``frontal``/``lateral``), ``Rotation`` (0/90/180/270), ``Inverted``:
  the model's secondary outputs. With a model that has no such output the value is unknown,
  and a condition on it does **not** hold (so a rule asking for ``"Region": "skull"`` never
  fires by accident); the view then comes from the header's View Position, when it has one
  (routing.decide_evidence);
* ``Score``: a range on the score of the routed class;
* ``CallingAet``: the AE title that sent the instance (Orthanc's ``RemoteAET``; none for REST);
* ``Tags``: ``{keyword: condition}`` on any DICOM attribute by keyword. ``PatientAge`` is in
  years, from Patient's Age or else Patient's Birth Date and the study date.

A condition value is a string (equals; ``*`` and ``?`` make it a wildcard), a list (one of),
a number or boolean (equals), or an object: ``{"Equals": v}``, ``{"OneOf": [..]}``,
``{"Wildcard": "CR*"}``, ``{"Regex": "..."}`` (searched, as written) or a range with any of
``{"Min": a}`` (>=), ``{"Max": b}`` (<=), ``{"Below": c}`` (<). Text comparisons other than
``Regex`` ignore case and surrounding spaces; a multi-valued attribute (``A\\B``) matches when
one of its values does. A condition on an attribute the instance lacks does not hold.

Quality requirements (``Require``: ``View``, ``Rotation``, ``Inverted``) do not select rules:
a film that matches a rule's conditions but fails its requirements is *held* for that rule:
it goes to ``QualityRoutes`` (or nowhere) instead of the rule's destinations, with the state
``held:lateral``, ``held:rotated-90``, ``held:inverted``. An output that is unknown is not held
for: the router cannot see the problem, so it does not invent one.

Why an evaluator of our own rather than a library: the operators needed are six, every one of
them has DICOM-specific details (multi-valued attributes, ages in ``018M`` form, unknown model
outputs), the configuration must be validated at start-up with errors naming the rule and key,
and ``explain`` must say *why* each condition held or not. A general expression language
(JMESPath, CEL, jsonlogic) would add a dependency to Orthanc's process and a second syntax
to learn, and would still need all of that around it. This module is pure and has no state.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .audit import age_in_years
from ..states import Reason

#: Regions the model's ``region`` output can name.
REGIONS: Final[tuple[str, ...]] = (
    "chest", "abdomen", "pelvis_hip", "cervical_spine", "thoracic_spine", "lumbar_spine", "whole_spine",
    "skull", "dental", "shoulder_arm", "elbow_forearm", "hand_wrist", "thigh_knee_leg", "ankle_foot",
)
VIEWS: Final[tuple[str, ...]] = ("frontal", "lateral")
ROTATIONS: Final[tuple[int, ...]] = (0, 90, 180, 270)

RULE_KEYS: Final[tuple[str, ...]] = (
    "Name", "Class", "Region", "Score", "View", "Rotation", "Inverted", "CallingAet", "Tags", "Require",
    "Destinations", "Continue",
)
REQUIRE_KEYS: Final[tuple[str, ...]] = ("View", "Rotation", "Inverted")
RANGE_KEYS: Final = ("Min", "Max", "Below")
OPERATOR_KEYS: Final = ("Equals", "OneOf", "Wildcard", "Regex") + RANGE_KEYS


@dataclass(frozen=True)
class Evidence:
    """Everything a rule can look at for one instance."""

    class_name: str  # the routed class: a model class or "uncertain"
    score: float
    region: str | None = None
    view: str | None = None
    rotation: int | None = None
    inverted: bool | None = None
    calling_aet: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)

    def tag(self, keyword: str) -> Any:
        """A tag's value by keyword (``PatientAge`` in years); None when absent or empty."""
        if keyword == "PatientAge":
            return age_in_years(self.tags)
        value = self.tags.get(keyword)
        if isinstance(value, Mapping):  # Orthanc's full JSON {"Value": ...}
            value = value.get("Value")
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value


# --------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """One test on one value; ``describe`` is what ``explain`` prints."""

    operator: str  # equals | one-of | wildcard | regex | range
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    below: float | None = None
    pattern: re.Pattern[str] | None = None

    def holds(self, value: Any) -> bool:
        if value is None:
            return False
        if self.operator == "range":
            number = _number(value)
            if number is None:
                return False
            return ((self.low is None or number >= self.low) and (self.high is None or number <= self.high)
                    and (self.below is None or number < self.below))
        candidates = _values_of(value)
        return any(self._holds_one(c) for c in candidates)

    def _holds_one(self, value: Any) -> bool:
        if self.operator == "regex":
            assert self.pattern is not None
            return self.pattern.search(str(value)) is not None
        for expected in self.values:
            if isinstance(expected, bool) or isinstance(value, bool):
                if isinstance(expected, bool) and _as_bool(value) is expected:
                    return True
            elif isinstance(expected, (int, float)):
                number = _number(value)
                if number is not None and number == expected:
                    return True
            elif self.operator == "wildcard" and isinstance(expected, str) and has_wildcard(expected):
                if fnmatch.fnmatchcase(_fold(value), _fold(expected)):
                    return True
            elif _fold(value) == _fold(expected):
                return True
        return False

    def describe(self) -> str:
        if self.operator == "range":
            parts = []
            if self.low is not None:
                parts.append(f">= {self.low:g}")
            if self.high is not None:
                parts.append(f"<= {self.high:g}")
            if self.below is not None:
                parts.append(f"< {self.below:g}")
            return " and ".join(parts)
        if self.operator == "regex":
            assert self.pattern is not None
            return f"matches /{self.pattern.pattern}/"
        shown = ", ".join(json_text(v) for v in self.values)
        return f"is {shown}" if len(self.values) == 1 else f"is one of {shown}"


def json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fold(value: Any) -> str:
    return str(value).strip().casefold()


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def _values_of(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return [value]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return _number(value[0]) if value else None
    text = str(value).split("\\")[0].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _fold(value)
    return True if text in ("true", "yes", "1") else False if text in ("false", "no", "0") else None


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One entry of the rule list, validated. ``destinations`` hold ``config.Destination`` objects."""

    name: str
    destinations: tuple[Any, ...]
    conditions: tuple[tuple[str, Condition], ...] = ()  # (subject, condition): "Class", "Tags.Modality"...
    require: tuple[tuple[str, Any], ...] = ()           # ("View", "frontal"), ("Rotation", 0), ("Inverted", False)
    continue_: bool = False


@dataclass(frozen=True)
class ConditionResult:
    subject: str
    held: bool
    why: str


@dataclass(frozen=True)
class RuleResult:
    """How one rule fared: every condition's verdict, and whether the film was held."""

    rule: str
    matched: bool
    conditions: tuple[ConditionResult, ...]
    held: Reason | None = None  # lateral, rotated-90, inverted... when a requirement failed
    destinations: tuple[Any, ...] = ()  # where this rule sends the film (QualityRoutes when held)

    def as_dict(self) -> dict[str, Any]:
        return {
            "Rule": self.rule,
            "Matched": self.matched,
            "Held": self.held,
            "Destinations": [str(d) for d in self.destinations],
            "Conditions": [{"On": c.subject, "Holds": c.held, "Why": c.why} for c in self.conditions],
        }


def _subject_value(evidence: Evidence, subject: str) -> Any:
    if subject.startswith("Tags."):
        return evidence.tag(subject[5:])
    return {
        "Class": evidence.class_name, "Region": evidence.region, "Score": evidence.score, "View": evidence.view,
        "Rotation": evidence.rotation, "Inverted": evidence.inverted, "CallingAet": evidence.calling_aet,
    }[subject]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return json_text(value)


def check_condition(evidence: Evidence, subject: str, condition: Condition) -> ConditionResult:
    value = _subject_value(evidence, subject)
    held = condition.holds(value)
    if value is None:
        what = "unknown (the model has no such output)" if subject in ("Region", "View", "Rotation", "Inverted") \
            else "absent"
        return ConditionResult(subject, False, f"{subject} {condition.describe()}: {what}")
    shown = f"{value:.1f} years" if subject == "Tags.PatientAge" and isinstance(value, float) else _shown(value)
    return ConditionResult(subject, held, f"{subject} {condition.describe()}: {shown}")


def hold_reason(evidence: Evidence, require: tuple[tuple[str, Any], ...]) -> Reason | None:
    """The first failed quality requirement (the reason of ``held:<reason>``); None when all pass
    (or cannot be checked because the model does not give that output)."""
    for key, wanted in require:
        if key == "View" and evidence.view is not None and evidence.view != wanted:
            return Reason(evidence.view)
        if key == "Rotation" and evidence.rotation is not None and evidence.rotation != wanted:
            return Reason.rotated(evidence.rotation)
        if key == "Inverted" and evidence.inverted is not None and evidence.inverted != wanted:
            return Reason.INVERTED if evidence.inverted else Reason.NOT_INVERTED
    return None


def evaluate(rules: tuple[Rule, ...], evidence: Evidence,
             quality_routes: tuple[Any, ...] = ()) -> tuple[tuple[RuleResult, ...], tuple[Any, ...], tuple[Reason, ...]]:
    """Run the rules in order: (every rule's result, the destinations, the hold reasons).

    Rules after the last one that matched without ``Continue`` are reported as not tried
    (``explain`` shows them so)."""
    results: list[RuleResult] = []
    destinations: dict[str, Any] = {}
    held: list[Reason] = []
    stopped = False
    for rule in rules:
        if stopped:
            results.append(RuleResult(rule.name, False, (), None, ()))
            continue
        checks = tuple(check_condition(evidence, s, c) for s, c in rule.conditions)
        matched = all(c.held for c in checks)
        reason = hold_reason(evidence, rule.require) if matched else None
        sends: tuple[Any, ...] = ()
        if matched:
            sends = quality_routes if reason else rule.destinations
            for d in sends:
                destinations.setdefault(getattr(d, "key", str(d)), d)
            if reason and reason not in held:
                held.append(reason)
            stopped = not rule.continue_
        results.append(RuleResult(rule.name, matched, checks, reason, sends))
    return tuple(results), tuple(destinations.values()), tuple(held)


def table_rules(routes: Mapping[str, tuple[Any, ...]]) -> tuple[Rule, ...]:
    """The ``{class: [destinations]}`` form as rules: one per class, in the table's order."""
    return tuple(Rule(f"Routes.{cls}", tuple(dests), (("Class", Condition("equals", (cls,))),))
                 for cls, dests in routes.items())
