"""The ``"BodyPartRouter"`` section of the Orthanc configuration: one schema, validated once.

The section is checked at start-up against the *whole* Orthanc configuration, so that a
route naming a destination that does not exist is caught before the first X-ray arrives.
Every problem is reported at once, each naming its key and what to fix, e.g.::

    BodyPartRouter.Routes.spine[1]: "ai-spne" is not a DicomModalities or OrthancPeers name
    (known: ai-chest, ai-spine)

Relative paths (``ModelPath``, ``PythonEnvironment``, ``StateDirectory``) are resolved
against the directory of the Orthanc configuration file, like Orthanc's own paths, so a
checkout's ``orthanc-config/orthanc.json`` can say ``../models/bodypart_router.onnx``.

This module never imports ``orthanc``: the adapter hands it plain dicts.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .inference.classes import CLASS_NAMES, UNCERTAIN
from .routing.rule_parsing import parse_rules
from .routing.rules import Rule, table_rules
from .imaging.xray_policy import DEFAULT_MODALITIES, DEFAULT_SOP_CLASSES, XrayPolicy

SECTION = "BodyPartRouter"
DEFAULT_MODEL_PATH = "../models/bodypart_router.onnx"

#: What happens to a prediction below ``MinimumScore``.
BELOW_MINIMUM_CHOICES = ("uncertain", "route")

#: How the header's body part weighs in on the class (see fusion.py).
HEADER_EVIDENCE_CHOICES = ("off", "tie-break", "prior")

#: When a film is routed: as soon as it is classified, or once its series is stable (see series.py).
DECISION_LEVELS = ("instance", "series")

#: Destination kinds and the Orthanc configuration section that declares their names.
DESTINATION_SECTIONS = {
    "modality": "DicomModalities",
    "peer": "OrthancPeers",
    "dicomweb": "DicomWeb.Servers",
}


#: Instance metadata the router writes; each must be declared in Orthanc's ``UserMetadata``.
METADATA_NAMES: tuple[str, ...] = ("BodyPart", "BodyPartScore", "BodyPartModel", "BodyPartState", "BodyPartForwarded")
#: The whole result in one JSON value: with it declared, the names above are optional (one write
#: per change instead of one per value; see orthanc_plugin/results.py).
RESULT_METADATA = "BodyPartResult"


class ConfigError(ValueError):
    """The section is invalid. ``problems`` holds one line per problem (key: what to fix)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid BodyPartRouter configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Destination:
    """Where an instance can be forwarded: a DICOM modality, an Orthanc peer or a DICOMweb server."""

    kind: str  # "modality" | "peer" | "dicomweb"
    name: str

    def __str__(self) -> str:
        return self.name

    @property
    def key(self) -> str:
        """Stable identifier used in the state store and in metadata (``peer:ai-chest``)."""
        return f"{self.kind}:{self.name}"

    @classmethod
    def from_key(cls, key: str) -> Destination:
        kind, _, name = key.partition(":")
        return cls(kind, name)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``BackoffSeconds * 2**(attempt-1)``, capped; dead letter after ``MaxAttempts``."""

    max_attempts: int = 8
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 300.0


@dataclass(frozen=True)
class RouterConfig:
    """The validated section. Field docs: see ``orthanc-config/orthanc.json``."""

    enabled: bool = True
    model_path: Path = Path(DEFAULT_MODEL_PATH)
    model_sha256: str | None = None
    python_environment: Path | None = None
    routes: Mapping[str, tuple[Destination, ...]] = field(default_factory=dict)
    minimum_score: float = 0.5
    below_minimum: str = "uncertain"
    uncertain_routes: tuple[Destination, ...] = ()
    #: The routing rules, in order (the table form of ``Routes`` becomes one rule per class).
    rules: tuple[Rule, ...] = ()
    #: Where films held by a rule's quality requirements go (``[]`` = nowhere).
    quality_routes: tuple[Destination, ...] = ()
    #: How the header's body part weighs in (see fusion.py): "off", "tie-break" or "prior".
    header_evidence: str = "prior"
    #: Share of headers assumed wrong: the strength of the header as a prior.
    header_error_rate: float = 0.5
    #: "instance": each film is routed as soon as it is classified; "series": once its series is
    #: stable, by a vote of the series' films (see series.py).
    decision_level: str = "instance"
    #: In series mode, a film disagreeing with its series keeps its own class from this score.
    series_confident_score: float = 0.9
    policy: XrayPolicy = field(default_factory=XrayPolicy)
    workers: int = 1
    batch_size: int = 8
    queue_size: int = 1000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_threshold: int = 3
    state_directory: Path = Path("bodypart-router-state")
    changes_poll_seconds: float = 1.0
    job_poll_seconds: float = 0.25
    shadow_mode: bool = False
    verify_before_resend: bool = True
    #: Decode and classify in a child process (see engine.py); False runs them in Orthanc's.
    classify_in_child_process: bool = True
    #: Hold classification back while Orthanc uses this many cores (None: a quarter of the
    #: machine, see ingest_gate.py), for at most ``yield_max_wait_seconds`` per batch (0: never).
    yield_busy_cores: float | None = None
    yield_max_wait_seconds: float = 10.0
    #: Write ``BodyPartState = skipped:<reason>`` on instances that are not X-rays. Off by default:
    #: an instance the router does not route is left exactly as Orthanc stored it (no index write).
    mark_skipped: bool = False
    #: Several nodes on one index: a node's claim on an instance lapses when the node has not
    #: renewed it for this long, and another node takes the instance over (see claims.py).
    claim_lease_seconds: float = 60.0
    #: Deliveries to one destination sent by one Orthanc job: each job costs the index about as
    #: much as the store of an instance, whatever it carries (see delivery.py).
    forward_batch_size: int = 16

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """Every destination named anywhere in the routes, once, in a stable order."""
        seen: dict[str, Destination] = {}
        rule_dests = [r.destinations for r in self.rules]
        for dests in list(self.routes.values()) + rule_dests + [self.uncertain_routes, self.quality_routes]:
            for d in dests:
                seen.setdefault(d.key, d)
        return tuple(seen[k] for k in sorted(seen))


# --------------------------------------------------------------------------------------
# Schema: key -> (parser, default). Parsers take (value, key_path, problems) and return the
# parsed value or None after appending a problem.
# --------------------------------------------------------------------------------------

_Problems = list[str]


def _bool(value: Any, key: str, problems: _Problems) -> bool | None:
    if isinstance(value, bool):
        return value
    problems.append(f"{key}: expected true or false, got {value!r}")
    return None


def _number(lo: float, hi: float, *, integer: bool = False) -> Callable[[Any, str, _Problems], float | None]:
    def parse(value: Any, key: str, problems: _Problems) -> float | None:
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or (isinstance(value, float) and not math.isfinite(value)):
            kind = "an integer" if integer else "a number"
            problems.append(f"{key}: expected {kind} between {lo:g} and {hi:g}, got {value!r}")
            return None
        if not lo <= value <= hi:
            problems.append(f"{key}: {value!r} is out of range, use a value between {lo:g} and {hi:g}")
            return None
        return value

    return parse


def _string(value: Any, key: str, problems: _Problems) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    problems.append(f"{key}: expected a non-empty string, got {value!r}")
    return None


def _optional_sha256(value: Any, key: str, problems: _Problems) -> str | None:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else ""
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    problems.append(f"{key}: expected the model's SHA-256 as 64 hex digits (or null), got {value!r}")
    return None


def _string_list(value: Any, key: str, problems: _Problems) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    problems.append(f"{key}: expected a list of strings, got {value!r}")
    return None


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str, _Problems], str | None]:
    def parse(value: Any, key: str, problems: _Problems) -> str | None:
        if value in choices:
            return str(value)
        problems.append(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return None

    return parse


def _unknown_key(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        # case-insensitive second chance: "minimumscore" -> "MinimumScore"
        lowered = {k.lower(): k for k in known}
        if key.lower() in lowered:
            close = [lowered[key.lower()]]
    hint = f'; did you mean "{close[0]}"?' if close else f" (known keys: {', '.join(sorted(known))})"
    return f'{where}.{key}: unknown key{hint}'


_SUB_SCHEMAS: dict[str, dict[str, Callable[[Any, str, _Problems], Any]]] = {
    "Retry": {
        "MaxAttempts": _number(1, 1000, integer=True),
        "BackoffSeconds": _number(0.01, 3600),
        "MaxBackoffSeconds": _number(0.01, 86400),
    },
    "CircuitBreaker": {
        "FailureThreshold": _number(1, 1000, integer=True),
    },
    "YieldToIngest": {
        "BusyCores": _number(0.05, 1024),
        "MaxWaitSeconds": _number(0, 3600),
    },
}

_TOP_LEVEL = [
    "Enabled", "ModelPath", "ModelSha256", "PythonEnvironment", "Routes", "MinimumScore",
    "BelowMinimum", "UncertainRoutes", "Modalities", "SOPClasses", "AcceptMissingModality",
    "Workers", "BatchSize", "QueueSize", "Retry", "CircuitBreaker", "StateDirectory",
    "ChangesPollSeconds", "JobPollSeconds", "ShadowMode", "VerifyBeforeResend",
    "ClassifyInChildProcess", "YieldToIngest", "QualityRoutes", "HeaderEvidence", "HeaderErrorRate",
    "MarkSkipped", "DecisionLevel", "SeriesConfidentScore",
    "ClaimLeaseSeconds", "ForwardBatchSize",
]


def known_destinations(orthanc_config: Mapping[str, Any]) -> dict[str, list[Destination]]:
    """Destination names declared in the Orthanc configuration, by name (a name may be ambiguous)."""
    found: dict[str, list[Destination]] = {}
    sections = {
        "modality": orthanc_config.get("DicomModalities") or {},
        "peer": orthanc_config.get("OrthancPeers") or {},
        "dicomweb": (orthanc_config.get("DicomWeb") or {}).get("Servers") or {},
    }
    for kind, names in sections.items():
        if isinstance(names, Mapping):
            for name in names:
                found.setdefault(str(name), []).append(Destination(kind, str(name)))
    return found


def _destination(value: Any, key: str, known: dict[str, list[Destination]], problems: _Problems) -> Destination | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{key}: expected a destination name (a string), got {value!r}")
        return None
    text = value.strip()
    kind, sep, name = text.partition(":")
    if sep and kind in DESTINATION_SECTIONS:  # explicit "peer:ai-chest"
        if any(d.kind == kind for d in known.get(name, [])):
            return Destination(kind, name)
        names = sorted(n for n, ds in known.items() if any(d.kind == kind for d in ds))
        problems.append(
            f'{key}: "{name}" is not a {DESTINATION_SECTIONS[kind]} name (known: {", ".join(names) or "none"})'
        )
        return None
    matches = known.get(text, [])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = " or ".join(f'"{d.key}"' for d in matches)
        problems.append(f'{key}: "{text}" is declared in several sections; write {options}')
        return None
    close = difflib.get_close_matches(text, list(known), n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    problems.append(
        f'{key}: "{text}" is not a DicomModalities or OrthancPeers name '
        f'(known: {", ".join(sorted(known)) or "none"}){hint}'
    )
    return None


def _destination_list(
    value: Any, key: str, known: dict[str, list[Destination]], problems: _Problems
) -> tuple[Destination, ...]:
    if not isinstance(value, list):
        problems.append(f"{key}: expected a list of destination names, got {value!r}")
        return ()
    out = [_destination(v, f"{key}[{i}]", known, problems) for i, v in enumerate(value)]
    return tuple(d for d in out if d is not None)


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def parse(
    section: Any,
    orthanc_config: Mapping[str, Any],
    *,
    base_dir: Path,
    check_paths: bool = True,
) -> RouterConfig:
    """Validate ``section`` (the ``BodyPartRouter`` value) against the whole Orthanc config.

    ``base_dir`` is the directory of the Orthanc configuration file. ``check_paths`` also
    checks that the model file exists. Raises :class:`ConfigError` listing every problem.
    """
    problems: _Problems = []
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError([f"{SECTION}: expected a JSON object, got {type(section).__name__}"])

    for key in section:
        if key not in _TOP_LEVEL:
            problems.append(_unknown_key(str(key), _TOP_LEVEL, SECTION))

    def get(key: str, parser: Callable[[Any, str, _Problems], Any], default: Any) -> Any:
        if key not in section:
            return default
        value = parser(section[key], f"{SECTION}.{key}", problems)
        return default if value is None else value

    known = known_destinations(orthanc_config)
    enabled = get("Enabled", _bool, RouterConfig.enabled)
    model_path = _resolve(get("ModelPath", _string, DEFAULT_MODEL_PATH), base_dir)
    if check_paths and enabled and not model_path.is_file():
        problems.append(
            f"{SECTION}.ModelPath: model file {model_path} does not exist "
            "(build it with `make train`, or point ModelPath at an .onnx file)"
        )
    model_sha = _optional_sha256(section.get("ModelSha256"), f"{SECTION}.ModelSha256", problems)
    env = get("PythonEnvironment", _string, None)

    routes: dict[str, tuple[Destination, ...]] = {}
    rules: tuple[Rule, ...] = ()
    raw_routes = section.get("Routes", {})
    if isinstance(raw_routes, list):
        rules = parse_rules(raw_routes, f"{SECTION}.Routes", problems,
                            lambda value, key: _destination_list(value, key, known, problems))
        raw_routes = {}
    elif not isinstance(raw_routes, Mapping):
        problems.append(f"{SECTION}.Routes: expected an object {{class: [destination, ...]}} or a list of rules, "
                        f"got {raw_routes!r}")
        raw_routes = {}
    for cls, dests in raw_routes.items():
        key = f"{SECTION}.Routes.{cls}"
        if cls == UNCERTAIN:
            problems.append(f"{key}: route uncertain predictions with {SECTION}.UncertainRoutes instead")
            continue
        if cls not in CLASS_NAMES:
            close = difflib.get_close_matches(str(cls), CLASS_NAMES, n=1, cutoff=0.5)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            problems.append(f"{key}: unknown class (classes: {', '.join(CLASS_NAMES)}){hint}")
            continue
        routes[cls] = _destination_list(dests, key, known, problems)
    if routes:
        rules = table_rules(routes)
    uncertain_routes = (
        _destination_list(section["UncertainRoutes"], f"{SECTION}.UncertainRoutes", known, problems)
        if "UncertainRoutes" in section
        else ()
    )
    quality_routes = (
        _destination_list(section["QualityRoutes"], f"{SECTION}.QualityRoutes", known, problems)
        if "QualityRoutes" in section
        else ()
    )

    modalities = get("Modalities", _string_list, tuple(sorted(DEFAULT_MODALITIES)))
    sop_classes = get("SOPClasses", _string_list, tuple(sorted(DEFAULT_SOP_CLASSES)))
    accept_missing = get("AcceptMissingModality", _bool, True)

    sub: dict[str, dict[str, Any]] = {}
    for name, schema in _SUB_SCHEMAS.items():
        raw = section.get(name, {})
        sub[name] = {}
        if not isinstance(raw, Mapping):
            problems.append(f"{SECTION}.{name}: expected a JSON object, got {raw!r}")
            continue
        for k, v in raw.items():
            if k not in schema:
                problems.append(_unknown_key(str(k), list(schema), f"{SECTION}.{name}"))
                continue
            parsed = schema[k](v, f"{SECTION}.{name}.{k}", problems)
            if parsed is not None:
                sub[name][k] = parsed
    retry = RetryPolicy(
        max_attempts=int(sub["Retry"].get("MaxAttempts", RetryPolicy.max_attempts)),
        backoff_seconds=float(sub["Retry"].get("BackoffSeconds", RetryPolicy.backoff_seconds)),
        max_backoff_seconds=float(sub["Retry"].get("MaxBackoffSeconds", RetryPolicy.max_backoff_seconds)),
    )
    if retry.max_backoff_seconds < retry.backoff_seconds:
        problems.append(
            f"{SECTION}.Retry.MaxBackoffSeconds: {retry.max_backoff_seconds:g} is below "
            f"Retry.BackoffSeconds ({retry.backoff_seconds:g}); raise it"
        )

    storage = orthanc_config.get("StorageDirectory", "OrthancStorage")
    default_state = _resolve(str(storage), base_dir) / "bodypart-router"
    state_dir = get("StateDirectory", _string, None)

    user_metadata = orthanc_config.get("UserMetadata") or {}
    missing = [m for m in METADATA_NAMES if m not in user_metadata]
    if enabled and missing and RESULT_METADATA not in user_metadata:
        problems.append(
            f'UserMetadata: declare "{RESULT_METADATA}" (the whole result in one JSON value), or '
            + ", ".join(f'"{m}"' for m in missing)
            + " (numbers from 1024 up, e.g. \"BodyPart\": 1024) so that the router can store its results"
        )

    config = RouterConfig(
        enabled=enabled,
        model_path=model_path,
        model_sha256=model_sha,
        python_environment=_resolve(env, base_dir) if env else None,
        routes=routes,
        minimum_score=float(get("MinimumScore", _number(0.0, 1.0), RouterConfig.minimum_score)),
        below_minimum=get("BelowMinimum", _choice(BELOW_MINIMUM_CHOICES), RouterConfig.below_minimum),
        uncertain_routes=uncertain_routes,
        rules=rules,
        quality_routes=quality_routes,
        header_evidence=get("HeaderEvidence", _choice(HEADER_EVIDENCE_CHOICES), RouterConfig.header_evidence),
        header_error_rate=float(get("HeaderErrorRate", _number(0.001, 0.75), RouterConfig.header_error_rate)),
        decision_level=get("DecisionLevel", _choice(DECISION_LEVELS), RouterConfig.decision_level),
        series_confident_score=float(get("SeriesConfidentScore", _number(0.0, 1.0),
                                         RouterConfig.series_confident_score)),
        policy=XrayPolicy(
            modalities=frozenset(m.upper() for m in modalities),
            sop_classes=frozenset(sop_classes),
            accept_missing_modality=accept_missing,
        ),
        workers=int(get("Workers", _number(1, 16, integer=True), RouterConfig.workers)),
        batch_size=int(get("BatchSize", _number(1, 256, integer=True), RouterConfig.batch_size)),
        queue_size=int(get("QueueSize", _number(1, 1_000_000, integer=True), RouterConfig.queue_size)),
        retry=retry,
        breaker_threshold=int(sub["CircuitBreaker"].get("FailureThreshold", RouterConfig.breaker_threshold)),
        state_directory=_resolve(state_dir, base_dir) if state_dir else default_state,
        changes_poll_seconds=float(get("ChangesPollSeconds", _number(0.05, 60), RouterConfig.changes_poll_seconds)),
        job_poll_seconds=float(get("JobPollSeconds", _number(0.01, 10), RouterConfig.job_poll_seconds)),
        shadow_mode=get("ShadowMode", _bool, RouterConfig.shadow_mode),
        verify_before_resend=get("VerifyBeforeResend", _bool, RouterConfig.verify_before_resend),
        classify_in_child_process=get("ClassifyInChildProcess", _bool, RouterConfig.classify_in_child_process),
        yield_busy_cores=sub["YieldToIngest"].get("BusyCores", RouterConfig.yield_busy_cores),
        yield_max_wait_seconds=float(sub["YieldToIngest"].get("MaxWaitSeconds", RouterConfig.yield_max_wait_seconds)),
        mark_skipped=get("MarkSkipped", _bool, RouterConfig.mark_skipped),
        claim_lease_seconds=float(get("ClaimLeaseSeconds", _number(1, 86400), RouterConfig.claim_lease_seconds)),
        forward_batch_size=int(get("ForwardBatchSize", _number(1, 1000, integer=True), RouterConfig.forward_batch_size)),
    )
    if problems:
        raise ConfigError(problems)
    return config


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments (which Orthanc accepts) outside strings, for ``json.loads``."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load_orthanc_json(path: Path) -> dict[str, Any]:
    """Read an Orthanc configuration file the way Orthanc does (comments allowed)."""
    return json.loads(strip_json_comments(Path(path).read_text(encoding="utf-8")))
