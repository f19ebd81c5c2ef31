"""The router's one HTTP client, against a real HTTP(S) server on loopback.

Statuses become the error hierarchy, credentials and headers are sent, ETags come back,
and TLS is verified: against the system's CAs by default, and for this node's own server
against exactly its own certificate, whatever name that was issued for.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bodypart_router.orthanc_api import (
    HttpAccess,
    HttpClient,
    OrthancClient,
    OrthancConflict,
    OrthancNotFound,
    OrthancRejected,
    OrthancUnavailable,
)
from bodypart_router.orthanc_api.destinations import peers_from_config


class Server:
    """Answers every request with ``status``/``body``/``etag`` and records what it received."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.etag = '"1-abc"'
        self.received: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.received.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": self.rfile.read(length)})
                self.send_response(owner.status)
                self.send_header("ETag", owner.etag)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.httpd.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def test_answers_credentials_headers_and_etags(server: Server) -> None:
    server.body = b'{"Version": "1.12.7"}'
    client = HttpClient(HttpAccess(server.url, "alice", "s3cret", {"X-Site": "north"}))
    answer = client.call("PUT", "/instances/i/metadata/M", "v", {"If-Match": '"0-x"'})
    assert answer.json() == {"Version": "1.12.7"} and answer.etag == '"1-abc"'
    sent = server.received[-1]
    assert (sent["method"], sent["path"], sent["body"]) == ("PUT", "/instances/i/metadata/M", b"v")
    assert sent["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert sent["headers"]["X-Site"] == "north" and sent["headers"]["If-Match"] == '"0-x"'
    assert OrthancClient(client).system()["Version"] == "1.12.7"


@pytest.mark.parametrize(("status", "error"), [(404, OrthancNotFound), (409, OrthancConflict),
                                               (400, OrthancRejected), (403, OrthancRejected),
                                               (500, OrthancUnavailable), (503, OrthancUnavailable)])
def test_each_status_is_one_class_of_the_hierarchy(server: Server, status: int, error: type) -> None:
    server.status, server.body = status, b"why"
    with pytest.raises(error) as raised:
        HttpClient(HttpAccess(server.url)).call("GET", "/x")
    assert raised.value.status == status and "why" in str(raised.value)


def test_no_answer_is_unavailable() -> None:
    with Server() as gone:
        url = gone.url
    with pytest.raises(OrthancUnavailable):
        HttpClient(HttpAccess(url, timeout=2)).call("GET", "/system")


def test_metadata_reads_carry_their_revision_and_a_missing_one_is_none(server: Server) -> None:
    orthanc = OrthancClient(HttpClient(HttpAccess(server.url)))
    server.body = b"node-a 12.5"
    found = orthanc.metadata("i", "BodyPartClaim")
    assert found is not None and (found.value, found.revision) == ("node-a 12.5", '"1-abc"')
    server.status = 404
    assert orthanc.metadata("i", "BodyPartClaim") is None


def test_own_node_access_follows_orthancs_configuration(tmp_path: Path) -> None:
    plain = HttpAccess.own_node({"HttpPort": 8043})
    assert (plain.url, plain.username, plain.authorization) == ("http://127.0.0.1:8043", None, None)
    secured = HttpAccess.own_node({"HttpPort": 8043, "RemoteAccessAllowed": True, "RegisteredUsers": {"u": "p"},
                                   "SslEnabled": True, "SslCertificate": "/etc/orthanc/cert.pem"})
    assert secured.url == "https://127.0.0.1:8043" and (secured.username, secured.password) == ("u", "p")
    assert (secured.verify, secured.check_hostname) == ("/etc/orthanc/cert.pem", False)
    off = HttpAccess.own_node({"AuthenticationEnabled": False, "RegisteredUsers": {"u": "p"}})
    assert off.authorization is None


def test_peers_take_orthancs_tls_settings_and_both_entry_forms() -> None:
    peers = peers_from_config({
        "HttpsCACertificates": "/etc/ssl/certs/ca-certificates.crt",
        "OrthancPeers": {"a": ["https://a:8042/", "u", "p"], "b": ["http://b/"],
                         "c": {"Url": "https://c/", "Username": "x", "Password": "y", "HttpHeaders": {"K": "v"},
                               "CertificateFile": "c.pem", "CertificateKeyFile": "c.key"}}})
    assert (peers["a"].url, peers["a"].username, peers["a"].password) == ("https://a:8042/", "u", "p")
    assert peers["a"].verify == "/etc/ssl/certs/ca-certificates.crt"
    assert peers["b"].username is None
    assert dict(peers["c"].headers) == {"K": "v"} and peers["c"].certificate == ("c.pem", "c.key")
    assert peers_from_config({"HttpsVerifyPeers": False, "OrthancPeers": {"a": ["https://a/"]}})["a"].verify is False


# -- TLS, with a certificate issued for another name than 127.0.0.1 ---------------------------
@pytest.fixture()
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=orthanc.example", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with Server() as s:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        s.httpd.socket = context.wrap_socket(s.httpd.socket, server_side=True)
        yield s, cert


def test_tls_is_verified_against_the_system_cas_by_default(tls_server: tuple[Server, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(OrthancUnavailable, match="(?i)certificate"):
        HttpClient(HttpAccess(server.url)).call("GET", "/system")


def test_a_pinned_certificate_must_still_match_the_name_unless_told_otherwise(tls_server: tuple[Server, Path]) -> None:
    server, cert = tls_server
    with pytest.raises(OrthancUnavailable):
        HttpClient(HttpAccess(server.url, verify=str(cert))).call("GET", "/system")


def test_the_own_node_trusts_exactly_its_own_certificate(tls_server: tuple[Server, Path], tmp_path: Path) -> None:
    server, cert = tls_server
    own = tmp_path / "orthanc.pem"  # Orthanc's SslCertificate: the key and the certificate in one file
    own.write_bytes((tmp_path / "key.pem").read_bytes() + cert.read_bytes())
    config = {"HttpPort": server.port, "SslEnabled": True, "SslCertificate": str(own)}
    assert HttpClient(HttpAccess.own_node(config)).call("GET", "/system").json() == {}
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=orthanc.example", "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
                   check=True, capture_output=True)
    with pytest.raises(OrthancUnavailable):  # another certificate of the same name is not ours
        HttpClient(HttpAccess.own_node({**config, "SslCertificate": str(other)})).call("GET", "/system")


def test_each_thread_has_its_own_session_configured_the_same(server: Server) -> None:
    client = HttpClient(HttpAccess(server.url, "alice", "s3cret"))
    sessions: list[Any] = []

    def call() -> None:
        client.call("GET", "/system")
        sessions.append(client._session())

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions}) == 3
    assert all(r["headers"]["Authorization"].startswith("Basic ") for r in server.received)
