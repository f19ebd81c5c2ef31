"""Verify before resend: how the router asks a destination whether it already holds an instance.

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
from bodypart_router.forwarding.delivery import CannotAsk, RestError, Unreachable
from bodypart_router.forwarding.verify import DestinationLookup, PeerAccess, peers_from_config

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

    def get_json(self, uri: str) -> Any:
        if uri.startswith("/instances/"):
            return {"ParentSeries": "se", "MainDicomTags": {"SOPInstanceUID": self.sop_instance_uid}}
        if uri.startswith("/series/"):
            return SERIES
        if uri.startswith("/studies/"):
            return STUDY
        if uri == "/queries/q1/answers":
            return self.answers
        raise RestError(f"GET {uri}", 404)

    def post_json(self, uri: str, body: Any) -> Any:
        if uri.endswith("/query"):
            self.queries.append(body)
            if self.query_fails:
                raise RestError(f"POST {uri}: {self.refusal}")
            return {"ID": "q1", "Path": "/queries/q1"}
        if uri.endswith("/echo"):
            if self.echo_fails:
                raise RestError(f"POST {uri}: {self.refusal}")
            return {}
        raise RestError(f"POST {uri}", 404)


def test_a_modality_is_asked_by_c_find_at_image_level() -> None:
    orthanc = OrthancDouble()
    lookup = DestinationLookup(orthanc, {})
    assert lookup.holds(Destination("modality", "ai"), "i") is False
    orthanc.answers = ["0"]
    assert lookup.holds(Destination("modality", "ai"), "i") is True
    assert orthanc.queries[0] == {"Level": "Instance", "Timeout": 3, "Query": {
        "StudyInstanceUID": "1", "SeriesInstanceUID": "1.2", "SOPInstanceUID": "1.2.3"}}


def test_a_modality_without_c_find_is_told_apart_from_a_down_one_by_c_echo() -> None:
    orthanc = OrthancDouble()
    orthanc.query_fails = True
    with pytest.raises(CannotAsk):
        DestinationLookup(orthanc, {}).holds(Destination("modality", "ai"), "i")
    orthanc.echo_fails = True
    with pytest.raises(Unreachable):
        DestinationLookup(orthanc, {}).holds(Destination("modality", "ai"), "i")
    # a storage-only SCP: it accepts the association, refuses both services, so it is up
    orthanc.refusal = "DicomUserConnection: No acceptable presentation context for modality"
    with pytest.raises(CannotAsk):
        DestinationLookup(orthanc, {}).holds(Destination("modality", "ai"), "i")


def test_dicomweb_servers_cannot_be_asked() -> None:
    with pytest.raises(CannotAsk):
        DestinationLookup(OrthancDouble(), {}).holds(Destination("dicomweb", "w"), "i")


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
    lookup = DestinationLookup(orthanc, peers)
    assert lookup.holds(Destination("peer", "ai"), "i") is True
    orthanc.sop_instance_uid = "9.9.9"
    assert lookup.holds(Destination("peer", "ai"), "i") is False
    with pytest.raises(CannotAsk):  # the peer refuses a lookup without credentials
        lookup.holds(Destination("peer", "anonymous"), "i")


def test_a_peer_that_is_down_or_failing_is_unreachable(peer_url: str) -> None:
    PeerHandler.refuse_with = 503
    lookup = DestinationLookup(OrthancDouble(), {"ai": PeerAccess(peer_url, "router", "secret")})
    with pytest.raises(Unreachable):
        lookup.holds(Destination("peer", "ai"), "i")
    down = DestinationLookup(OrthancDouble(), {"ai": PeerAccess("http://127.0.0.1:9/")}, timeout=2)
    with pytest.raises(Unreachable):
        down.holds(Destination("peer", "ai"), "i")
