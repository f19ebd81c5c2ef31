"""HTTP answers from REST callbacks that work on every orthanc-python version.

``RestOutput.SendHttpStatus`` takes ``(status, body, size)`` in orthanc-python 4.0 (the C
signature, body a ``str``) and may take ``(status, body)`` in later versions, like
``AnswerBuffer`` already does; calling it with the wrong arity raises ``TypeError`` inside
the callback and Orthanc answers 500 instead of the intended status.
"""

from __future__ import annotations

import json
from typing import Any
from ..errors import BodyPartRouterError


class Unavailable(BodyPartRouterError, RuntimeError):
    """The router cannot answer this request now (disabled): 503, not an internal error."""


def send_json(output: Any, body: Any) -> None:
    """200 with a JSON body."""
    output.AnswerBuffer(json.dumps(body, indent=2), "application/json")


def send_status(output: Any, status: int, message: str) -> None:
    """A non-200 status (400, 404, 409, 500 ...) with a short plain-text explanation."""
    try:
        output.SendHttpStatus(status, message, len(message.encode("utf-8")))
    except TypeError:
        output.SendHttpStatus(status, message)
