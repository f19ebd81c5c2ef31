"""Cross-node claims: with several Orthanc processes on one shared index, one node per instance.

Why: the router's durable work list (:mod:`bodypart_router.store`) is a SQLite file local to
each node. When two Orthanc processes share a PostgreSQL (or MySQL) index, every node sees
every ``NewInstance`` in the shared changes log, and an instance stored on both nodes fires
``OnStoredInstance`` on both. Without a guard, each node would classify and forward it.

How: before a node records an instance to classify, it *claims* it by creating the
instance's ``BodyPartClaim`` metadata with its node ID. The first node to create it owns the
instance; every other node leaves it alone. The creation is atomic because Orthanc (1.9.2 and
later) checks an ``If-Match`` revision inside the database transaction that writes the
metadata: a metadata that does not exist yet is created whatever ``If-Match`` says, while an
existing one must match the given revision *and* the MD5 of its value. An ``If-Match`` naming
a value no node ever writes is therefore "create if absent": ``200`` for the first node,
``409 Conflict`` for the others. On a shared PostgreSQL index concurrent attempts are
serialised by the database (Orthanc replays a transaction that lost a serialisation conflict).

orthanc-python 4.0's ``RestApiPut`` cannot send headers, so claims go through the node's own
HTTP server on 127.0.0.1 (``HttpPort``; ``SslEnabled``; the first ``RegisteredUsers`` entry
when authentication is on).

A claim is re-entrant: a node that crashed between claiming and recording finds its own ID
at the next start and carries on. A node that dies for good keeps its instances until it is
restarted with the same ``StateDirectory`` (the node ID is kept in its store).

On a single node (no shared index in the configuration) claims are off and cost nothing.
This module never imports ``orthanc``: the adapter passes it Orthanc's configuration, and
the ingest recorder calls :meth:`Claims.mine` before recording what it received.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .delivery import RestError
from .store import QUEUED, Received, Store

#: Instance metadata holding the owner's node ID; declare it in ``UserMetadata``.
CLAIM_METADATA = "BodyPartClaim"
#: Store setting with this node's ID (stable across restarts of the node).
NODE_ID_KEY = "cluster_node_id"
#: ``If-Match`` that no existing claim can match: turns the PUT into "create if absent".
_NEVER_WRITTEN = '"0-' + hashlib.md5(b"bodypart-router: unclaimed").hexdigest() + '"'
#: Index plugins whose ``Lock: false`` lets several Orthanc processes share one index.
_SHARED_INDEX_SECTIONS = ("PostgreSQL", "MySQL", "Odbc")


def shared_index(orthanc_config: Mapping[str, Any]) -> str | None:
    """The index plugin section that several nodes may share (``EnableIndex`` true, ``Lock`` false), if any."""
    for section in _SHARED_INDEX_SECTIONS:
        value = orthanc_config.get(section)
        if isinstance(value, Mapping) and value.get("EnableIndex") and value.get("Lock", True) is False:
            return section
    return None


@dataclass
class Claims:
    """Claims instances for this node through Orthanc's HTTP API (see the module docstring)."""

    base_url: str
    node_id: str
    authorization: str | None = None
    timeout: float = 10.0
    verify_tls: bool = False  # loopback to our own server: its certificate is rarely for 127.0.0.1

    def claim(self, instance_id: str) -> bool:
        """True if this node owns the instance (it just claimed it, or had already); False otherwise."""
        status, _ = self._request("PUT", f"/instances/{instance_id}/metadata/{CLAIM_METADATA}",
                                  self.node_id.encode(), {"If-Match": _NEVER_WRITTEN})
        if status == 200:
            return True
        if status == 404:  # deleted since it was stored: nothing to do for anybody
            return False
        if status == 409:
            status, owner = self._request("GET", f"/instances/{instance_id}/metadata/{CLAIM_METADATA}")
            if status == 200:
                return owner.decode(errors="replace") == self.node_id
            if status == 404:
                return False
        raise RestError(f"claim of instance {instance_id}: HTTP {status} from {self.base_url}", status)

    def mine(self, items: Iterable[Received]) -> list[Received]:
        """The items this node should record: every skip (harmless on both nodes), and the
        instances to classify that this node owns. Raises :class:`RestError` when a claim
        cannot be decided, so the caller records nothing and tries again later."""
        return [item for item in items if item.state != QUEUED or self.claim(item.instance_id)]

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=dict(headers or {}))
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        context = None if self.verify_tls or not self.base_url.startswith("https") else ssl._create_unverified_context()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:  # refused, timeout: undecided, try again later
            raise RestError(f"claim: {method} {path} on {self.base_url}: {exc}", None) from exc


class NoClaims:
    """A single node: every instance is this node's."""

    def mine(self, items: Iterable[Received]) -> list[Received]:
        return list(items)


def for_node(orthanc_config: Mapping[str, Any], store: Store) -> Claims | NoClaims:
    """Claims when the configuration shares its index with other nodes, else :class:`NoClaims`."""
    if shared_index(orthanc_config) is None:
        return NoClaims()
    declared = orthanc_config.get("UserMetadata") or {}
    if CLAIM_METADATA not in declared:
        raise ValueError(f'UserMetadata: declare "{CLAIM_METADATA}" (for example 1029): several nodes share '
                         "this index and the router records which node handles each instance there")
    node_id = store.get_setting(NODE_ID_KEY)
    if not node_id:
        node_id = f"{orthanc_config.get('Name', 'orthanc')}-{uuid.uuid4().hex[:12]}"
        store.set_setting(NODE_ID_KEY, node_id)
    scheme = "https" if orthanc_config.get("SslEnabled") else "http"
    port = int(orthanc_config.get("HttpPort", 8042))
    return Claims(f"{scheme}://127.0.0.1:{port}", node_id, _authorization(orthanc_config))


def _authorization(orthanc_config: Mapping[str, Any]) -> str | None:
    """Basic credentials of the first registered user when HTTP authentication is on."""
    enabled = orthanc_config.get("AuthenticationEnabled", bool(orthanc_config.get("RemoteAccessAllowed")))
    users = orthanc_config.get("RegisteredUsers") or {}
    if not enabled or not users:
        return None
    user, password = next(iter(users.items()))
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

