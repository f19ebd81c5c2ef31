"""The ``"BodyPartRouter"`` section of the Orthanc configuration: one schema, validated once.

:mod:`.schema` defines every key (check, default, meaning) and every metadata name the router
writes; :mod:`.section` validates the section against it at start-up, against the *whole*
Orthanc configuration, so that a route naming a destination that does not exist is caught
before the first X-ray arrives. Every problem is reported at once, each naming its key and what
to fix, e.g.::

    BodyPartRouter.Routes.spine[1]: "ai-spne" is not a DicomModalities or OrthancPeers name
    (known: ai-chest, ai-spine)

Relative paths (``ModelPath``, ``PythonEnvironment``, ``StateDirectory``) are resolved
against the directory of the Orthanc configuration file, like Orthanc's own paths, so a
checkout's ``orthanc-config/orthanc.json`` can say ``../models/bodypart_router.onnx``.

This package never imports ``orthanc``: the adapter hands it plain dicts.

May import: imaging, inference, routing, errors, logs, retry.
"""

from __future__ import annotations

from .destinations import DESTINATION_SECTIONS, Destination, destination_list, known_destinations
from .orthanc_config import load_orthanc_json, shared_index, strip_json_comments
from .schema import (
    BELOW_MINIMUM_CHOICES,
    CLAIM_METADATA,
    CLASSIC_METADATA,
    DECISION_LEVELS,
    DEFAULT_MODEL_PATH,
    HEADER_EVIDENCE_CHOICES,
    METADATA,
    METADATA_NAMES,
    RESULT_METADATA,
    SECTION,
    SEPARATE_METADATA,
    SOURCE_METADATA,
)
from .section import ConfigError, RetryPolicy, RouterConfig, metadata_problems, parse

__all__ = [
    "BELOW_MINIMUM_CHOICES", "CLAIM_METADATA", "CLASSIC_METADATA", "DECISION_LEVELS", "DEFAULT_MODEL_PATH",
    "DESTINATION_SECTIONS", "HEADER_EVIDENCE_CHOICES", "METADATA", "METADATA_NAMES", "RESULT_METADATA", "SECTION",
    "SEPARATE_METADATA", "SOURCE_METADATA", "ConfigError", "Destination", "RetryPolicy", "RouterConfig",
    "destination_list", "known_destinations", "load_orthanc_json", "metadata_problems", "parse", "shared_index",
    "strip_json_comments",
]
