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

import difflib
import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .audit import age_in_years
from ..inference.classes import CLASS_NAMES, UNCERTAIN

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
_RANGE_KEYS: Final = ("Min", "Max", "Below")
_OPERATOR_KEYS: Final = ("Equals", "OneOf", "Wildcard", "Regex") + _RANGE_KEYS


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
            elif self.operator == "wildcard" and isinstance(expected, str) and _has_wildcard(expected):
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


def _has_wildcard(text: str) -> bool:
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
    held: str | None = None  # "lateral", "rotated-90", "inverted"... when a requirement failed
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


def hold_reason(evidence: Evidence, require: tuple[tuple[str, Any], ...]) -> str | None:
    """The first failed quality requirement, as the suffix of ``held:<reason>``; None when all pass
    (or cannot be checked because the model does not give that output)."""
    for key, wanted in require:
        if key == "View" and evidence.view is not None and evidence.view != wanted:
            return evidence.view
        if key == "Rotation" and evidence.rotation is not None and evidence.rotation != wanted:
            return f"rotated-{evidence.rotation}"
        if key == "Inverted" and evidence.inverted is not None and evidence.inverted != wanted:
            return "inverted" if evidence.inverted else "not-inverted"
    return None


def evaluate(rules: tuple[Rule, ...], evidence: Evidence,
             quality_routes: tuple[Any, ...] = ()) -> tuple[tuple[RuleResult, ...], tuple[Any, ...], tuple[str, ...]]:
    """Run the rules in order: (every rule's result, the destinations, the hold reasons).

    Rules after the last one that matched without ``Continue`` are reported as not tried
    (``explain`` shows them so)."""
    results: list[RuleResult] = []
    destinations: dict[str, Any] = {}
    held: list[str] = []
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


# --------------------------------------------------------------------------------------
# Parsing (called by config.parse, which owns the error list and the destination lookup)
# --------------------------------------------------------------------------------------

Problems = list[str]
DestinationParser = Callable[[Any, str], tuple[Any, ...]]


def _did_you_mean(value: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _dicom_keyword_known(keyword: str) -> bool:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword) is not None


def parse_condition(value: Any, key: str, problems: Problems, *, numeric: bool = False,
                    allowed: tuple[Any, ...] | None = None) -> Condition | None:
    """One condition value (see the module docstring). ``allowed`` restricts equality values
    (classes, regions...); ``numeric`` allows ranges only."""
    def check_allowed(values: tuple[Any, ...]) -> bool:
        if allowed is None:
            return True
        ok = True
        for v in values:
            if v not in allowed:
                hint = _did_you_mean(str(v), [str(a) for a in allowed])
                problems.append(f"{key}: {json_text(v)} is not one of {', '.join(json_text(a) for a in allowed)}{hint}")
                ok = False
        return ok

    if numeric and not isinstance(value, Mapping):
        problems.append(f'{key}: expected a range such as {{"Min": 0.8}} (keys Min, Max, Below), got {value!r}')
        return None
    if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
        return Condition("equals", (value,)) if check_allowed((value,)) else None
    if isinstance(value, str):
        if not value.strip():
            problems.append(f"{key}: expected a value, got an empty string")
            return None
        if allowed is None and _has_wildcard(value):
            return Condition("wildcard", (value,))
        return Condition("equals", (value,)) if check_allowed((value,)) else None
    if isinstance(value, list):
        return _one_of(value, key, problems, check_allowed, allowed)
    if not isinstance(value, Mapping):
        problems.append(f"{key}: expected a string, a number, a list or an object, got {value!r}")
        return None
    unknown = [k for k in value if k not in _OPERATOR_KEYS]
    if unknown:
        problems.append(f"{key}.{unknown[0]}: unknown operator (use Equals, OneOf, Wildcard, Regex, or a range with "
                        f"Min, Max, Below){_did_you_mean(str(unknown[0]), _OPERATOR_KEYS)}")
        return None
    ops = [k for k in value if k in ("Equals", "OneOf", "Wildcard", "Regex")]
    ranges = [k for k in value if k in _RANGE_KEYS]
    if len(ops) + (1 if ranges else 0) != 1:
        problems.append(f"{key}: give exactly one operator (Equals, OneOf, Wildcard, Regex, or Min/Max/Below), "
                        f"got {sorted(value)}")
        return None
    if numeric and ops:
        problems.append(f"{key}: expected a range (Min, Max, Below), got {ops[0]}")
        return None
    if ranges:
        bounds: dict[str, float] = {}
        for k in ranges:
            v = value[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{key}.{k}: expected a number, got {v!r}")
                return None
            bounds[k] = float(v)
        low, high, below = bounds.get("Min"), bounds.get("Max"), bounds.get("Below")
        if low is not None and ((high is not None and high < low) or (below is not None and below <= low)):
            problems.append(f"{key}: the range is empty (Min {low:g} is above its upper bound)")
            return None
        return Condition("range", low=low, high=high, below=below)
    op = ops[0]
    arg = value[op]
    if op == "Equals":  # exact, even with * or ? in it
        if isinstance(arg, (list, Mapping)) or arg is None or arg == "":
            return _bad(problems, f"{key}.Equals: expected a single value, got {arg!r}")
        return Condition("equals", (arg,)) if check_allowed((arg,)) else None
    if op == "OneOf":
        if not isinstance(arg, list):
            return _bad(problems, f"{key}.OneOf: expected a list, got {arg!r}")
        return _one_of(arg, key + ".OneOf", problems, check_allowed, allowed)
    if not isinstance(arg, str) or not arg:
        return _bad(problems, f"{key}.{op}: expected a non-empty string, got {arg!r}")
    if op == "Wildcard":
        return Condition("wildcard", (arg,))
    try:
        return Condition("regex", pattern=re.compile(arg))
    except re.error as exc:
        return _bad(problems, f"{key}.Regex: invalid regular expression {arg!r}: {exc}")


def _bad(problems: Problems, message: str) -> None:
    problems.append(message)
    return None


def _one_of(values: list[Any], key: str, problems: Problems, check_allowed: Callable[[tuple[Any, ...]], bool],
            allowed: tuple[Any, ...] | None) -> Condition | None:
    if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) and v != "" for v in values):
        return _bad(problems, f"{key}: expected a non-empty list of strings or numbers, got {values!r}")
    if not check_allowed(tuple(values)):
        return None
    wildcard = allowed is None and any(isinstance(v, str) and _has_wildcard(v) for v in values)
    return Condition("wildcard" if wildcard else "one-of", tuple(values))


def parse_rules(value: list[Any], where: str, problems: Problems, destinations: DestinationParser) -> tuple[Rule, ...]:
    """The list form of ``Routes``; problems name the rule (``Routes[2] "adult chest AI"``) and the key."""
    rules: list[Rule] = []
    names: set[str] = set()
    for i, raw in enumerate(value):
        if not isinstance(raw, Mapping):
            problems.append(f"{where}[{i}]: expected a rule object with Destinations, got {raw!r}")
            continue
        name = raw.get("Name")
        if name is not None and not (isinstance(name, str) and name.strip()):
            problems.append(f"{where}[{i}].Name: expected a non-empty string, got {name!r}")
            name = None
        label = f'{where}[{i}] "{name.strip()}"' if name else f"{where}[{i}]"
        rule_name = name.strip() if name else f"rule {i + 1}"
        if rule_name in names:
            problems.append(f"{label}.Name: another rule has the same name; names identify rules in explain")
        names.add(rule_name)
        known_keys = ", ".join(RULE_KEYS)
        for k in raw:
            if k not in RULE_KEYS:
                hint = _did_you_mean(str(k), RULE_KEYS) or f" (known keys: {known_keys})"
                problems.append(f"{label}.{k}: unknown key{hint}")
        conditions: list[tuple[str, Condition]] = []
        simple: dict[str, dict[str, Any]] = {
            "Class": {"allowed": CLASS_NAMES + (UNCERTAIN,)},
            "Region": {"allowed": REGIONS},
            "Score": {"numeric": True},
            "View": {"allowed": VIEWS},
            "Rotation": {"allowed": ROTATIONS},
            "Inverted": {"allowed": (True, False)},
            "CallingAet": {},
        }
        for subject, options in simple.items():
            if subject in raw:
                c = parse_condition(raw[subject], f"{label}.{subject}", problems, **options)
                if c is not None:
                    conditions.append((subject, c))
        tags = raw.get("Tags", {})
        if not isinstance(tags, Mapping):
            problems.append(f"{label}.Tags: expected an object {{keyword: condition}}, got {tags!r}")
            tags = {}
        for keyword, cond in tags.items():
            k = f"{label}.Tags.{keyword}"
            if not _dicom_keyword_known(str(keyword)):
                problems.append(f"{k}: not a DICOM keyword (write it as in the standard, e.g. BodyPartExamined, "
                                f"InstitutionName, PatientAge)")
                continue
            c = parse_condition(cond, k, problems)
            if c is not None:
                conditions.append((f"Tags.{keyword}", c))
        require: list[tuple[str, Any]] = []
        req = raw.get("Require", {})
        if not isinstance(req, Mapping):
            problems.append(f'{label}.Require: expected an object such as {{"View": "frontal", "Rotation": 0, '
                            f'"Inverted": false}}, got {req!r}')
            req = {}
        for k, v in req.items():
            choices: tuple[Any, ...] = {"View": VIEWS, "Rotation": ROTATIONS, "Inverted": (False, True)}.get(k, ())
            if k not in REQUIRE_KEYS:
                problems.append(f"{label}.Require.{k}: unknown requirement (use View, Rotation, Inverted)"
                                f"{_did_you_mean(str(k), REQUIRE_KEYS)}")
            elif v not in choices or (k != "Inverted" and isinstance(v, bool)):
                problems.append(f"{label}.Require.{k}: expected one of {', '.join(json_text(c) for c in choices)}, "
                                f"got {v!r}")
            else:
                require.append((k, v))
        if "Destinations" not in raw:
            problems.append(f"{label}.Destinations: missing; name where matching instances go ([] for nowhere)")
        dests = destinations(raw.get("Destinations", []), f"{label}.Destinations")
        cont = raw.get("Continue", False)
        if not isinstance(cont, bool):
            problems.append(f"{label}.Continue: expected true or false, got {cont!r}")
            cont = False
        rules.append(Rule(rule_name, tuple(dests), tuple(conditions), tuple(require), cont))
    return tuple(rules)


def table_rules(routes: Mapping[str, tuple[Any, ...]]) -> tuple[Rule, ...]:
    """The ``{class: [destinations]}`` form as rules: one per class, in the table's order."""
    return tuple(Rule(f"Routes.{cls}", tuple(dests), (("Class", Condition("equals", (cls,))),))
                 for cls, dests in routes.items())
