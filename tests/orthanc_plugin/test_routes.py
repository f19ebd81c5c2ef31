"""The one route helper every REST route of the router goes through, without Orthanc.

``Output`` records what the helper writes through Orthanc's ``RestOutput``; the real routes,
behind a real Orthanc, are exercised by tests/integration (test_router's hostile bodies,
test_ops' authentication and resubmission).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from support import fake_orthanc

fake_orthanc.install()  # the adapter package imports orthanc; routes.py itself does not

from bodypart_router.ops.request_body import MAX_BODY_BYTES, MAX_NESTING  # noqa: E402
from bodypart_router.orthanc_plugin.routes import File, HttpError, Request, Route, register  # noqa: E402


class Output:
    """Orthanc's ``RestOutput``, as orthanc-python 4.0 has it (SendHttpStatus takes a size)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def AnswerBuffer(self, body: Any, mime: str) -> None:  # noqa: N802 (Orthanc's names)
        self.sent.append(("answer", body, mime))

    def SendHttpStatus(self, status: int, body: str, size: int) -> None:  # noqa: N802
        self.sent.append(("status", status, body))

    def SendMethodNotAllowed(self, allowed: str) -> None:  # noqa: N802
        self.sent.append(("405", allowed))


def call(route: Route, method: str = "GET", body: bytes | str = b"", headers: dict[str, str] | None = None,
         **request: Any) -> tuple[Any, ...]:
    output = Output()
    route.callback(output, "/bodypart-router/x", method=method, body=body, headers=headers or {}, **request)
    (sent,) = output.sent
    return sent


JSON = {"content-type": "application/json"}


def echo(request: Request) -> Any:
    return {"Method": request.method, "Body": request.json_body() if request.method == "POST" else None,
            "Groups": list(request.groups)}


def test_json_answers_and_the_method_check() -> None:
    route = Route("/x", {"GET": echo, "POST": echo})
    kind, body, mime = call(route, groups=("abc",))
    assert (kind, mime) == ("answer", "application/json") and json.loads(body)["Groups"] == ["abc"]
    assert json.loads(call(route, "POST", b'{"A": 1}', JSON)[1])["Body"] == {"A": 1}
    assert call(route, "DELETE") == ("405", "GET,POST")


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b'{"A": 1}', {"content-type": "text/plain"}, 415),
    (b'{"A": 1}', {}, 415),
    (b"", JSON, 400),
    (b"[1]", JSON, 400),
    (b"{" * (MAX_NESTING + 1), JSON, 400),
    (b" " * (MAX_BODY_BYTES + 1), JSON, 413),
    (b'{"A": 1}', {**JSON, "origin": "https://evil.example", "host": "pacs:8042"}, 403),
    (b'{"A": 1}', {**JSON, "sec-fetch-site": "cross-site"}, 403),
])
def test_post_bodies_are_read_strictly(body: bytes, headers: dict[str, str], status: int) -> None:
    assert call(Route("/x", {"POST": echo}), "POST", body, headers)[:2] == ("status", status)


def test_every_state_change_is_same_origin_even_without_a_body() -> None:
    route = Route("/x", {"DELETE": lambda r: {"Cancelled": True}})
    assert call(route, "DELETE", headers={"sec-fetch-site": "cross-site"})[:2] == ("status", 403)
    assert call(route, "DELETE", headers={"sec-fetch-site": "same-origin"})[0] == "answer"
    same_host = {"origin": "http://pacs:8042", "host": "pacs:8042"}
    assert call(route, "DELETE", headers=same_host)[0] == "answer"


def test_a_disabled_router_answers_503_before_any_handler() -> None:
    ran: list[Request] = []
    route = Route("/x", {"GET": ran.append}, disabled=lambda: "the configuration is invalid")
    assert call(route) == ("status", 503, "the router is disabled: the configuration is invalid")
    assert ran == []


def test_refusals_keep_their_status_and_a_bug_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: Request) -> Any:
        raise HttpError(409, "a backfill is already running")

    def bug(request: Request) -> Any:
        raise KeyError("oops")

    assert call(Route("/x", {"GET": refuse})) == ("status", 409, "a backfill is already running")
    with caplog.at_level(logging.ERROR, logger="bodypart_router"):
        assert call(Route("/x", {"GET": bug})) == ("status", 500, "internal error, see the Orthanc log")
    assert "GET /bodypart-router/x failed" in caplog.text and "KeyError" in caplog.text  # with its traceback


def test_pages_and_files() -> None:
    route = Route("/x", {"GET": lambda r: dict(zip(("Offset", "Limit"), r.page(50)))})
    assert json.loads(call(route, get={"offset": "10", "limit": "9999"})[1]) == {"Offset": 10, "Limit": 500}
    assert json.loads(call(route)[1]) == {"Offset": 0, "Limit": 50}
    assert call(route, get={"offset": "x"})[:2] == ("status", 400)
    page = Route("/p", {"GET": lambda r: File(b"<html>", "text/html")})
    assert call(page) == ("answer", b"<html>", "text/html")


def test_register_hands_orthanc_the_pattern_and_the_callback() -> None:
    registered: list[tuple[str, Any]] = []
    route = register(lambda pattern, callback: registered.append((pattern, callback)), Route("/p", {"GET": echo}))
    assert registered == [("/p", route.callback)]


def test_status_without_a_size_argument_on_later_plugin_versions() -> None:
    class Later(Output):
        def SendHttpStatus(self, status: int, body: str) -> None:  # type: ignore[override]  # noqa: N802
            self.sent.append(("status", status, body))

    output = Later()
    Route("/x", {"GET": echo}, disabled=lambda: "off").callback(output, "/x", method="GET")
    assert output.sent == [("status", 503, "the router is disabled: off")]
