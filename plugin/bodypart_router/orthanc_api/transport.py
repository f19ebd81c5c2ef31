"""The raw REST calls both implementations of the boundary are built on.

Orthanc's REST API is the same whether it is reached in process (``orthanc.RestApi*``, the
adapter's :class:`~bodypart_router.orthanc_plugin.host.InProcessTransport`) or over HTTP
(:class:`~bodypart_router.orthanc_api.http.HttpClient`); the typed
:class:`~bodypart_router.orthanc_api.interface.Orthanc` is written once over this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Answer:
    """A successful answer: its body and the resource's revision (``ETag``, HTTP only)."""

    body: bytes
    etag: str = ""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Transport(Protocol):
    """One REST call; raises :class:`~bodypart_router.orthanc_api.errors.OrthancError` on failure.

    ``body`` is sent as is (``str`` or ``bytes``); ``headers`` are only honoured over HTTP
    (orthanc-python 4.0's ``RestApiPut`` cannot send any), where a conditional write needs them.
    """

    def call(self, method: str, uri: str, body: bytes | str | None = None,
             headers: Mapping[str, str] | None = None) -> Answer: ...


def get_json(transport: Transport, uri: str) -> Any:
    return transport.call("GET", uri).json()


def post_json(transport: Transport, uri: str, body: Any) -> Any:
    return transport.call("POST", uri, json.dumps(body)).json()
