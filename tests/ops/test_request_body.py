"""The one reader of REST request bodies: refused before any JSON parse, then strictly typed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bodypart_router.ops import request_body
from bodypart_router.ops.request_body import (MAX_BODY_BYTES, MAX_NESTING, RequestRefused, boolean, check_same_origin,
                                          integer_list, nesting_depth_exceeds, read_json_object, string_list)

JSON = {"content-type": "application/json"}
ID = "4b9c1d2e-0a1b2c3d-4e5f6a7b-8c9d0e1f-a2b3c4d5"


def _request(body: bytes | str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"method": "POST", "body": body, "headers": JSON if headers is None else headers}


def _refused(request: dict[str, Any]) -> RequestRefused:
    with pytest.raises(RequestRefused) as info:
        read_json_object(request)
    return info.value


def test_a_plain_json_object_is_read() -> None:
    assert read_json_object(_request(b'{"Instances": ["a"], "Note": "[[[[[[[[[[[[]"}')) == {
        "Instances": ["a"], "Note": "[[[[[[[[[[[[]"}  # brackets inside strings do not count


@pytest.mark.parametrize("body", [b"[" * 600, b"[" * 600 + b"=x", b'{"a":' * 600, b"[" * 100_000])
def test_deep_nesting_is_refused_without_parsing(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json.loads must not see this body")

    monkeypatch.setattr(request_body.json, "loads", no_parse)
    refused = _refused(_request(body))
    assert refused.status == 400 and "nested deeper" in str(refused)


def test_nesting_at_the_limit_is_accepted() -> None:
    body = "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1)
    assert read_json_object(_request(f'{{"a": {body}}}')) == {"a": json.loads(body)}
    assert nesting_depth_exceeds(b"[" * (MAX_NESTING + 1))
    assert not nesting_depth_exceeds(b'["\\"[[[[[[[[[[[[[[[[[["]')  # an escaped quote stays inside the string


def test_a_large_body_is_refused_before_reading_it() -> None:
    refused = _refused(_request(b" " * (MAX_BODY_BYTES + 1)))
    assert refused.status == 413


@pytest.mark.parametrize("headers", [{}, {"content-type": "text/plain"},
                                     {"content-type": "application/x-www-form-urlencoded"},
                                     {"Content-Type": "multipart/form-data; boundary=x"}])
def test_only_application_json_is_accepted(headers: dict[str, str]) -> None:
    assert _refused(_request(b"{}", headers)).status == 415


def test_content_type_parameters_and_case_are_accepted() -> None:
    assert read_json_object(_request(b"{}", {"Content-Type": "Application/JSON; charset=utf-8"})) == {}


@pytest.mark.parametrize("body", [b"", b"  ", b"null", b"[]", b'"x"', b"1", b"{", b"\xff"])
def test_the_body_must_be_a_json_object(body: bytes) -> None:
    assert _refused(_request(body)).status == 400


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
    {"origin": "https://evil.example", "host": "127.0.0.1:8042"},
    {"origin": "null", "host": "127.0.0.1:8042"},
    {"origin": "http://127.0.0.1:8043", "host": "127.0.0.1:8042"},
])
def test_cross_site_requests_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(RequestRefused) as info:
        check_same_origin(headers)
    assert info.value.status == 403
    assert _refused(_request(b"{}", {**JSON, **headers})).status == 403


@pytest.mark.parametrize("headers", [
    {},  # curl, scripts: no browser headers
    {"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1:8042", "host": "127.0.0.1:8042"},
    {"sec-fetch-site": "none"},
    {"origin": "https://pacs.example", "host": "orthanc:8042", "x-forwarded-host": "pacs.example"},
])
def test_same_origin_and_non_browser_requests_pass(headers: dict[str, str]) -> None:
    check_same_origin(headers)


def test_booleans_are_booleans() -> None:
    assert boolean({"X": True}, "X") is True
    assert boolean({}, "X") is False
    for value in ("false", "true", 0, 1, None, []):
        with pytest.raises(RequestRefused, match="X: expected true or false"):
            boolean({"X": value}, "X")


def test_integer_lists_hold_integers_not_booleans() -> None:
    assert integer_list({"D": [1, 2]}, "D") == [1, 2]
    for value in ([True], [1.0], ["1"], None, 1, {"a": 1}):
        with pytest.raises(RequestRefused):
            integer_list({"D": value}, "D")


def test_string_lists_match_their_pattern() -> None:
    assert string_list({"I": [ID]}, "I", pattern=request_body.ORTHANC_ID) == [ID]
    for value in ([ID.upper()], ["x"], [1], None, ID):
        with pytest.raises(RequestRefused):
            string_list({"I": value}, "I", pattern=request_body.ORTHANC_ID)
    with pytest.raises(RequestRefused, match="non-empty"):
        string_list({"I": []}, "I", non_empty=True)
