"""Reading an Orthanc configuration as Orthanc does, and the facts the router takes from it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

#: Index plugin sections that several Orthanc nodes may share.
SHARED_INDEX_SECTIONS: Final = ("PostgreSQL", "MySQL", "Odbc")


def shared_index(orthanc_config: Mapping[str, Any]) -> str | None:
    """The index plugin section that several nodes may share (``EnableIndex`` true, ``Lock`` false), if any."""
    for section in SHARED_INDEX_SECTIONS:
        value = orthanc_config.get(section)
        if isinstance(value, Mapping) and value.get("EnableIndex") and value.get("Lock", True) is False:
            return section
    return None


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
