"""The router plugin end to end, inside a real Orthanc, forwarding to real receivers.

Setup (see conftest): adult_chest -> an Orthanc peer over HTTP; spine -> a DICOM SCP;
pediatric_chest -> a slow DICOM SCP; abdominal -> a peer where nothing listens;
others and uncertain -> nowhere. The tiny test model picks the class from the gray level.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
from support import dicoms
from support.dicom_net import c_store
from support.orthanc import OrthancProcess
from support.router_setup import SLOW_SECONDS, RouterSetup
from support.tiny_model import TINY_REGION, UNCERTAIN_GRAY, gray_for

pytestmark = pytest.mark.integration

FINAL = ("forwarded", "classified", "failed:dead-letter")


def _state(router: OrthancProcess, instance_id: str) -> str | None:
    return router.metadata(instance_id).get("BodyPartState")


def _wait_state(
    router: OrthancProcess, instance_id: str, states: tuple[str, ...] | str, timeout: float = 30
) -> dict[str, str]:
    wanted = (states,) if isinstance(states, str) else states
    router.wait_for(lambda: _state(router, instance_id) in wanted, timeout=timeout,
                    what=f"instance {instance_id} in state {wanted} (now {_state(router, instance_id)})")
    return router.metadata(instance_id)


def test_rest_upload_is_classified_labelled_and_forwarded_to_a_peer(setup: RouterSetup) -> None:
    router, chest = setup.router, setup.chest
    ds = dicoms.xray(gray_for("adult_chest"))
    instance = router.upload(dicoms.to_bytes(ds))

    meta = _wait_state(router, instance, "forwarded")
    assert meta["BodyPart"] == "adult_chest"
    assert float(meta["BodyPartScore"]) > 0.99
    assert meta["BodyPartModel"].startswith("tiny-test-model@") and len(meta["BodyPartModel"].split("@")[1]) == 12
    assert meta["BodyPartForwarded"] == "ai-chest"
    assert (meta["BodyPartRegion"], meta["BodyPartView"], meta["BodyPartRotation"], meta["BodyPartInverted"]) == (
        TINY_REGION["adult_chest"], "frontal", "0", "false")
    # Orthanc IDs derive from the UIDs, so the peer stores it under the same ID.
    assert chest.get_json(f"/instances/{instance}/simplified-tags")["SOPInstanceUID"] == ds.SOPInstanceUID
    version = tuple(int(x) for x in router.get_json("/system")["Version"].split(".")[:2])
    if version >= (1, 12):  # labels exist from Orthanc 1.12
        series = router.get_json(f"/instances/{instance}")["ParentSeries"]
        study = router.get_json(f"/series/{series}")["ParentStudy"]
        assert "bodypart-adult-chest" in router.get_json(f"/series/{series}/labels")
        assert "bodypart-adult-chest" in router.get_json(f"/studies/{study}/labels")


def test_cstore_upload_is_forwarded_by_cstore(setup: RouterSetup) -> None:
    router, general = setup.router, setup.general
    ds = dicoms.xray(gray_for("spine"))
    assert c_store([ds], router.dicom_port, called_aet=router.aet) == [0]
    instance = router.wait_for(lambda: router.find_instance(ds.SOPInstanceUID), what="instance stored")
    meta = _wait_state(router, instance, "forwarded")
    assert (meta["BodyPart"], meta["BodyPartForwarded"]) == ("spine", "ai-general")
    assert general.count(ds.SOPInstanceUID) == 1


def test_duplicate_stores_forward_only_once(setup: RouterSetup) -> None:
    router, general = setup.router, setup.general
    ds = dicoms.xray(gray_for("spine"))
    data = dicoms.to_bytes(ds)
    instance = router.upload(data)
    _wait_state(router, instance, "forwarded")
    router.upload(data)                                       # again by REST
    c_store([ds, ds], router.dicom_port, called_aet=router.aet)  # and twice by C-STORE
    time.sleep(2.0)  # several recorder/forwarder cycles
    assert general.count(ds.SOPInstanceUID) == 1
    record = router.get_json(f"/bodypart-router/instances/{instance}")
    deliveries = [(d["Destination"], d["State"], d["Attempts"]) for d in record["Deliveries"]]
    assert deliveries == [("ai-general", "delivered", 1)]


def _router_state(router: OrthancProcess, instance_id: str) -> str | None:
    return router.get_json(f"/bodypart-router/instances/{instance_id}")["State"]


def test_non_xrays_are_skipped_with_their_reason_and_left_untouched(setup: RouterSetup) -> None:
    router = setup.router
    ct = router.upload(dicoms.to_bytes(dicoms.ct()))
    sr = router.upload(dicoms.to_bytes(dicoms.sr()))
    for instance, state in ((ct, "skipped:non-projection-modality"), (sr, "skipped:non-image-sop-class")):
        router.wait_for(lambda i=instance, s=state: _router_state(router, i) == s, what=f"{instance} {state}")
        assert not [k for k in router.metadata(instance) if k.startswith("BodyPart")]  # MarkSkipped is false
    record = router.get_json(f"/bodypart-router/instances/{ct}")
    assert record["Deliveries"] == [] and "CT" in record["Detail"]


def test_a_deleted_and_resent_instance_is_classified_again_but_not_sent_twice(setup: RouterSetup) -> None:
    router, general = setup.router, setup.general
    ds = dicoms.xray(gray_for("spine"))
    data = dicoms.to_bytes(ds)
    instance = router.upload(data)
    _wait_state(router, instance, "forwarded")
    patient = router.get_json(f"/instances/{instance}/patient")["ID"]
    assert router.request("DELETE", f"/patients/{patient}").ok
    router.wait_for(lambda: not router.get_json(f"/bodypart-router/instances/{instance}")["Known"],
                    what="the deleted instance forgotten by the router")
    assert router.upload(data) == instance  # same UIDs, same Orthanc ID
    meta = _wait_state(router, instance, "forwarded")
    assert (meta["BodyPart"], meta["BodyPartForwarded"]) == ("spine", "ai-general")
    time.sleep(2.0)  # several forwarder cycles: a second forward would have left by now
    assert general.count(ds.SOPInstanceUID) == 1  # the destination already held it


def test_an_instance_deleted_and_resent_at_once_is_classified_again(setup: RouterSetup) -> None:
    """The DELETED notification may reach the router after the new store: it must not forget the new one."""
    router = setup.router
    data = dicoms.to_bytes(dicoms.xray(gray_for("others")))
    instance = router.upload(data)
    _wait_state(router, instance, "classified")
    assert router.request("DELETE", f"/instances/{instance}").ok
    router.upload(data)
    meta = _wait_state(router, instance, "classified")
    assert meta["BodyPart"] == "others"
    router.wait_for(lambda: _router_state(router, instance) == "classified", what="router record classified")


def test_low_score_becomes_uncertain_and_goes_nowhere(setup: RouterSetup) -> None:
    router = setup.router
    instance = router.upload(dicoms.to_bytes(dicoms.xray(UNCERTAIN_GRAY)))
    meta = _wait_state(router, instance, "classified")
    assert meta["BodyPart"] == "uncertain"
    assert float(meta["BodyPartScore"]) < 0.6
    assert router.get_json(f"/bodypart-router/instances/{instance}")["Deliveries"] == []


def test_slow_destination_does_not_slow_ingest(setup: RouterSetup) -> None:
    router, slow = setup.router, setup.slow
    n = 6
    datasets = [dicoms.xray(gray_for("pediatric_chest")) for _ in range(n)]
    t0 = time.monotonic()
    ids = [router.upload(dicoms.to_bytes(ds)) for ds in datasets]
    ingest_seconds = time.monotonic() - t0
    # Forwarding needs n * SLOW_SECONDS; storing must not wait for any of it.
    assert ingest_seconds < SLOW_SECONDS, f"{n} uploads took {ingest_seconds:.2f} s"
    assert sum(slow.count(ds.SOPInstanceUID) for ds in datasets) < n
    for instance in ids:
        _wait_state(router, instance, "forwarded", timeout=n * SLOW_SECONDS + 30)
    assert all(slow.count(ds.SOPInstanceUID) == 1 for ds in datasets)


def test_down_destination_is_retried_dead_lettered_and_resubmittable(setup: RouterSetup) -> None:
    router = setup.router
    t0 = time.monotonic()
    instance = router.upload(dicoms.to_bytes(dicoms.xray(gray_for("abdominal"))))
    assert time.monotonic() - t0 < 1.0
    meta = _wait_state(router, instance, "failed:dead-letter", timeout=60)
    assert meta["BodyPart"] == "abdominal"
    failed = router.get_json("/bodypart-router/failed")["Failed"]
    mine = [f for f in failed if f["Instance"] == instance]
    assert len(mine) == 1 and mine[0]["Destination"] == "ai-down" and mine[0]["Attempts"] == 3
    # The circuit opened once (one warning), not once per failure.
    assert router.log_text().count("destination peer:ai-down is down") == 1

    answer = router.post_json("/bodypart-router/failed/resubmit", {"Instances": [instance]})
    assert [r["Instance"] for r in answer["Resubmitted"]] == [instance]
    record = router.get_json(f"/bodypart-router/instances/{instance}")
    assert record["Deliveries"][0]["State"] in ("pending", "submitted", "dead")
    _wait_state(router, instance, "failed:dead-letter", timeout=60)  # still down: dead again


def test_shadow_mode_classifies_and_labels_but_forwards_nothing(setup: RouterSetup) -> None:
    config = dict(setup.router.config)
    for key in ("HttpPort", "DicomPort", "StorageDirectory"):
        config.pop(key)
    config["BodyPartRouter"] = {**config["BodyPartRouter"], "ShadowMode": True}
    shadow = OrthancProcess(config, runtime=setup.router.runtime, name="shadow")
    try:
        shadow.start()
        datasets = [dicoms.xray(gray_for("spine")) for _ in range(2)] + [dicoms.xray(gray_for("adult_chest"))]
        ids = [shadow.upload(dicoms.to_bytes(ds)) for ds in datasets]
        for instance in ids:
            assert _wait_state(shadow, instance, "classified")["BodyPart"] in ("spine", "adult_chest")
        time.sleep(1.0)
        assert all(setup.general.count(ds.SOPInstanceUID) == 0 for ds in datasets)
        assert all(not setup.chest.find_instance(ds.SOPInstanceUID) for ds in datasets)
        status = shadow.get_json("/bodypart-router/status")
        assert status["ShadowMode"] is True
        assert status["WouldSend"] == {"modality:ai-general": {"spine": 2}, "peer:ai-chest": {"adult_chest": 1}}
    finally:
        shadow.cleanup()


def _raw_http(router: OrthancProcess, request: bytes) -> bytes:
    """Send bytes as they are (HTTP/1.0, no headers at all) and return the whole answer."""
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_lifecycle_route_is_not_reachable_over_http(setup: RouterSetup) -> None:
    router = setup.router
    assert router.request("POST", "/bodypart-router/lifecycle/prepare-stop").status_code == 403
    for body in (b"", b'{"Token": ""}', b'{"Token": "guess"}', b"[" * 600):
        answer = _raw_http(router, b"POST /bodypart-router/lifecycle/prepare-stop HTTP/1.0\r\n\r\n" + body)
        assert answer.startswith(b"HTTP/1.1 403") or answer.startswith(b"HTTP/1.0 403"), answer[:80]
    assert router.get_json("/bodypart-router/status")["Enabled"] is True
    assert "stopping the router's threads" not in router.log_text()


HOSTILE_POSTS = ["/bodypart-router/failed/resubmit", "/bodypart-router/resubmit", "/bodypart-router/backfill"]


def test_hostile_bodies_are_refused_before_parsing_and_orthanc_survives(setup: RouterSetup) -> None:
    router = setup.router
    for path in HOSTILE_POSTS:
        for body, headers, status in [
            (b"[" * 600, {"Content-Type": "application/json"}, 400),       # nested JSON: SIGSEGV before
            (b"[" * 600 + b"=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),  # a form
            (b'{"IncludeDelivered": true}', {"Content-Type": "text/plain"}, 415),  # a cross-site form
            (b'{"Instances": []}', {"Content-Type": "application/json", "Origin": "https://evil.example"}, 403),
            (b'{"Instances": []}', {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403),
            (b" " * (2 << 20), {"Content-Type": "application/json"}, 413),
            (b"null", {"Content-Type": "application/json"}, 400),
        ]:
            answer = router.request("POST", path, data=body, headers=headers)
            assert answer.status_code == status, (path, body[:20], headers, answer.status_code, answer.text[:200])
        assert router.running() and router.get_json("/system")["Version"]
    for body in ({"Deliveries": [True]}, {"IncludeDelivered": "false"}, {"Instances": ["not-an-id"]}):
        assert router.request("POST", "/bodypart-router/failed/resubmit", json=body).status_code == 400
    assert router.request("POST", "/bodypart-router/backfill", json={"Route": "true"}).status_code == 400
    assert router.get_json("/bodypart-router/backfill") is None  # no backfill was started by any of them


def test_explorer_extension_is_served(setup: RouterSetup) -> None:
    script = setup.router.request("GET", "/plugins/explorer.js").text
    assert "bodypart-router" in script and "BodyPartState" in script


def test_logs_hold_no_patient_identifiers(setup: RouterSetup) -> None:
    log = setup.router.log_text()
    assert "BodyPartRouter: instance" in log  # the router did log about instances...
    for secret in ("Secretname", dicoms.PATIENT_ID, dicoms.BIRTH_DATE):  # ...never about patients
        assert secret not in log


def test_invalid_config_disables_the_router_with_a_clear_error(setup: RouterSetup) -> None:
    config = dict(setup.router.config)
    config.pop("HttpPort"), config.pop("DicomPort"), config.pop("StorageDirectory")
    config["BodyPartRouter"] = {**config["BodyPartRouter"], "Routes": {"spine": ["ai-genral"]}, "MinimumScor": 1}
    broken = OrthancProcess(config, runtime=setup.router.runtime, name="broken")
    try:
        broken.start()
        status = broken.get_json("/bodypart-router/status")
        assert status["Enabled"] is False
        expected = 'BodyPartRouter.Routes.spine[0]: "ai-genral" is not a DicomModalities or OrthancPeers name'
        assert expected in status["Error"]
        assert 'did you mean "ai-general"' in status["Error"]
        # one entry per problem, for the status page's list (and the DISABLED badge)
        assert len(status["Errors"]) == 2 and any(e.startswith("BodyPartRouter.Routes.spine[0]") for e in status["Errors"])
        assert any(e.startswith("BodyPartRouter.MinimumScor") for e in status["Errors"])
        assert status["Metrics"]["Recent"] == {"Total": 0, "Offset": 0, "Items": []}  # the page's shapes, empty
        assert status["Metrics"]["DeadLetters"]["Items"] == []
        assert 'BodyPartRouter.MinimumScor: unknown key; did you mean "MinimumScore"?' in broken.log_text()
        broken.wait_for(lambda: "bodypart_router_enabled 0 " in broken.request("GET", "/tools/metrics-prometheus").text,
                        timeout=30, what="the metric saying the router is disabled")
        assert status["Health"].startswith("disabled:") and "ai-genral" in status["Health"]
        broken.wait_for(lambda: "bodypart_router_health 3 " in broken.request("GET", "/tools/metrics-prometheus").text,
                        timeout=30, what="the health metric saying the router is disabled")
        instance = broken.upload(dicoms.to_bytes(dicoms.xray(gray_for("spine"))))  # Orthanc still stores
        assert broken.metadata(instance).get("BodyPartState") is None
        answer = broken.request("GET", f"/bodypart-router/instances/{instance}")
        assert answer.status_code == 503 and "disabled" in answer.text  # not a 500 with an ERROR logged
        assert "internal error" not in broken.log_text()
    finally:
        broken.cleanup()


def test_kill_9_loses_nothing(setup: RouterSetup) -> None:
    """Crash Orthanc right after a burst of stores: every instance is classified and forwarded after restart,
    including those whose OnStoredInstance hand-off was still in memory (recovered from /changes)."""
    router, general = setup.router, setup.general
    datasets = [dicoms.xray(gray_for("spine")) for _ in range(30)]
    c_store(datasets, router.dicom_port, called_aet=router.aet)
    router.kill()
    router.start()
    ids = [router.find_instance(ds.SOPInstanceUID) for ds in datasets]
    assert all(ids), "Orthanc lost stored instances"
    for instance in ids:
        _wait_state(router, instance, "forwarded", timeout=60)
    counts = [general.count(ds.SOPInstanceUID) for ds in datasets]
    assert min(counts) >= 1, counts
    # A forward whose job finished in the instant before the kill may be sent again (at least once);
    # anything more would be a bug.
    assert sum(c - 1 for c in counts) <= 2, counts


def test_instances_stored_just_before_a_crash_are_recovered_from_the_changes_log(setup: RouterSetup) -> None:
    """Recreate the crash window between Orthanc storing an instance and the router recording it:
    kill -9, then remove the last instances from the router's state and rewind its changes-log
    checkpoint, as if their OnStoredInstance hand-off had died in memory. The restart must find
    them in Orthanc's /changes and route them."""
    router, general = setup.router, setup.general
    before = router.get_json("/changes?last")["Last"]
    datasets = [dicoms.xray(gray_for("spine")) for _ in range(10)]
    c_store(datasets, router.dicom_port, called_aet=router.aet)
    ids = [router.find_instance(ds.SOPInstanceUID) for ds in datasets]
    router.wait_for(lambda: all(router.metadata(i).get("BodyPartState") for i in ids), what="recorded")
    router.kill()
    state = Path(router.config["StorageDirectory"]) / "bodypart-router" / "state.sqlite"
    with sqlite3.connect(state) as db:
        lost = ids[5:]
        db.executemany("DELETE FROM instances WHERE instance_id = ?", [(i,) for i in lost])
        db.executemany("DELETE FROM deliveries WHERE instance_id = ? AND state != 'delivered'", [(i,) for i in lost])
        db.execute("UPDATE settings SET value = ? WHERE key = 'changes_checkpoint'", (str(before),))
    router.start()
    for instance in ids:
        _wait_state(router, instance, "forwarded", timeout=60)
    assert "recovered" in router.log_text() and "from Orthanc's changes log" in router.log_text()
    counts = [general.count(ds.SOPInstanceUID) for ds in datasets]
    assert min(counts) >= 1, counts


def test_clean_shutdown_with_work_in_flight_then_resume(setup: RouterSetup) -> None:
    """Stop Orthanc while forwards to the slow SCP are pending: < 10 s, and the rest resumes at restart."""
    router, slow = setup.router, setup.slow
    datasets = [dicoms.xray(gray_for("pediatric_chest")) for _ in range(4)]
    ids = [router.upload(dicoms.to_bytes(ds)) for ds in datasets]
    router.wait_for(lambda: slow.count(datasets[0].SOPInstanceUID) or None, timeout=30, what="first slow forward")
    seconds = router.stop()
    assert seconds < 10, f"shutdown took {seconds:.1f} s"
    assert "BodyPartRouter: stopped in" in router.log_text()
    assert "Orthanc is stopping (shutdown.lua)" in router.log_text()  # shutdown.lua's token was accepted

    router.start()
    for instance in ids:
        _wait_state(router, instance, "forwarded", timeout=60)
    counts = [slow.count(ds.SOPInstanceUID) for ds in datasets]
    assert all(c >= 1 for c in counts), counts  # nothing lost
    assert all(c == 1 for c in counts), f"forwarded more than once: {counts}"


@pytest.mark.parametrize("damage", ["deleted", "emptied", "corrupt"])
def test_a_lost_state_database_is_rebuilt_and_nothing_is_lost_or_sent_twice(setup: RouterSetup, damage: str) -> None:
    """Work pending at a stop, then the state database deleted (as an operator fixing corruption
    would), truncated to 0 bytes, or damaged in its middle pages: after the restart every instance
    arrives, once, and what was forwarded before is not sent again."""
    router, general = setup.router, setup.general
    datasets = [dicoms.xray(gray_for("spine")) for _ in range(8)]
    assert c_store(datasets[:4], router.dicom_port, called_aet=router.aet) == [0] * 4
    done = [router.find_instance(ds.SOPInstanceUID) for ds in datasets[:4]]
    for instance in done:
        _wait_state(router, instance, "forwarded", timeout=60)
    assert c_store(datasets[4:], router.dicom_port, called_aet=router.aet) == [0] * 4
    router.stop()  # the last four are still owed (a stop waits for the forwards in flight)
    state = Path(router.config["StorageDirectory"]) / "bodypart-router" / "state.sqlite"
    if damage == "corrupt":
        with open(state, "r+b") as fh:
            fh.seek(4096)  # keep the header page, garble the rest
            fh.write(b"\xde\xad\xbe\xef" * (max(state.stat().st_size, 8192) // 4))
    else:
        state.unlink() if damage == "deleted" else state.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        state.with_name(state.name + suffix).unlink(missing_ok=True)
    router.start()
    ids = [router.wait_for(lambda ds=ds: router.find_instance(ds.SOPInstanceUID), what="stored") for ds in datasets]
    for instance in ids:
        _wait_state(router, instance, "forwarded", timeout=90)
    assert [general.count(ds.SOPInstanceUID) for ds in datasets] == [1] * 8  # none lost, none sent twice
    log = router.log_text()
    assert "rebuilding its work list from the beginning of Orthanc's changes log" in log
    if damage == "corrupt":
        assert "was set aside as state.sqlite.corrupt-" in log
        assert list(state.parent.glob("state.sqlite.corrupt-*"))
    router.wait_for(lambda: "rebuilding" not in router.get_json("/bodypart-router/status")["Health"],
                    timeout=60, what="the rebuild to finish")
