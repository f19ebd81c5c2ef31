"""The only place that talks to the ``orthanc`` module's REST functions (its log functions are
reached through :mod:`.logs`).

Everything else in the adapter goes through :class:`OrthancRest`, so the
core's :class:`~bodypart_router.forwarding.delivery.Rest` interface is all the forwarding logic sees.
"""

from __future__ import annotations

import json
from typing import Any

import orthanc  # type: ignore[import-not-found]  # provided by Orthanc's Python plugin

from ..forwarding.delivery import RestError

#: Orthanc error codes (OrthancException.args[0]) that mean "no such resource".
_NOT_FOUND_CODES = {7, 17}  # InexistentItem, UnknownResource
_BAD_REQUEST_CODES = {8, 15}  # BadRequest, BadFileFormat


def _status_of(exc: Exception) -> int | None:
    """HTTP-like status from an ``orthanc.OrthancException`` (its args are ``(code, description)``)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code in _NOT_FOUND_CODES:
        return 404
    if code in _BAD_REQUEST_CODES:
        return 400
    return None


class OrthancRest:
    """Orthanc's internal REST API (no HTTP involved, works from any thread once Orthanc has started)."""

    def get(self, uri: str) -> bytes:
        try:
            return bytes(orthanc.RestApiGet(uri))
        except Exception as exc:  # orthanc.OrthancException; the class is not exported on every version
            raise RestError(f"GET {uri}: {exc}", _status_of(exc)) from exc

    def get_json(self, uri: str) -> Any:
        return json.loads(self.get(uri))

    def post(self, uri: str, body: bytes | str) -> bytes:
        try:
            return bytes(orthanc.RestApiPost(uri, body))
        except Exception as exc:
            raise RestError(f"POST {uri}: {exc}", _status_of(exc)) from exc

    def post_json(self, uri: str, body: Any) -> Any:
        answer = self.post(uri, json.dumps(body))
        return json.loads(answer) if answer else None

    def put(self, uri: str, body: bytes | str) -> None:
        try:
            orthanc.RestApiPut(uri, body)
        except Exception as exc:
            raise RestError(f"PUT {uri}: {exc}", _status_of(exc)) from exc

    def delete(self, uri: str) -> None:
        try:
            orthanc.RestApiDelete(uri)
        except Exception as exc:
            raise RestError(f"DELETE {uri}: {exc}", _status_of(exc)) from exc
