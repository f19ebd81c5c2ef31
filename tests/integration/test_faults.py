"""``make faults`` at CI size: every scenario loses nothing, duplicates nothing, keeps Orthanc alive
and keeps patient identifiers out of the logs.

The scenarios (:mod:`support.fault_scenarios`) start real Orthanc processes with the router,
a recording DICOM SCP as the destination and, for scale-out, a private PostgreSQL. Counts are
made at the receiving end (every C-STORE the SCP gets, duplicates included) and from the
router's metadata. The whole file takes about three minutes on a 2-core machine.
"""

from __future__ import annotations

import pytest
from support.fault_scenarios import CI, ScenarioResult, run_scenario
from support.orthanc import get_runtime
from support.postgres import unavailable as postgres_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def host_orthanc() -> None:
    reason = get_runtime("host").unavailable()
    if reason:
        pytest.skip(reason)


#: Scenarios that break the router's own state database on purpose: its threads' passes fail then.
ROUTER_FAULTS = {"disk_full"}


def _check(result: ScenarioResult) -> None:
    """The issue's acceptance line, with the scenario's details in the message when it fails."""
    line = result.json_line()
    assert "error" not in result.details, line
    assert result.sent > 0, line
    assert result.lost == 0, line
    assert result.duplicates == 0, line
    assert result.orthanc_alive, line
    assert result.phi_in_logs == 0, line
    if result.scenario not in ROUTER_FAULTS:  # an exception in a router thread is a bug, not a fault
        assert result.details.get("failed_steps") == 0, line


def test_peer_down() -> None:
    result = run_scenario("peer_down_60s", CI)
    _check(result)
    assert result.delivered == result.sent
    assert result.details["delivered_while_down"] == 0, "the peer was down: nothing can have arrived"
    assert result.details["ingest_seconds"] < 10, "a down peer must not slow ingest"
    assert result.details["circuit_log_lines"] == {"down": 1, "back": 1}, "one line each way, not a flood"


def test_orthanc_kill9_midstream() -> None:
    result = run_scenario("orthanc_kill9_midstream", CI)
    _check(result)
    assert result.details["queued_at_kill"] >= 200
    assert result.delivered == result.sent


def test_orthanc_kill9_with_forwards_in_flight() -> None:
    result = run_scenario("orthanc_kill9_inflight", CI)
    _check(result)
    assert result.delivered == result.sent
    assert result.details["kills"] >= 2, "each kill must find C-STOREs on the wire"
    # the window that used to duplicate: the destination had an instance Orthanc never saw acknowledged
    assert result.details["verified_held"] >= 1, result.details


def test_duplicate_stores() -> None:
    result = run_scenario("duplicate_stores", CI)
    _check(result)
    assert result.details["c_store_failures"] == 0
    assert result.delivered == result.sent


def test_malformed_corpus() -> None:
    result = run_scenario("malformed_corpus", CI)
    _check(result)
    assert result.sent >= 500
    assert result.details["accepted_by_orthanc"] > 300, result.details
    assert result.classified > 100, "the valid-but-unusual images must still be classified"
    assert result.delivered == result.classified
    assert result.details["outcome_differs_from_core"] == 0, result.details.get("outcome_examples")


def test_two_nodes_postgres() -> None:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    result = run_scenario("two_nodes_postgres", CI)
    _check(result)
    assert result.classified == result.sent
    assert result.delivered == result.sent
    assert set(result.details["handled_by"]) == {"node-a", "node-b"}, "both nodes must have done work"


def test_node_dies_for_good() -> None:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    result = run_scenario("node_dies_for_good", CI)
    _check(result)
    assert result.delivered == result.sent
    assert result.details["forwards_held_by_the_victim"] >= 1, result.details  # it died owing forwards
    assert result.details["taken_over"] >= 1, "the dead node's claimed instances must be taken over"


# ---- hardening (support.hardening_scenarios) ------------------------------------------------


def test_state_db_lost() -> None:
    result = run_scenario("state_db_lost", CI)
    _check(result)
    assert result.delivered == result.sent
    assert result.details["rebuilds"] == 2 and result.details["set_aside"], result.details


def test_disk_full() -> None:
    result = run_scenario("disk_full", CI)
    if "cannot mount" in result.details.get("error", ""):
        pytest.skip(result.details["error"])
    _check(result)
    assert result.delivered == result.sent
    assert "full" in result.details["health_while_full"] and result.details["health_after"] == "ok"
    assert result.details["processing_after"] == 0


def test_child_killed_repeatedly() -> None:
    result = run_scenario("child_killed_repeatedly", CI)
    _check(result)
    assert result.delivered == result.sent
    assert result.details["child_kills"] >= 2 and result.details["failed"] == {}, result.details


def test_destination_flapping() -> None:
    result = run_scenario("destination_flapping", CI)
    _check(result)
    assert result.delivered == result.sent and result.details["flaps"] >= 2


def test_decompression_bombs() -> None:
    result = run_scenario("decompression_bombs", CI)
    _check(result)
    assert result.sent == 4 and all(s.startswith("failed:") for s in result.details["states"].values()), result.details


def test_csrf_and_hostile_bodies() -> None:
    result = run_scenario("csrf_and_hostile_bodies", CI)
    _check(result)
    assert result.details["unexpected_answers"] == [] and result.details["health"] == "ok"
