"""The one definition of the ``"BodyPartRouter"`` section and of the metadata the router writes.

Everything else reads these two tables: :func:`~bodypart_router.config.parse` (the keys, their
checks and defaults, the metadata declarations check at start-up), :class:`RouterConfig`'s
defaults, and ``scripts/config_docs.py``, which writes the README's configuration and metadata
tables and the commented example in ``orthanc-config/orthanc.json`` from them (a unit test fails
when those drift). A key or a metadata name is added here, once.

Why a table of our own rather than pydantic: the checks are a dozen small functions whose
messages name the key and what to fix (tests pin them); destinations are checked against the
*whole* Orthanc configuration; the documentation text lives beside each key; and the section is
read inside Orthanc's process, where a compiled validation library would be one more native
dependency to load. See ``docs/decisions.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..imaging.xray_policy import DEFAULT_MODALITIES, DEFAULT_SOP_CLASSES
from ..inference.classes import REGION_NAMES

SECTION: Final = "BodyPartRouter"

#: A check takes (value, key path, problems) and returns the parsed value, or None after
#: appending one problem that names the key and what to fix.
Problems = list[str]
Check = Callable[[Any, str, Problems], Any]


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------

def boolean(value: Any, key: str, problems: Problems) -> bool | None:
    if isinstance(value, bool):
        return value
    problems.append(f"{key}: expected true or false, got {value!r}")
    return None


def number(lo: float, hi: float, *, integer: bool = False) -> Check:
    """A number (an integer with ``integer``) between ``lo`` and ``hi``, both included."""
    def check(value: Any, key: str, problems: Problems) -> float | None:
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or (isinstance(value, float) and not math.isfinite(value)):
            kind = "an integer" if integer else "a number"
            problems.append(f"{key}: expected {kind} between {lo:g} and {hi:g}, got {value!r}")
            return None
        if not lo <= value <= hi:
            problems.append(f"{key}: {value!r} is out of range, use a value between {lo:g} and {hi:g}")
            return None
        return value

    check.range = (lo, hi, integer)  # type: ignore[attr-defined]  # shown by the README table
    return check


def string(value: Any, key: str, problems: Problems) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    problems.append(f"{key}: expected a non-empty string, got {value!r}")
    return None


def optional_sha256(value: Any, key: str, problems: Problems) -> str | None:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else ""
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    problems.append(f"{key}: expected the model's SHA-256 as 64 hex digits (or null), got {value!r}")
    return None


def string_list(value: Any, key: str, problems: Problems) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    problems.append(f"{key}: expected a list of strings, got {value!r}")
    return None


def choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any, key: str, problems: Problems) -> str | None:
        if value in choices:
            return str(value)
        problems.append(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return None

    return check


def destinations(value: Any, key: str, problems: Problems) -> Any:
    """Marker: a list of destination names, checked by ``parse`` against the whole configuration."""
    raise NotImplementedError("destination lists are checked by config.parse")


def routes(value: Any, key: str, problems: Problems) -> Any:
    """Marker: the routing table or rule list, checked by ``parse`` (see rules/)."""
    raise NotImplementedError("Routes are checked by config.parse")


def json_object(value: Any, key: str, problems: Problems) -> Any:
    """Marker: an object whose own keys (:attr:`Key.keys`) are checked one by one by ``parse``."""
    raise NotImplementedError("objects are checked key by key by config.parse")


# --------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------

#: What happens to a prediction below ``MinimumScore``.
BELOW_MINIMUM_CHOICES: Final = ("uncertain", "route")
#: How the header's body part weighs in on the class (see fusion.py).
HEADER_EVIDENCE_CHOICES: Final = ("off", "tie-break", "prior")
#: When a film is routed: as soon as it is classified, or once its series is stable (see series.py).
DECISION_LEVELS: Final = ("instance", "series")
DEFAULT_MODEL_PATH: Final = "../models/bodypart_router.onnx"

#: The value of :attr:`Key.example` that leaves the key out of the example.
OMIT: Final = object()


@dataclass(frozen=True)
class Key:
    """One key of the section (or of one of its objects).

    ``field`` is the :class:`RouterConfig` attribute that holds its value (None: the value is
    assembled by ``parse``, like ``Retry`` into a :class:`RetryPolicy`). ``doc`` is Markdown: the
    README's table shows it as is, the example's comment without the markup.
    """

    name: str
    check: Check
    default: Any
    doc: str
    field: str | None = None
    #: The README's Default column, when the default's JSON does not say it well.
    shown: str | None = None
    #: Value written in orthanc.json's example: the default unless given; :data:`OMIT` leaves it out.
    example: Any = None
    #: Written commented out in the example (a key that the shipped configuration leaves at its default).
    commented_out: bool = False
    #: Lines added to the example's comment only (a sample too long for the README's table).
    example_note: str = ""
    #: The keys of an object key (``Retry``...), in order.
    keys: tuple[Key, ...] = ()
    #: The example's comment is written for the whole group of keys that starts here.
    group_doc: str = ""

    def example_value(self) -> Any:
        if self.example is not None:
            return self.example
        if self.keys:
            return {k.name: k.example_value() for k in self.keys if k.example is not OMIT}
        return self.default


def _k(name: str, check: Check, default: Any, doc: str, field: str | None = "", **more: Any) -> Key:
    """A key whose field is its name in snake case unless ``field`` says otherwise."""
    if field == "":
        field = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return Key(name, check, default, doc, field, **more)


_SOP_EXAMPLE: Final = [
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.7",
]

_RULES_SAMPLE: Final = """\
Routes may instead be an ordered list of rules on the class, score, region, view,
rotation, polarity, calling AET and any DICOM tag, e.g.
  [ { "Name": "adult chest AI", "Class": "adult_chest",
      "Tags": { "PatientAge": { "Min": 18 }, "Modality": [ "DX", "CR" ] },
      "Require": { "View": "frontal", "Rotation": 0, "Inverted": false },
      "Destinations": [ "ai-chest" ], "Continue": true }, ... ]
Three complete examples: routing-rules.example.json; the README explains every key."""

KEYS: Final[tuple[Key, ...]] = (
    _k("Enabled", boolean, True, "`false` loads the plugin but does nothing"),
    _k("ModelPath", string, DEFAULT_MODEL_PATH, "the ONNX model", field=None),
    _k("PythonEnvironment", string, None,
       "the virtual environment holding the router's packages (numpy, onnxruntime, pydicom...), made with the "
       "Python that Orthanc's Python plugin embeds (3.11 on Debian 12, 3.13 on Debian 13): `make setup` does it",
       field=None, shown="none", example="../.venv"),
    _k("ModelSha256", optional_sha256, None,
       "the model must match the `SHA-256:` line of `MODEL_CARD.md` beside it; to run another model on purpose, "
       "give its SHA-256 here. A modified model is refused at start-up", field="model_sha256"),
    _k("Routes", routes, {},
       "`{class: [destination, ...]}`, or an ordered list of rules (see [Routing rules](#routing-rules)); a "
       "destination is a `DicomModalities`, `OrthancPeers` or (with the DICOMweb plugin) `DicomWeb.Servers` name; "
       'write `modality:x`, `peer:x` or `dicomweb:x` when a name is ambiguous. A class left out goes nowhere',
       field=None, example_note=_RULES_SAMPLE,
       example={"adult_chest": ["ai-chest"], "pediatric_chest": ["ai-chest"], "spine": ["ai-general"],
                "abdominal": ["ai-general"], "others": ["ai-general"]}),
    _k("MinimumScore", number(0.0, 1.0), 0.5, "below it the prediction is not trusted"),
    _k("BelowMinimum", choice(BELOW_MINIMUM_CHOICES), "uncertain",
       '`"uncertain"`: class `uncertain`, labelled `bodypart-uncertain`, sent to `UncertainRoutes`; `"route"`: keep '
       "the predicted class"),
    _k("UncertainRoutes", destinations, (), "destinations for `uncertain` (`[]` = nowhere)", field=None),
    _k("QualityRoutes", destinations, (),
       "where films held by a rule's `Require` go (`[]` = nowhere); their state is `held:<reason>` "
       "(`held:lateral`, `held:rotated-90`, `held:inverted`)", field=None),
    _k("HeaderEvidence", choice(HEADER_EVIDENCE_CHOICES), "prior",
       "how the header's body part (Body Part Examined, descriptions, protocol; the age for adult versus "
       'pediatric chest) weighs in on the class: `"off"` (pixels alone), `"tie-break"` (only when the pixels\' top '
       'score is below `MinimumScore`), `"prior"` (Bayes, see [Header evidence](#header-evidence))'),
    _k("HeaderErrorRate", number(0.001, 0.75), 0.5,
       "the share of headers assumed wrong: the strength of the header as a prior (0.5 measured best with the "
       "shipped model, see [Header evidence](#header-evidence))"),
    _k("DecisionLevel", choice(DECISION_LEVELS), "instance",
       '`"instance"`: each film is routed once classified; `"series"`: once Orthanc reports its series stable '
       "(`StableAge` seconds after its last instance), by a score-weighted vote of the series' films (see "
       "[One decision per series](#one-decision-per-series))"),
    _k("SeriesConfidentScore", number(0.0, 1.0), 0.9,
       "in series mode, a film that disagrees with its series keeps its own class from this score"),
    _k("Modalities", string_list, tuple(sorted(DEFAULT_MODALITIES)),
       "Modality (0008,0060) values that count as X-rays; other instances are stored as usual and skipped",
       field=None, shown="`CR DX DR RG PX OT`", example=["CR", "DX", "DR", "RG", "PX", "OT"]),
    _k("SOPClasses", string_list, tuple(sorted(DEFAULT_SOP_CLASSES)),
       "SOP Class UIDs (0008,0016) that count as X-rays; `[]` = any image class",
       field=None, shown="CR, DX (both), Secondary Capture", example=_SOP_EXAMPLE),
    _k("AcceptMissingModality", boolean, True, "classify instances without a Modality", field=None),
    _k("Workers", number(1, 16, integer=True), 1,
       "classification workers, each with its own child process; the children share the cores out for their "
       "inferences (in Orthanc's process, one core per worker)"),
    _k("BatchSize", number(1, 256, integer=True), 8, "instances per inference batch when several wait"),
    _k("ClassifyInChildProcess", boolean, True,
       "decode and classify in a child process at low priority (started with the `PythonEnvironment`'s "
       "interpreter, else the system's `python3.X` of Orthanc's version), so that pixels never touch Orthanc's "
       "heap and a crashing decoder cannot take Orthanc down; `false`, or no such interpreter, runs them in "
       "Orthanc's process"),
    _k("QueueSize", number(1, 1_000_000, integer=True), 1000,
       "in-memory hand-off queue behind `OnStoredInstance`; overflow is caught up from Orthanc's changes log, "
       "never lost"),
    _k("YieldToIngest", json_object, None,
       "while Orthanc's own threads use `BusyCores` cores or more, or instances arrive at `BusyArrivalsPerSecond` "
       "or more (a burst of stores), each classification batch waits until both have stayed below for 0.3 s, at "
       "most `MaxWaitSeconds`; `MaxWaitSeconds` `0` never waits, `BusyArrivalsPerSecond` `0` looks at the CPU only",
       field=None, shown='`{"BusyCores": <cores / 4, at least 0.5>, "BusyArrivalsPerSecond": 20, "MaxWaitSeconds": 10}`',
       keys=(
           _k("BusyCores", number(0.05, 1024), None, "", field="yield_busy_cores", example=OMIT),
           _k("BusyArrivalsPerSecond", number(0, 100_000), 20.0, "", field="yield_busy_arrivals_per_s"),
           _k("MaxWaitSeconds", number(0, 3600), 10.0, "", field="yield_max_wait_seconds"),
       )),
    _k("Retry", json_object, None,
       "forward retries: exponential backoff (`BackoffSeconds * 2**(attempt-1)`, capped at `MaxBackoffSeconds`), "
       "then dead letter (listed by `GET /bodypart-router/failed`, resent by `POST "
       "/bodypart-router/failed/resubmit`)",
       field=None, keys=(
           _k("MaxAttempts", number(1, 1000, integer=True), 8, "", field=None),
           _k("BackoffSeconds", number(0.01, 3600), 2.0, "", field=None),
           _k("MaxBackoffSeconds", number(0.01, 86400), 300.0, "", field=None),
       )),
    _k("CircuitBreaker", json_object, None,
       "consecutive failures before a destination is paused and probed one instance at a time until it answers "
       "again", field=None, keys=(
           _k("FailureThreshold", number(1, 1000, integer=True), 3, "", field="breaker_threshold"),
       )),
    _k("VerifyBeforeResend", boolean, True,
       "a forward in flight when Orthanc crashed (or whose job Orthanc forgot) may have arrived: ask the "
       "destination first (an Orthanc peer by `POST /tools/lookup`, a DICOM modality by C-FIND at IMAGE level) and "
       "send again only if it does not hold the instance (a destination that cannot answer gets it again, logged "
       "once); `false`: send again"),
    _k("ForwardBatchSize", number(1, 1000, integer=True), 16,
       "deliveries due to one destination sent by one Orthanc job (a job costs the index about as much as storing "
       "an instance, whatever it carries); needs `VerifyBeforeResend`, since a failed job may have sent part of "
       "its instances: these are then asked for before anything is sent again, one at a time"),
    _k("MarkSkipped", boolean, False,
       "`true`: write `BodyPartState = skipped:<reason>` on instances that are not X-rays (CT, MR, SR...); "
       "`false`: leave them exactly as Orthanc stored them (no metadata, no change in `/changes`), the reason is "
       "kept in the router's store (`GET /bodypart-router/instances/{id}`, the status page)"),
    _k("Labels", boolean, True,
       "Orthanc 1.12 and later: label each study and series `bodypart-<class>` (and `bodypart-dead-letter`), "
       "for Explorer 2's filters and `/tools/find`; each label is written once per series and study (two index "
       "writes), not per instance; `false`: no labels, the metadata alone"),
    _k("ClaimLeaseSeconds", number(1, 86400), 60.0,
       'several nodes on one index (PostgreSQL `"Lock": false`): a node renews its claim on an instance while it '
       "works on it; a claim not renewed for this long (its node died) is taken over by another node"),
    _k("StateDirectory", string, None,
       "the router's SQLite state (work list, deliveries, backfill)", field=None,
       shown="`<StorageDirectory>/bodypart-router`", example="../build/router-state", commented_out=True),
    _k("ChangesPollSeconds", number(0.05, 60), 1.0,
       "how often the changes log is polled; a single node whose `OnStoredInstance` misses nothing reads it 10 "
       "times less often, as the safety net it is there", commented_out=True),
    _k("JobPollSeconds", number(0.01, 10), 0.25,
       "how often each forward job is polled (one question per job, whatever it carries)", commented_out=True),
    _k("ShadowMode", boolean, False,
       "classify and label, forward nothing; `GET /bodypart-router/status` counts what would have been sent "
       "where"),
)


def key(name: str, keys: tuple[Key, ...] = KEYS) -> Key:
    """The key called ``name`` (``"Retry.MaxAttempts"`` for an object's key)."""
    head, _, rest = name.partition(".")
    found = next(k for k in keys if k.name == head)
    return key(rest, found.keys) if rest else found


def default(name: str) -> Any:
    """A key's default, for :class:`RouterConfig`'s fields."""
    return key(name).default


# --------------------------------------------------------------------------------------
# Metadata the router writes
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metadata:
    """An instance metadata name the router writes, which Orthanc must have declared in ``UserMetadata``.

    ``field`` is the field of the packed ``BodyPartResult`` that holds the same value (None for the
    packed result itself and for the claim). ``shipped`` is its number in the shipped configuration
    (None: not declared there), which ``scripts/install.py`` declares too.
    """

    name: str
    field: str | None
    doc: str
    shipped: int | None = None
    #: The example's comment beside a shipped declaration, when ``doc`` is too long for it.
    brief: str = ""


RESULT_METADATA: Final = "BodyPartResult"
CLAIM_METADATA: Final = "BodyPartClaim"
SOURCE_METADATA: Final = "BodyPartSource"

METADATA: Final[tuple[Metadata, ...]] = (
    Metadata(RESULT_METADATA, None, "the whole result in one JSON value, written when the instance's forwards are done "
             "(at most 5 s after its class) and at each later change", 1031,
             brief="the whole result in one JSON value: Class, Score, Model, State, Forwarded..."),
    Metadata("BodyPart", "Class", "the class, or `uncertain` below `MinimumScore`", 1024),
    Metadata("BodyPartScore", "Score",
             "the probability of that class: the model's, combined with the header evidence (`HeaderEvidence`); "
             "in series mode the series' score"),
    Metadata("BodyPartModel", "Model", "model name @ the first 12 hex digits of its SHA-256"),
    Metadata("BodyPartState", "State",
             "`classified`, `forwarded`, `awaiting-series` (series mode: classified, its series not yet stable), "
             "`held:<reason>` (a rule's `Require` failed: `held:lateral`, `held:rotated-90`, `held:inverted`), "
             "`failed:dead-letter`, `failed:<reason>`, and `skipped:<reason>` only with `MarkSkipped` (an instance "
             "still waiting has none yet: `GET /bodypart-router/instances/{id}` reports it as `queued`, and a "
             "skipped one as `skipped:<reason>`)"),
    Metadata("BodyPartForwarded", "Forwarded", "destinations the instance has arrived at (alone: comma-separated)"),
    Metadata("BodyPartHeaderAudit", "HeaderAudit",
             "`agree:…`, `disagree:…` or `no-header`: the header's body part versus the pixels'"),
    Metadata(SOURCE_METADATA, "Source",
             "what decided the class: `pixels`, `pixels+header` (they agree), `header` (the header changed the "
             "class) or `conflict` (the pixels won against the header)"),
    Metadata("BodyPartRegion", "Region",
             "the fine anatomical region from the pixels: " + ", ".join(f"`{r}`" for r in REGION_NAMES), 1032,
             brief="the fine region alone (also in BodyPartResult), for lookups by region"),
    Metadata("BodyPartView", "View", "`frontal` or `lateral`"),
    Metadata("BodyPartRotation", "Rotation",
             "`0`, `90`, `180` or `270`: the clockwise turn that would make the film upright as a radiologist "
             "hangs it (`0` = stored upright)"),
    Metadata("BodyPartInverted", "Inverted", "`true` when the film's polarity is wrong (bone dark), else `false`"),
    Metadata(CLAIM_METADATA, None,
             "which node handles the instance when several share one PostgreSQL index", 1030),
)

#: Declared when ``BodyPartResult`` is not: the layout of earlier versions, one value each.
CLASSIC_METADATA: Final = ("BodyPart", "BodyPartScore", "BodyPartModel", "BodyPartState", "BodyPartForwarded")
#: Field of the packed result -> the metadata holding that value alone (written where declared).
SEPARATE_METADATA: Final = {m.field: m.name for m in METADATA if m.field}
METADATA_NAMES: Final = tuple(m.name for m in METADATA)
