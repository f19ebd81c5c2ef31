"""One error hierarchy for everything the router asks of Orthanc, in process or over HTTP.

Callers decide by class, not by parsing messages: :class:`OrthancNotFound` (the resource was
deleted: forget it), :class:`OrthancUnavailable` (no answer: ask again later),
:class:`OrthancRejected` (an answer that refuses the request). ``status`` keeps the HTTP
status where there was one, for the log line.
"""

from __future__ import annotations

from ..errors import BodyPartRouterError


class OrthancError(BodyPartRouterError):
    """A request to Orthanc (or through it, to a destination) did not succeed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OrthancUnavailable(OrthancError):
    """No usable answer: connection refused, timeout, or a server error (5xx). Try again later."""


class OrthancNotFound(OrthancError):
    """The resource does not exist (HTTP 404, Orthanc's ``UnknownResource`` / ``InexistentItem``)."""

    def __init__(self, message: str, status: int | None = 404) -> None:
        super().__init__(message, status)


class OrthancRejected(OrthancError):
    """Orthanc answered and refused the request (400, 401, 403, 415 ...)."""


class OrthancConflict(OrthancRejected):
    """A conditional write lost: the ``If-Match`` revision is not the resource's (HTTP 409)."""

    def __init__(self, message: str, status: int | None = 409) -> None:
        super().__init__(message, status)


class Unreachable(OrthancUnavailable):
    """A destination did not answer "do you hold this instance?" at all: ask again later."""


class CannotAsk(OrthancError):
    """A destination is up but cannot say whether it holds an instance: send again (at least once)."""


def error_for_status(status: int, message: str) -> OrthancError:
    """The exception for an HTTP status other than success."""
    if status == 404:
        return OrthancNotFound(message, status)
    if status == 409:
        return OrthancConflict(message, status)
    if status >= 500:
        return OrthancUnavailable(message, status)
    return OrthancRejected(message, status)
