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
HTTP server on 127.0.0.1 (:meth:`HttpAccess.own_node <bodypart_router.orthanc_api.http.HttpAccess.own_node>`:
``HttpPort``, ``SslEnabled``, the first ``RegisteredUsers`` entry when authentication is on).

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

import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import CLAIM_METADATA, shared_index
from ..orthanc_api import HttpAccess, HttpClient, Orthanc, OrthancClient, OrthancConflict, OrthancNotFound
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


class Claims:
    """Claims instances for this node through an :class:`~bodypart_router.orthanc_api.Orthanc` that
    supports conditional writes (HTTP; see the module docstring)."""

    def __init__(self, orthanc: Orthanc, node_id: str, access: HttpAccess | None = None) -> None:
        self.orthanc = orthanc
        self.node_id = node_id
        #: Where the claims go, when over HTTP (for the log and the tests).
        self.access = access

    @classmethod
    def over_http(cls, access: HttpAccess, node_id: str) -> "Claims":
        return cls(OrthancClient(HttpClient(access)), node_id, access)

    def _value(self, stamp: str | None = None) -> str:
        return f"{self.node_id} {stamp or f'{time.time():.3f}'}"

    def claim(self, instance_id: str) -> bool:
        """True if this node owns the instance (it just claimed it, or had already); False otherwise."""
        return self.claim_or_owner(instance_id) is None

    def claim_or_owner(self, instance_id: str) -> str | None:
        """None when this node owns the instance; else the claim's value as another node wrote
        it ("" when the instance was deleted). Raises ``OrthancError`` when undecided."""
        try:
            self.orthanc.set_metadata(instance_id, CLAIM_METADATA, self._value(), if_match=_NEVER_WRITTEN)
            return None
        except OrthancNotFound:  # deleted since it was stored: nothing to do for anybody
            return ""
        except OrthancConflict:
            seen = self.read(instance_id)
            if seen is None:
                return ""
            return None if owner_of(seen.value) == self.node_id else seen.value

    def read(self, instance_id: str) -> Observed | None:
        """The instance's claim, or None when it has none (or the instance was deleted)."""
        found = self.orthanc.metadata(instance_id, CLAIM_METADATA)
        return None if found is None else Observed(found.value, found.revision)

    def _swap(self, instance_id: str, seen: Observed, value: str) -> bool:
        """Replace the claim if it still is ``seen`` (Orthanc checks the revision in its transaction)."""
        try:
            self.orthanc.set_metadata(instance_id, CLAIM_METADATA, value, if_match=seen.etag)
        except (OrthancConflict, OrthancNotFound):
            return False
        return True

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
    return Claims.over_http(HttpAccess.own_node(orthanc_config), node_id)
