"""The cross-node claim against two real Orthanc processes sharing one PostgreSQL index.

:mod:`bodypart_router.forwarding.claims` relies on Orthanc creating a metadata atomically
when the ``If-Match`` of the PUT names a value nobody wrote. These tests race two nodes on the
same instances and check that exactly one wins each, that a claim is re-entrant, and that
a single node (no shared index) needs no claim at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bodypart_router.forwarding.claims import (
    CLAIM_METADATA,
    Claims,
    NoClaims,
    for_node,
    is_done,
    owner_of,
    shared_index,
)
from bodypart_router.forwarding.store import Store
from bodypart_router.orthanc_api import HttpAccess
from support.malformed import base_dataset, to_bytes
from support.orthanc import OrthancProcess
from support.postgres import POSTGRESQL_INDEX_PLUGIN, PostgresCluster, unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancProcess, OrthancProcess]]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    storage = tmp_path_factory.mktemp("shared-storage")
    cluster = PostgresCluster()
    nodes: list[OrthancProcess] = []
    try:
        cluster.start()
        for name in ("node-a", "node-b"):
            config = {"Name": name, "Plugins": [POSTGRESQL_INDEX_PLUGIN], "StorageDirectory": str(storage),
                      "UserMetadata": {CLAIM_METADATA: 1029}, **cluster.orthanc_config()}
            nodes.append(OrthancProcess(config, name=name).start())
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.cleanup()
        cluster.cleanup()


def _claims(node: OrthancProcess) -> Claims:
    return Claims.over_http(HttpAccess(node.url), node.name)


def test_exactly_one_node_wins_each_instance(two_nodes: tuple[OrthancProcess, OrthancProcess]) -> None:
    a, b = two_nodes
    ids = [a.upload(to_bytes(base_dataset(7000 + i, rows=16, cols=16))) for i in range(120)]
    wins: dict[str, list[str]] = {i: [] for i in ids}
    lock = threading.Lock()

    def attempt(node: OrthancProcess, instance_id: str) -> None:
        if _claims(node).claim(instance_id):
            with lock:
                wins[instance_id].append(node.name)

    with ThreadPoolExecutor(8) as pool:  # both nodes ask for every instance at the same moment
        list(pool.map(lambda job: attempt(*job), [(n, i) for i in ids for n in (a, b)]))
    assert {i: w for i, w in wins.items() if len(w) != 1} == {}
    assert {w[0] for w in wins.values()} == {"node-a", "node-b"}, "the race should be won by both sides"
    # the metadata names the winner, as seen from either node
    assert owner_of(a.request("GET", f"/instances/{ids[0]}/metadata/{CLAIM_METADATA}").text) == wins[ids[0]][0]


def test_a_claim_is_reentrant_and_exclusive(two_nodes: tuple[OrthancProcess, OrthancProcess]) -> None:
    a, b = two_nodes
    instance = a.upload(to_bytes(base_dataset(7500, rows=16, cols=16)))
    assert _claims(b).claim(instance)
    assert _claims(b).claim(instance), "the owner finds its own claim again after a restart"
    assert not _claims(a).claim(instance)
    seen = _claims(a).read(instance)
    assert seen is not None and owner_of(seen.value) == "node-b"
    assert _claims(a).claim_or_owner(instance) == seen.value, "the loser learns the claim to watch"
    assert _claims(b).claim_or_owner(instance) is None


def test_a_lease_is_renewed_by_its_owner_and_taken_over_only_when_unchanged(
        two_nodes: tuple[OrthancProcess, OrthancProcess]) -> None:
    a, b = two_nodes
    instance = a.upload(to_bytes(base_dataset(7700, rows=16, cols=16)))
    owner, other = _claims(a), _claims(b)
    assert owner.claim(instance)
    first = other.read(instance)
    assert first is not None
    assert owner.renew(instance)
    renewed = other.read(instance)
    assert renewed is not None and renewed.value != first.value and owner_of(renewed.value) == "node-a"
    assert not other.take_over(instance, first), "a renewed claim is not taken over"
    assert other.take_over(instance, renewed), "an unchanged claim is"
    assert owner_of(owner.read(instance).value) == "node-b"  # type: ignore[union-attr]
    assert not owner.renew(instance), "the old owner learns it lost the instance"
    assert not owner.take_over(instance, renewed), "only one node can swap a given value out"
    other.finish(instance)
    assert is_done(other.read(instance).value)  # type: ignore[union-attr]


def test_deleted_instance_is_nobodys(two_nodes: tuple[OrthancProcess, OrthancProcess]) -> None:
    a, _ = two_nodes
    instance = a.upload(to_bytes(base_dataset(7600, rows=16, cols=16)))
    a.request("DELETE", f"/instances/{instance}")
    assert not _claims(a).claim(instance)


def test_claims_switch_on_only_for_a_shared_index(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    try:
        assert isinstance(for_node({"Name": "solo"}, store), NoClaims)
        locked = {"PostgreSQL": {"EnableIndex": True, "Lock": True}}
        assert shared_index(locked) is None
        shared = {"Name": "n1", "HttpPort": 8043, "PostgreSQL": {"EnableIndex": True, "Lock": False}}
        with pytest.raises(ValueError, match="UserMetadata.*BodyPartClaim"):
            for_node(shared, store)
        claims = for_node({**shared, "UserMetadata": {CLAIM_METADATA: 1029}}, store)
        assert isinstance(claims, Claims)
        assert claims.access is not None and claims.access.url == "http://127.0.0.1:8043"
        again = for_node({**shared, "UserMetadata": {CLAIM_METADATA: 1029}}, store)
        assert again.node_id == claims.node_id, "the node ID survives restarts (kept in the store)"
        secured = {**shared, "UserMetadata": {CLAIM_METADATA: 1029}, "AuthenticationEnabled": True,
                   "RegisteredUsers": {"router": "secret"}}
        access = for_node(secured, store).access  # type: ignore[union-attr]
        assert access is not None and access.authorization == "Basic cm91dGVyOnNlY3JldA=="
    finally:
        store.close()
