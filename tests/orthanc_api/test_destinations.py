"""Destination kinds: how the router sends to, probes and asks each kind whether it holds an instance.

Peers are asked over real HTTP (a small stdlib server playing ``POST /tools/lookup``);
modalities through a stand-in for Orthanc's ``/modalities/{m}/query`` and ``/echo`` routes.
The C-FIND itself, against a real Orthanc and SCP, runs in the ``orthanc_kill9_inflight``
fault scenario.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from bodypart_router.config import Destination
from bodypart_router.orthanc_api import (Answer, CannotAsk, HttpAccess, OrthancClient, OrthancError,
                                         OrthancNotFound, Unreachable)
from bodypart_router.orthanc_api.destinations import kinds, peers_from_config

SERIES = {"ParentStudy": "st", "MainDicomTags": {"SeriesInstanceUID": "1.2"}}
STUDY = {"MainDicomTags": {"StudyInstanceUID": "1"}}


class OrthancDouble:
    """This Orthanc's resources plus the query/echo routes towards one modality."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.query_fails = False
        self.echo_fails = False
        self.refusal = "(9, 'Error in the network protocol')"
        self.queries: list[Any] = []
        self.sop_instance_uid = "1.2.3"  # of the instance being asked about

    def call(self, method: str, uri: str, body: bytes | str | None = None, headers: Any = None) -> Answer:
        answer = self.get_json(uri) if method == "GET" else self.post_json(uri, json.loads(body or "null"))
        return Answer(json.dumps(answer).encode())

    def get_json(self, uri: str) -> Any:
        if uri.startswith("/instances/"):
            return {"ParentSeries": "se", "MainDicomTags": {"SOPInstanceUID": self.sop_instance_uid}}
        if uri.startswith("/series/"):
            return SERIES
        if uri.startswith("/studies/"):
            return STUDY
        if uri == "/queries/q1/answers":
            return self.answers
        raise OrthancNotFound(f"GET {uri}")

    def post_json(self, uri: str, body: Any) -> Any:
        if uri.endswith("/query"):
            self.queries.append(body)
            if self.query_fails:
                raise OrthancError(f"POST {uri}: {self.refusal}")
            return {"ID": "q1", "Path": "/queries/q1"}
        if uri.endswith("/echo"):
            if self.echo_fails:
                raise OrthancError(f"POST {uri}: {self.refusal}")
            return {}
        raise OrthancNotFound(f"POST {uri}")


def test_a_modality_is_asked_by_c_find_at_image_level() -> None:
    orthanc = OrthancDouble()
    lookup = OrthancClient(orthanc)
    assert lookup.holds(Destination("modality", "ai"), "i") is False
    orthanc.answers = ["0"]
    assert lookup.holds(Destination("modality", "ai"), "i") is True
    assert orthanc.queries[0] == {"Level": "Instance", "Timeout": 3, "Query": {
        "StudyInstanceUID": "1", "SeriesInstanceUID": "1.2", "SOPInstanceUID": "1.2.3"}}


def test_a_modality_without_c_find_is_told_apart_from_a_down_one_by_c_echo() -> None:
    orthanc = OrthancDouble()
    orthanc.query_fails = True
    with pytest.raises(CannotAsk):
        OrthancClient(orthanc).holds(Destination("modality", "ai"), "i")
    orthanc.echo_fails = True
    with pytest.raises(Unreachable):
        OrthancClient(orthanc).holds(Destination("modality", "ai"), "i")
    # a storage-only SCP: it accepts the association, refuses both services, so it is up
    orthanc.refusal = "DicomUserConnection: No acceptable presentation context for modality"
    with pytest.raises(CannotAsk):
        OrthancClient(orthanc).holds(Destination("modality", "ai"), "i")


def test_dicomweb_servers_cannot_be_asked() -> None:
    with pytest.raises(CannotAsk):
        OrthancClient(OrthancDouble()).holds(Destination("dicomweb", "w"), "i")


class PeerHandler(BaseHTTPRequestHandler):
    """``POST /tools/lookup`` of an Orthanc peer holding one instance, behind basic authentication."""

    held = "1.2.3"
    auth = "Basic " + base64.b64encode(b"router:secret").decode()
    refuse_with: int | None = None

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        uid = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if self.refuse_with:
            self.send_error(self.refuse_with)
            return
        if self.path != "/tools/lookup" or self.headers.get("Authorization") != self.auth:
            self.send_error(401)
            return
        found = [{"Type": "Instance", "ID": "x", "Path": "/instances/x"}] if uid == self.held else []
        body = json.dumps(found).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def peer_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PeerHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        PeerHandler.refuse_with = None


def test_a_peer_is_asked_by_tools_lookup_with_its_credentials(peer_url: str) -> None:
    peers = peers_from_config({"OrthancPeers": {"ai": [peer_url, "router", "secret"],
                                                "anonymous": {"Url": peer_url}}})
    orthanc = OrthancDouble()
    lookup = OrthancClient(orthanc, peers)
    assert lookup.holds(Destination("peer", "ai"), "i") is True
    orthanc.sop_instance_uid = "9.9.9"
    assert lookup.holds(Destination("peer", "ai"), "i") is False
    with pytest.raises(CannotAsk):  # the peer refuses a lookup without credentials
        lookup.holds(Destination("peer", "anonymous"), "i")


def test_a_peer_that_is_down_or_failing_is_unreachable(peer_url: str) -> None:
    PeerHandler.refuse_with = 503
    lookup = OrthancClient(OrthancDouble(), {"ai": HttpAccess(peer_url, "router", "secret")})
    with pytest.raises(Unreachable):
        lookup.holds(Destination("peer", "ai"), "i")
    down = OrthancClient(OrthancDouble(), {"ai": HttpAccess("http://127.0.0.1:9/")})
    with pytest.raises(Unreachable):
        down.holds(Destination("peer", "ai"), "i")


def test_each_kind_sends_through_its_own_orthanc_route() -> None:
    table = kinds()
    assert table["modality"].store_request("ai", ["i"]) == ("/modalities/ai/store",
                                                            {"Resources": ["i"], "Asynchronous": True})
    assert table["peer"].store_request("p", ["i"])[0] == "/peers/p/store"
    assert table["dicomweb"].store_request("w", ["i", "j"]) == ("/dicom-web/servers/w/stow",
                                                                {"Resources": ["i", "j"], "Synchronous": False})


def test_modalities_and_peers_are_probed_a_dicomweb_server_is_not() -> None:
    orthanc = OrthancDouble()
    client = OrthancClient(orthanc)
    assert client.probe(Destination("modality", "ai")) is True
    assert client.probe(Destination("dicomweb", "w")) is False
    orthanc.echo_fails = True
    with pytest.raises(OrthancError):
        client.probe(Destination("modality", "ai"))
