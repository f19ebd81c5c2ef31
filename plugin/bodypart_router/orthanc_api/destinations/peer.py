"""An ``OrthancPeers`` destination: sent through Orthanc, probed by ``/peers/{p}/system``, asked directly.

Orthanc 1.10 has no REST route that proxies an arbitrary call to a peer, so "do you hold this
instance?" is ``POST {Url}/tools/lookup`` sent by the router's own HTTP client, with the
credentials, headers and TLS settings of the peer's entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Callable
from typing import Any

from ..errors import CannotAsk, OrthancError, OrthancUnavailable, Unreachable
from ..http import HttpAccess, HttpClient
from ..interface import InstanceUids
from ..transport import Transport, get_json


def peers_from_config(orthanc_config: Mapping[str, Any]) -> dict[str, HttpAccess]:
    """``OrthancPeers`` entries, in either of Orthanc's forms (``[url, user, password]`` or an object),
    with Orthanc's own TLS settings for its HTTP client (``HttpsVerifyPeers``, ``HttpsCACertificates``)."""
    verify: bool | str = bool(orthanc_config.get("HttpsVerifyPeers", True))
    if verify and orthanc_config.get("HttpsCACertificates"):
        verify = str(orthanc_config["HttpsCACertificates"])
    out: dict[str, HttpAccess] = {}
    for name, entry in (orthanc_config.get("OrthancPeers") or {}).items():
        if isinstance(entry, list) and entry:
            user, password = (list(map(str, entry[1:3])) + [None, None])[:2]
            out[str(name)] = HttpAccess(str(entry[0]), user, password, verify=verify)
        elif isinstance(entry, Mapping) and entry.get("Url"):
            certificate = entry.get("CertificateFile")
            out[str(name)] = HttpAccess(
                str(entry["Url"]), entry.get("Username"), entry.get("Password"),
                {str(k): str(v) for k, v in (entry.get("HttpHeaders") or {}).items()}, verify=verify,
                certificate=(str(certificate), str(entry["CertificateKeyFile"])) if certificate and
                entry.get("CertificateKeyFile") else (str(certificate) if certificate else None))
    return out


class Peer:
    def __init__(self, peers: Mapping[str, HttpAccess], timeout: int) -> None:
        self.peers = peers
        self.timeout = timeout
        self._clients: dict[str, HttpClient] = {}

    def store_request(self, name: str, instance_ids: list[str]) -> tuple[str, dict[str, Any]]:
        return f"/peers/{name}/store", {"Resources": list(instance_ids), "Asynchronous": True}

    def probe(self, orthanc: Transport, name: str) -> bool:
        get_json(orthanc, f"/peers/{name}/system")
        return True

    def _client(self, name: str) -> HttpClient:
        client = self._clients.get(name)
        if client is None:
            access = self.peers.get(name)
            if access is None:
                raise CannotAsk(f"OrthancPeers.{name} has no Url the router can read")
            client = self._clients[name] = HttpClient(HttpAccess(**{**access.__dict__, "timeout": self.timeout}))
        return client

    def holds(self, orthanc: Transport, name: str, uids: Callable[[], InstanceUids]) -> bool:
        client = self._client(name)
        sop_instance_uid = uids().sop_instance
        try:
            found = client.call("POST", "/tools/lookup", sop_instance_uid,
                                {"Content-Type": "text/plain"}).json()
        except OrthancUnavailable as exc:  # no answer, or a server error
            raise Unreachable(f"peer {name}: {exc}") from exc
        except OrthancError as exc:
            raise CannotAsk(f"peer {name} refused POST /tools/lookup: HTTP {exc.status}") from exc
        except ValueError as exc:  # not JSON
            raise Unreachable(f"peer {name}: {exc}") from exc
        return any(isinstance(x, Mapping) and x.get("Type") == "Instance" for x in found or [])
