"""Cluster claims against ``FakeOrthanc``, which checks metadata revisions the way Orthanc does.

The race between two real Orthanc processes on one PostgreSQL index is in
tests/integration/test_claims.py; here each rule of the protocol is checked on its own.
"""

from __future__ import annotations

from bodypart_router.forwarding.claims import CLAIM_METADATA, DONE, Claims, is_done, owner_of
from support.fake_orthanc import FakeOrthanc


def test_the_first_node_owns_an_instance_and_finds_its_claim_again() -> None:
    orthanc = FakeOrthanc()
    a, b = Claims(orthanc, "node-a"), Claims(orthanc, "node-b")
    assert a.claim("i") and a.claim("i"), "re-entrant: the owner finds its own claim after a restart"
    assert not b.claim("i")
    seen = b.read("i")
    assert seen is not None and owner_of(seen.value) == "node-a"
    assert b.claim_or_owner("i") == seen.value, "the loser learns the claim to watch"


def test_a_deleted_instance_belongs_to_nobody() -> None:
    orthanc = FakeOrthanc()
    orthanc.deleted.add("gone")
    assert Claims(orthanc, "node-a").claim_or_owner("gone") == ""
    assert Claims(orthanc, "node-a").read("gone") is None


def test_renewing_changes_the_stamp_and_a_stale_claim_is_taken_over_once() -> None:
    orthanc = FakeOrthanc()
    a, b, c = Claims(orthanc, "node-a"), Claims(orthanc, "node-b"), Claims(orthanc, "node-c")
    assert a.claim("i")
    before = b.read("i")
    assert before is not None and a.renew("i")
    after = b.read("i")
    assert after is not None and after.etag != before.etag
    assert not b.take_over("i", before), "a claim renewed since it was seen is not stale"
    assert b.take_over("i", after)
    assert not c.take_over("i", after), "only the first node to swap takes it over"
    assert not a.renew("i"), "the old owner learns it lost the instance"


def test_finishing_marks_the_claim_done_so_nobody_takes_it_over() -> None:
    orthanc = FakeOrthanc()
    a = Claims(orthanc, "node-a")
    a.claim("i")
    a.finish("i")
    seen = a.read("i")
    assert seen is not None and is_done(seen.value) and seen.value.endswith(" " + DONE)
    assert orthanc.metadata("i", CLAIM_METADATA) is not None
