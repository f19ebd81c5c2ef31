"""Validate the ``"BodyPartRouter"`` section against the schema and the whole Orthanc configuration.

Every problem is collected, each naming its key and what to fix; :class:`ConfigError` then
carries them all, so an operator fixes the file once rather than once per restart.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..errors import BodyPartRouterError
from ..imaging.xray_policy import XrayPolicy
from ..inference.classes import CLASS_NAMES, UNCERTAIN
from ..retry import Retry
from ..routing.rule_parsing import parse_rules
from ..routing.rules import Rule, table_rules
from .destinations import Destination, destination_list, known_destinations
from .orthanc_config import shared_index
from .schema import (
    CLAIM_METADATA,
    CLASSIC_METADATA,
    DEFAULT_MODEL_PATH,
    KEYS,
    METADATA_NAMES,
    RESULT_METADATA,
    SECTION,
    Key,
    Problems,
    default,
    destinations,
    json_object,
    routes,
)

#: RouterConfig fields that ``parse`` assembles from several keys or resolves (not one key's value).
ASSEMBLED_FIELDS: Final = frozenset({
    "model_path", "python_environment", "routes", "rules", "uncertain_routes", "quality_routes", "policy",
    "retry", "state_directory",
})


class ConfigError(BodyPartRouterError, ValueError):
    """The section is invalid. ``problems`` holds one line per problem (key: what to fix)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid {SECTION} configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class RetryPolicy(Retry):
    """The ``Retry`` section: the forwarding's :class:`~bodypart_router.retry.Retry` policy, its
    defaults from the schema (exponential backoff, dead letter after ``MaxAttempts``)."""

    max_attempts: int = default("Retry.MaxAttempts")
    backoff_seconds: float = default("Retry.BackoffSeconds")
    max_backoff_seconds: float = default("Retry.MaxBackoffSeconds")


@dataclass(frozen=True)
class RouterConfig:
    """The validated section; each field's key, default and meaning are in :mod:`.schema`."""

    enabled: bool = default("Enabled")
    model_path: Path = Path(DEFAULT_MODEL_PATH)
    model_sha256: str | None = default("ModelSha256")
    python_environment: Path | None = None
    routes: Mapping[str, tuple[Destination, ...]] = field(default_factory=dict)
    minimum_score: float = default("MinimumScore")
    below_minimum: str = default("BelowMinimum")
    uncertain_routes: tuple[Destination, ...] = ()
    #: The routing rules, in order (the table form of ``Routes`` becomes one rule per class).
    rules: tuple[Rule, ...] = ()
    quality_routes: tuple[Destination, ...] = ()
    header_evidence: str = default("HeaderEvidence")
    header_error_rate: float = default("HeaderErrorRate")
    decision_level: str = default("DecisionLevel")
    series_confident_score: float = default("SeriesConfidentScore")
    policy: XrayPolicy = field(default_factory=XrayPolicy)
    workers: int = default("Workers")
    batch_size: int = default("BatchSize")
    queue_size: int = default("QueueSize")
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_threshold: int = default("CircuitBreaker.FailureThreshold")
    state_directory: Path = Path("bodypart-router-state")
    changes_poll_seconds: float = default("ChangesPollSeconds")
    job_poll_seconds: float = default("JobPollSeconds")
    shadow_mode: bool = default("ShadowMode")
    verify_before_resend: bool = default("VerifyBeforeResend")
    classify_in_child_process: bool = default("ClassifyInChildProcess")
    #: None: a quarter of the machine's cores (see ingest_gate.py).
    yield_busy_cores: float | None = default("YieldToIngest.BusyCores")
    yield_busy_arrivals_per_s: float = default("YieldToIngest.BusyArrivalsPerSecond")
    yield_max_wait_seconds: float = default("YieldToIngest.MaxWaitSeconds")
    mark_skipped: bool = default("MarkSkipped")
    labels: bool = default("Labels")
    claim_lease_seconds: float = default("ClaimLeaseSeconds")
    forward_batch_size: int = default("ForwardBatchSize")

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """Every destination named anywhere in the routes, once, in a stable order."""
        seen: dict[str, Destination] = {}
        rule_dests = [r.destinations for r in self.rules]
        for dests in list(self.routes.values()) + rule_dests + [self.uncertain_routes, self.quality_routes]:
            for d in dests:
                seen.setdefault(d.key, d)
        return tuple(seen[k] for k in sorted(seen))


def _unknown_key(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        # case-insensitive second chance: "minimumscore" -> "MinimumScore"
        lowered = {k.lower(): k for k in known}
        if key.lower() in lowered:
            close = [lowered[key.lower()]]
    hint = f'; did you mean "{close[0]}"?' if close else f" (known keys: {', '.join(sorted(known))})"
    return f"{where}.{key}: unknown key{hint}"


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _checked(key: Key, raw: Any, where: str, problems: Problems) -> Any:
    """The value of one key, or its default when it is absent or wrong (the problem is recorded)."""
    value = key.check(raw, where, problems)
    if value is None:
        return key.default
    number_range = getattr(key.check, "range", None)
    if number_range is not None:
        return int(value) if number_range[2] else float(value)
    return value


def _object(key: Key, raw: Any, where: str, problems: Problems) -> dict[str, Any]:
    """An object key (``Retry``...): its keys' values by name, defaults for those absent or wrong."""
    values = {k.name: k.default for k in key.keys}
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a JSON object, got {raw!r}")
        return values
    by_name = {k.name: k for k in key.keys}
    for name, value in raw.items():
        if name not in by_name:
            problems.append(_unknown_key(str(name), list(by_name), where))
        else:
            values[name] = _checked(by_name[name], value, f"{where}.{name}", problems)
    return values


def _routes(raw: Any, where: str, known: Mapping[str, list[Destination]],
            problems: Problems) -> tuple[dict[str, tuple[Destination, ...]], tuple[Rule, ...]]:
    """``Routes``: the ``{class: [destination, ...]}`` table, or the list of rules."""
    def dests(value: Any, key: str) -> tuple[Destination, ...]:
        return destination_list(value, key, known, problems)

    if isinstance(raw, list):
        return {}, parse_rules(raw, where, problems, dests)
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected an object {{class: [destination, ...]}} or a list of rules, got {raw!r}")
        return {}, ()
    table: dict[str, tuple[Destination, ...]] = {}
    for cls, value in raw.items():
        key = f"{where}.{cls}"
        if cls == UNCERTAIN:
            problems.append(f"{key}: route uncertain predictions with {SECTION}.UncertainRoutes instead")
        elif cls not in CLASS_NAMES:
            close = difflib.get_close_matches(str(cls), CLASS_NAMES, n=1, cutoff=0.5)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            problems.append(f"{key}: unknown class (classes: {', '.join(CLASS_NAMES)}){hint}")
        else:
            table[cls] = dests(value, key)
    return table, table_rules(table) if table else ()


def metadata_problems(orthanc_config: Mapping[str, Any], *, enabled: bool) -> list[str]:
    """What ``UserMetadata`` lacks for the router to store its results, and names that look like a
    mistyped router name (the router would silently write nothing under them)."""
    declared = orthanc_config.get("UserMetadata") or {}
    problems: list[str] = []
    missing = [m for m in CLASSIC_METADATA if m not in declared]
    if enabled and missing and RESULT_METADATA not in declared:
        problems.append(
            f'UserMetadata: declare "{RESULT_METADATA}" (the whole result in one JSON value), or '
            + ", ".join(f'"{m}"' for m in missing)
            + ' (numbers from 1024 up, e.g. "BodyPart": 1024) so that the router can store its results'
        )
    if enabled and CLAIM_METADATA not in declared and shared_index(orthanc_config):
        problems.append(f'UserMetadata: declare "{CLAIM_METADATA}" (for example 1030): several nodes share this '
                        "index and the router records which node handles each instance there")
    lowered = {m.lower(): m for m in METADATA_NAMES}
    for name in declared:
        text = str(name)
        if text in METADATA_NAMES or not text.lower().startswith("bodypart"):
            continue
        close = [lowered[text.lower()]] if text.lower() in lowered else difflib.get_close_matches(
            text, METADATA_NAMES, n=1, cutoff=0.85)
        if close:
            problems.append(f'UserMetadata.{text}: not a name the router writes; did you mean "{close[0]}"?')
    return problems


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
    problems: Problems = []
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError([f"{SECTION}: expected a JSON object, got {type(section).__name__}"])
    names = [k.name for k in KEYS]
    for name in section:
        if name not in names:
            problems.append(_unknown_key(str(name), names, SECTION))

    known = known_destinations(orthanc_config)
    values: dict[str, Any] = {}
    table: dict[str, tuple[Destination, ...]] = {}
    rules: tuple[Rule, ...] = ()
    for key in KEYS:
        where = f"{SECTION}.{key.name}"
        present = key.name in section
        raw = section.get(key.name)
        if key.check is json_object:
            values.update((f"{key.name}.{name}", value) for name, value in
                          _object(key, raw if present else {}, where, problems).items())
        elif key.check is destinations:
            values[key.name] = destination_list(raw, where, known, problems) if present else ()
        elif key.check is routes:
            table, rules = _routes(raw if present else {}, where, known, problems)
        else:
            values[key.name] = _checked(key, raw, where, problems) if present else key.default

    enabled = values["Enabled"]
    model_path = _resolve(values["ModelPath"], base_dir)
    if check_paths and enabled and not model_path.is_file():
        problems.append(
            f"{SECTION}.ModelPath: model file {model_path} does not exist "
            "(build it with `make train`, or point ModelPath at an .onnx file)"
        )
    retry = RetryPolicy(
        max_attempts=values["Retry.MaxAttempts"],
        backoff_seconds=values["Retry.BackoffSeconds"],
        max_backoff_seconds=values["Retry.MaxBackoffSeconds"],
    )
    if retry.max_backoff_seconds < retry.backoff_seconds:
        problems.append(
            f"{SECTION}.Retry.MaxBackoffSeconds: {retry.max_backoff_seconds:g} is below "
            f"Retry.BackoffSeconds ({retry.backoff_seconds:g}); raise it"
        )
    problems += metadata_problems(orthanc_config, enabled=enabled)
    if problems:
        raise ConfigError(problems)

    storage = orthanc_config.get("StorageDirectory", "OrthancStorage")
    state_dir = values["StateDirectory"]
    env = values["PythonEnvironment"]
    by_field = {key.field: values[path] for path, key in _fields() if key.field}
    return RouterConfig(
        **by_field,
        model_path=model_path,
        python_environment=_resolve(env, base_dir) if env else None,
        routes=table,
        rules=rules,
        uncertain_routes=values["UncertainRoutes"],
        quality_routes=values["QualityRoutes"],
        policy=XrayPolicy(
            modalities=frozenset(m.upper() for m in values["Modalities"]),
            sop_classes=frozenset(values["SOPClasses"]),
            accept_missing_modality=values["AcceptMissingModality"],
        ),
        retry=retry,
        state_directory=_resolve(state_dir, base_dir) if state_dir else _resolve(str(storage), base_dir) / "bodypart-router",
    )


def _fields() -> list[tuple[str, Key]]:
    """(key path, key) of every key whose value is one :class:`RouterConfig` field as is."""
    found = []
    for key in KEYS:
        if key.field:
            found.append((key.name, key))
        found += [(f"{key.name}.{sub.name}", sub) for sub in key.keys if sub.field]
    return found
