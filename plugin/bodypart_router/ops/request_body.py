"""One reader for the bodies of the router's REST requests: refuse before parsing, then type every field.

Why before parsing: Python's ``json`` recurses once per nesting level, and inside Orthanc a
body of a few hundred ``[`` overflows the C stack of the HTTP thread and kills Orthanc with
SIGSEGV. So the size and the nesting depth are checked on the raw bytes, and only a body
that passes both is handed to ``json.loads``.

Why the headers: Orthanc checks neither ``Origin`` nor ``Content-Type``, so a web page visited
by a logged-in browser could post a ``text/plain`` form to these routes (CSRF). A browser
cannot send ``Content-Type: application/json`` cross-site without a CORS preflight, which
Orthanc does not grant, and it labels cross-site requests with ``Origin`` and
``Sec-Fetch-Site``. Every state-changing request must therefore be ``application/json`` and
same-origin (or come from a non-browser client, which sends neither header).

Why strict types: ``bool("false")`` is ``True``, and ``isinstance(True, int)`` too; each field
is checked for exactly the JSON type it documents. This module never imports ``orthanc``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit
from ..errors import BodyPartRouterError

#: Largest body accepted (1 MiB: about 20,000 Orthanc IDs).
MAX_BODY_BYTES = 1 << 20
#: Deepest nesting of arrays and objects accepted (the router's bodies need 2).
MAX_NESTING = 8

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")
#: An Orthanc resource ID: four groups of 8 hex digits, joined by dashes (SHA-1 based).
ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


class RequestRefused(BodyPartRouterError, ValueError):
    """The request is refused with ``status`` (400, 403, 413, 415) and a message naming what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A request header, whatever its case (Orthanc hands them over lower-cased, but not every version)."""
    if not headers:
        return None
    name = name.lower()
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def check_same_origin(headers: Mapping[str, str] | None) -> None:
    """Refuse (403) a request a browser labelled as coming from another site."""
    fetch_site = header(headers, "sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        raise RequestRefused(403, f"cross-site request refused (Sec-Fetch-Site: {fetch_site.strip()[:40]})")
    origin = header(headers, "origin")
    if origin is None:
        return
    origin_host = urlsplit(origin.strip()).netloc.lower()
    hosts = {(header(headers, name) or "").split(",")[0].strip().lower() for name in ("host", "x-forwarded-host")}
    hosts.discard("")
    if not origin_host or origin_host not in hosts:
        raise RequestRefused(403, f"cross-origin request refused (Origin {origin.strip()[:80]!r} is not this server)")


def nesting_depth_exceeds(raw: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` in ``raw``, read without parsing it
    (brackets inside strings do not count)."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def read_json_object(request: Mapping[str, Any], *, require_json_content_type: bool = True) -> dict[str, Any]:
    """The body of a POST as a JSON object, after the checks above; raises :class:`RequestRefused`.

    An empty body is refused too: a request meaning "everything" says so with ``{}``.
    """
    headers = request.get("headers") or {}
    check_same_origin(headers)
    if require_json_content_type:
        content_type = (header(headers, "content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestRefused(415, f"Content-Type must be application/json (got {content_type or 'none'})")
    raw = request.get("body") or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_BODY_BYTES:
        raise RequestRefused(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise RequestRefused(400, "the request body must be a JSON object ({} for the defaults)")
    if nesting_depth_exceeds(raw):
        raise RequestRefused(400, f"request body nested deeper than {MAX_NESTING} levels")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RequestRefused(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestRefused(400, "the request body must be a JSON object")
    return body


# -- strict field types -------------------------------------------------------------------------
def only_keys(body: Mapping[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RequestRefused(400, f"unknown field(s) {', '.join(unknown)}; use {', '.join(allowed)}")


def boolean(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """``true`` or ``false`` exactly (not ``"false"``, ``0`` or ``null``)."""
    if key not in body:
        return default
    value = body[key]
    if not isinstance(value, bool):
        raise RequestRefused(400, f"{key}: expected true or false, got {json.dumps(value)[:40]}")
    return value


def integer_list(body: Mapping[str, Any], key: str) -> list[int]:
    """A list of integers (``true`` is not one)."""
    values = body.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise RequestRefused(400, f"{key}: expected a list of integers")
    return values


def string_list(body: Mapping[str, Any], key: str, *, pattern: re.Pattern[str] | None = None,
                what: str = "strings", non_empty: bool = False) -> list[str]:
    """A list of strings, each matching ``pattern`` when given."""
    values = body.get(key, [])
    if (not isinstance(values, list) or (non_empty and not values)
            or not all(isinstance(v, str) and (pattern is None or pattern.match(v)) for v in values)):
        raise RequestRefused(400, f"{key}: expected a {'non-empty ' if non_empty else ''}list of {what}")
    return values
