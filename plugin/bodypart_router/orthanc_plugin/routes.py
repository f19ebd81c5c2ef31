"""One helper for every REST route the router registers in Orthanc.

A route is a pattern (Orthanc's regex) and one handler per HTTP method. :func:`answer` does
what every route needs, the same way for all: the method check (405 with ``Allow``), the
same-origin check on every request that changes something, 503 while the router is
disabled, the JSON answer, and the errors: :class:`~bodypart_router.ops.request_body.RequestRefused`
(and :class:`HttpError`) become their status with a message naming what to fix, anything
else is logged with its traceback and answered 500 (a route never crashes Orthanc). POST
bodies are read by :meth:`Request.json_body`, the strict reader of
:mod:`bodypart_router.ops.request_body` (size and nesting limits before parsing,
``application/json`` only): see ``docs/security.md``.

This module never imports ``orthanc``: :func:`register` is handed Orthanc's
``RegisterRestCallback``, so the routes are unit-tested without Orthanc.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BodyPartRouterError
from ..ops.request_body import RequestRefused, check_same_origin, read_json_object

LOGGER = logging.getLogger(__name__)

#: Largest page of a paged listing (``?offset=&limit=``).
MAX_PAGE = 500


class HttpError(BodyPartRouterError):
    """A handler's refusal: answered with ``status`` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unavailable(HttpError):
    """The router cannot answer this request now (it is disabled): 503, not an internal error."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


@dataclass
class Request:
    """One call of a route, as Orthanc's Python plugin hands it over."""

    method: str
    uri: str
    groups: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    args: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str = b""

    @classmethod
    def from_orthanc(cls, uri: str, request: Mapping[str, Any]) -> "Request":
        return cls(str(request.get("method", "GET")), uri, tuple(request.get("groups") or ()),
                   request.get("headers") or {}, request.get("get") or {}, request.get("body") or b"")

    def json_body(self, *, require_json_content_type: bool = True) -> dict[str, Any]:
        """The body as a JSON object, read strictly (see :func:`~bodypart_router.ops.request_body.read_json_object`)."""
        return read_json_object({"headers": self.headers, "body": self.body},
                                require_json_content_type=require_json_content_type)

    def page(self, default_limit: int) -> tuple[int, int]:
        """``offset`` and ``limit`` from the query string (400 when they are not integers)."""
        try:
            offset = max(0, int(self.args.get("offset", 0)))
            limit = min(MAX_PAGE, max(1, int(self.args.get("limit", default_limit))))
        except ValueError:
            raise HttpError(400, "offset and limit must be integers") from None
        return offset, limit


@dataclass(frozen=True)
class File:
    """A handler's answer that is a file rather than JSON."""

    content: bytes
    mime: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None  # JSON-able (200), a File (200), or a message
    allow: str = ""  # 405 only

    def send(self, output: Any) -> None:
        """Write the reply through Orthanc's ``RestOutput``."""
        if self.status == 405:
            output.SendMethodNotAllowed(self.allow)
        elif self.status == 200 and isinstance(self.body, File):
            output.AnswerBuffer(self.body.content, self.body.mime)
        elif self.status == 200:
            output.AnswerBuffer(json.dumps(self.body, indent=2), "application/json")
        else:
            message = str(self.body)
            # orthanc-python 4.0 takes (status, body, size); later versions may take (status, body)
            try:
                output.SendHttpStatus(self.status, message, len(message.encode("utf-8")))
            except TypeError:
                output.SendHttpStatus(self.status, message)


Handler = Callable[[Request], Any]


@dataclass(frozen=True)
class Route:
    """A pattern and its handlers. ``disabled()`` says why the router cannot serve it (503), or None."""

    pattern: str
    handlers: Mapping[str, Handler]
    disabled: Callable[[], str | None] = lambda: None

    def answer(self, request: Request) -> Reply:
        handler = self.handlers.get(request.method)
        if handler is None:
            return Reply(405, allow=",".join(self.handlers))
        try:
            if request.method != "GET":
                check_same_origin(request.headers)  # a state change from another site (CSRF)
            why = self.disabled()
            if why is not None:
                return Reply(503, f"the router is disabled: {why}")
            return Reply(200, handler(request))
        except (RequestRefused, HttpError) as exc:
            return Reply(exc.status, str(exc))
        except Exception:  # never let a route crash the host
            LOGGER.exception("%s %s failed", request.method, request.uri)
            return Reply(500, "internal error, see the Orthanc log")

    def callback(self, output: Any, uri: str, **request: Any) -> None:
        """The function Orthanc calls."""
        self.answer(Request.from_orthanc(uri, request)).send(output)


def register(register_rest_callback: Callable[[str, Any], None], route: Route) -> Route:
    """Register ``route`` with Orthanc (``orthanc.RegisterRestCallback``)."""
    register_rest_callback(route.pattern, route.callback)
    return route
