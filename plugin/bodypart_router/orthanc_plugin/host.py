"""The only place that talks to the ``orthanc`` module's REST functions (its log functions are
reached through :mod:`.logs`).

:class:`InProcessTransport` is the in-process implementation of the Orthanc boundary
(:mod:`bodypart_router.orthanc_api`): ``OrthancClient(InProcessTransport())`` is the
:class:`~bodypart_router.orthanc_api.Orthanc` the core sees. :class:`OrthancRest` adds the
raw calls the adapter's own modules make.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orthanc  # type: ignore[import-not-found]  # provided by Orthanc's Python plugin

from ..orthanc_api import Answer, HttpAccess, OrthancClient, OrthancError, OrthancNotFound, OrthancRejected

#: Orthanc error codes (OrthancException.args[0]) that mean "no such resource".
_NOT_FOUND_CODES = {7, 17}  # InexistentItem, UnknownResource
_BAD_REQUEST_CODES = {8, 15}  # BadRequest, BadFileFormat


def _error(message: str, exc: Exception) -> OrthancError:
    """The boundary's error for an ``orthanc.OrthancException`` (its args are ``(code, description)``)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code in _NOT_FOUND_CODES:
        return OrthancNotFound(message)
    if code in _BAD_REQUEST_CODES:
        return OrthancRejected(message, 400)
    return OrthancError(message)


class InProcessTransport:
    """Orthanc's internal REST API: no HTTP involved, works from any thread once Orthanc has started."""

    def call(self, method: str, uri: str, body: bytes | str | None = None,
             headers: Mapping[str, str] | None = None) -> Answer:
        if headers:  # orthanc-python 4.0's RestApi* take no headers: conditional writes go over HTTP
            raise OrthancRejected(f"{method} {uri}: request headers need the HTTP client, not the in-process API")
        try:
            if method == "GET":
                return Answer(bytes(orthanc.RestApiGet(uri)))
            if method == "POST":
                return Answer(bytes(orthanc.RestApiPost(uri, body if body is not None else "")))
            if method == "PUT":
                orthanc.RestApiPut(uri, body if body is not None else "")
                return Answer(b"")
            if method == "DELETE":
                orthanc.RestApiDelete(uri)
                return Answer(b"")
        except Exception as exc:  # orthanc.OrthancException; the class is not exported on every version
            raise _error(f"{method} {uri}: {exc}", exc) from exc
        raise ValueError(f"unsupported method {method}")


class OrthancRest(OrthancClient):
    """The in-process :class:`~bodypart_router.orthanc_api.Orthanc`, plus the raw REST calls the
    adapter's own modules make (bodies JSON-decoded where the name says so)."""

    def __init__(self, peers: Mapping[str, HttpAccess] | None = None) -> None:
        super().__init__(InProcessTransport(), peers)

    def get(self, uri: str) -> bytes:
        return self.transport.call("GET", uri).body

    def get_json(self, uri: str) -> Any:
        return self.transport.call("GET", uri).json()

    def post(self, uri: str, body: bytes | str) -> bytes:
        return self.transport.call("POST", uri, body).body

    def post_json(self, uri: str, body: Any) -> Any:
        return self.transport.call("POST", uri, json.dumps(body)).json()

    def put(self, uri: str, body: bytes | str) -> None:
        self.transport.call("PUT", uri, body)

    def delete(self, uri: str) -> None:
        self.transport.call("DELETE", uri)
