"""Parsing the ``Routes`` rule list: each rule and condition validated, problems naming the rule and key.

Called by config.parse, which owns the error list and the destination lookup; what the rules
mean and how they are evaluated: :mod:`.rules`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..inference.classes import CLASS_NAMES, UNCERTAIN
from .rules import (
    OPERATOR_KEYS,
    RANGE_KEYS,
    REGIONS,
    REQUIRE_KEYS,
    ROTATIONS,
    RULE_KEYS,
    VIEWS,
    Condition,
    Rule,
    has_wildcard,
    json_text,
)

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
        if allowed is None and has_wildcard(value):
            return Condition("wildcard", (value,))
        return Condition("equals", (value,)) if check_allowed((value,)) else None
    if isinstance(value, list):
        return _one_of(value, key, problems, check_allowed, allowed)
    if not isinstance(value, Mapping):
        problems.append(f"{key}: expected a string, a number, a list or an object, got {value!r}")
        return None
    unknown = [k for k in value if k not in OPERATOR_KEYS]
    if unknown:
        problems.append(f"{key}.{unknown[0]}: unknown operator (use Equals, OneOf, Wildcard, Regex, or a range with "
                        f"Min, Max, Below){_did_you_mean(str(unknown[0]), OPERATOR_KEYS)}")
        return None
    ops = [k for k in value if k in ("Equals", "OneOf", "Wildcard", "Regex")]
    ranges = [k for k in value if k in RANGE_KEYS]
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


def _bad(problems: Problems, message: str) -> Condition | None:
    """Note the problem; always None (no condition), so that a parser can ``return _bad(...)``."""
    problems.append(message)
    return None


def _one_of(values: list[Any], key: str, problems: Problems, check_allowed: Callable[[tuple[Any, ...]], bool],
            allowed: tuple[Any, ...] | None) -> Condition | None:
    if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) and v != "" for v in values):
        return _bad(problems, f"{key}: expected a non-empty list of strings or numbers, got {values!r}")
    if not check_allowed(tuple(values)):
        return None
    wildcard = allowed is None and any(isinstance(v, str) and has_wildcard(v) for v in values)
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
