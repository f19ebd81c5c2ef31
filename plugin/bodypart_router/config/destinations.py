"""Destinations: the names Routes may use, as the Orthanc configuration declares them.

A destination is a ``DicomModalities``, ``OrthancPeers`` or ``DicomWeb.Servers`` entry; a name
declared in two sections needs its kind (``peer:ai``), and an unknown name gets a did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

#: Destination kinds and the Orthanc configuration section that declares their names.
DESTINATION_SECTIONS: Final = {
    "modality": "DicomModalities",
    "peer": "OrthancPeers",
    "dicomweb": "DicomWeb.Servers",
}


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


def destination(value: Any, key: str, known: Mapping[str, list[Destination]], problems: list[str]) -> Destination | None:
    """One destination name, or None after recording what to fix."""
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


def destination_list(
    value: Any, key: str, known: Mapping[str, list[Destination]], problems: list[str]
) -> tuple[Destination, ...]:
    """A list of destination names; the valid ones, after recording what to fix in the others."""
    if not isinstance(value, list):
        problems.append(f"{key}: expected a list of destination names, got {value!r}")
        return ()
    out = [destination(v, f"{key}[{i}]", known, problems) for i, v in enumerate(value)]
    return tuple(d for d in out if d is not None)
