"""Cross-node claims: with several Orthanc processes on one shared index, one node per instance.

Why: the router's durable work list (:mod:`bodypart_router.forwarding.store`) is a SQLite file local to
each node. When two Orthanc processes share a PostgreSQL (or MySQL) index, every node sees
every ``NewInstance`` in the shared changes log, and an instance stored on both nodes fires
``OnStoredInstance`` on both. Without a guard, each node would classify and forward it.

How: every node records every new X-ray it sees (stored on it, or in the shared changes log),
and a worker *claims* each instance just before classifying it, by creating the instance's
``BodyPartClaim`` metadata with its node ID. The first node to create it owns the
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

A claim is re-entrant: a node that crashed between claiming and finishing finds its own ID
at the next start and carries on.

**Leases.** A claim's value is ``"<node ID> <stamp>"``. While the owner still has work on an
instance (being classified, forwards not finished) it renews the claim every third of
``ClaimLeaseSeconds`` with a new stamp (a compare-and-swap on the metadata's revision).
Claiming at the last moment keeps the set of claims to renew small however long the queue,
and a node that dies leaves its unclaimed queue to the others at once, since they hold it
queued too. A node whose claim attempt finds another node's claim records the instance as
``elsewhere`` with the value it saw, and looks again once a lease has passed: an instance
whose state is final (``forwarded``, ``held:``, ``failed:``, or a claim ending in ``done``,
which the owner writes when an instance routed nowhere is finished) is dropped; a claim whose
value has not changed for a whole lease belongs to a node that stopped working on it, and the
first node to swap its own value in (the same compare-and-swap) takes the instance over.
Staleness is judged by each watcher's own clock between two observations, so the nodes'
clocks need not agree. The new owner classifies the instance again and, with
``VerifyBeforeResend``, asks each destination whether it already holds the instance before
sending it, since the old owner may have sent it just before dying.

On a single node (no shared index in the configuration) claims are off and cost nothing.
This module never imports ``orthanc``: the adapter passes it Orthanc's configuration, and
the classification workers call :meth:`Claims.claim_or_owner` before classifying.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import CLAIM_METADATA, shared_index
from .delivery import RestError
from .store import Store

#: Store setting with this node's ID (stable across restarts of the node).
NODE_ID_KEY = "cluster_node_id"
#: ``If-Match`` that no existing claim can match: turns the PUT into "create if absent".
_NEVER_WRITTEN = '"0-' + hashlib.md5(b"bodypart-router: unclaimed").hexdigest() + '"'
#: Last word of the claim of an instance whose work is finished (see :meth:`Claims.finish`).
DONE = "done"


def owner_of(value: str) -> str:
    """The node ID in a claim's value (``"<node ID> <stamp>"``; older routers wrote the ID alone)."""
    return value.split(" ", 1)[0]


def is_done(value: str) -> bool:
    return value.rsplit(" ", 1)[-1] == DONE


@dataclass(frozen=True)
class Observed:
    """A claim as read from the index: its value and the ETag a compare-and-swap must name."""

    value: str
    etag: str


@dataclass
class Claims:
    """Claims instances for this node through Orthanc's HTTP API (see the module docstring)."""

    base_url: str
    node_id: str
    authorization: str | None = None
    timeout: float = 10.0
    verify_tls: bool = False  # loopback to our own server: its certificate is rarely for 127.0.0.1

    def _value(self, stamp: str | None = None) -> bytes:
        return f"{self.node_id} {stamp or f'{time.time():.3f}'}".encode()

    def claim(self, instance_id: str) -> bool:
        """True if this node owns the instance (it just claimed it, or had already); False otherwise."""
        return self.claim_or_owner(instance_id) is None

    def claim_or_owner(self, instance_id: str) -> str | None:
        """None when this node owns the instance; else the claim's value as another node wrote
        it ("" when the instance was deleted)."""
        status, _, _ = self._request("PUT", f"/instances/{instance_id}/metadata/{CLAIM_METADATA}",
                                     self._value(), {"If-Match": _NEVER_WRITTEN})
        if status == 200:
            return None
        if status == 404:  # deleted since it was stored: nothing to do for anybody
            return ""
        if status == 409:
            seen = self.read(instance_id)
            if seen is None:
                return ""
            return None if owner_of(seen.value) == self.node_id else seen.value
        raise RestError(f"claim of instance {instance_id}: HTTP {status} from {self.base_url}", status)

    def read(self, instance_id: str) -> Observed | None:
        """The instance's claim, or None when it has none (or the instance was deleted)."""
        status, body, etag = self._request("GET", f"/instances/{instance_id}/metadata/{CLAIM_METADATA}")
        if status == 404:
            return None
        if status != 200:
            raise RestError(f"claim of instance {instance_id}: HTTP {status} from {self.base_url}", status)
        return Observed(body.decode(errors="replace"), etag)

    def _swap(self, instance_id: str, seen: Observed, value: bytes) -> bool:
        """Replace the claim if it still is ``seen`` (Orthanc checks the revision in its transaction)."""
        status, _, _ = self._request("PUT", f"/instances/{instance_id}/metadata/{CLAIM_METADATA}", value,
                                     {"If-Match": seen.etag})
        if status in (200, 409, 404):
            return status == 200
        raise RestError(f"claim of instance {instance_id}: HTTP {status} from {self.base_url}", status)

    def renew(self, instance_id: str) -> bool:
        """Extend this node's lease; False when the claim is another node's now (or the instance is gone)."""
        seen = self.read(instance_id)
        if seen is None:
            return self.claim(instance_id)
        if owner_of(seen.value) != self.node_id:
            return False
        return self._swap(instance_id, seen, self._value()) or self.claim(instance_id)

    def finish(self, instance_id: str) -> None:
        """Mark an instance routed nowhere as finished, so that no node takes it over."""
        seen = self.read(instance_id)
        if seen is not None and owner_of(seen.value) == self.node_id and not is_done(seen.value):
            self._swap(instance_id, seen, self._value(DONE))

    def take_over(self, instance_id: str, seen: Observed) -> bool:
        """Take the instance if its claim is still exactly ``seen`` (its lease ran out)."""
        return self._swap(instance_id, seen, self._value())

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, bytes, str]:
        """(HTTP status, body, ETag)."""
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=dict(headers or {}))
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        context = None if self.verify_tls or not self.base_url.startswith("https") else ssl._create_unverified_context()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as answer:
                return answer.status, answer.read(), answer.headers.get("ETag", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), ""
        except OSError as exc:  # refused, timeout: undecided, try again later
            raise RestError(f"claim: {method} {path} on {self.base_url}: {exc}", None) from exc


class NoClaims:
    """A single node: every instance is this node's, and there is no lease to renew."""

    def claim_or_owner(self, instance_id: str) -> str | None:
        return None

    def finish(self, instance_id: str) -> None:
        pass


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

