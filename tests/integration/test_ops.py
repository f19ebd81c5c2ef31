"""Running the router like a product, inside real Orthanc processes (Debian 12's Orthanc 1.10).

* metrics on Orthanc's own /tools/metrics-prometheus, the status JSON and the status page;
* the header audit stored in metadata and counted per sending station;
* the plugin's routes behind Orthanc's HTTP authentication;
* shadow mode: nothing forwarded, would-be forwards counted per destination and class;
* backfill of instances stored before the router, interrupted by a restart, resumed;
* a model file that differs from its card is refused unless the configuration names its hash.

The tiny test model picks the class from the gray level (see support.tiny_model).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from bodypart_router.config import SEPARATE_METADATA
from support import dicoms
from support.dicom_net import CountingSCP, c_store
from support.orthanc import OrthancProcess, Runtime, get_runtime, peer_config, router_config
from support.tiny_model import gray_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "ops", "s3cret-Pa55"
AUTH = (USER, PASSWORD)
#: Metrics are pushed to Orthanc every few seconds (bodypart_router.orthanc_plugin.monitoring).
METRICS_TIMEOUT = 20


@pytest.fixture(scope="module")
def host() -> Runtime:
    runtime = get_runtime("host")
    reason = runtime.unavailable()
    if reason:
        pytest.skip(f"host Orthanc unavailable: {reason}")
    return runtime


def _config(runtime: Runtime, model: tuple[Path, str], *, peers: dict[str, Any], routes: dict[str, list[str]],
            router: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    path, sha256 = model
    return router_config(runtime, model=path, routes=routes, peers=peers,
                         router={"ModelSha256": sha256, **(router or {})}, extra=extra)


def _xray(class_name: str, **tags: str) -> bytes:
    ds = dicoms.xray(gray_for(class_name))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return dicoms.to_bytes(ds)


def _prometheus(orthanc: OrthancProcess) -> dict[str, float]:
    text = orthanc.request("GET", "/tools/metrics-prometheus").text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(bodypart_router_\w+(?:\{[^}]*\})?) (\S+)", text, re.M)}


def _prometheus_when(orthanc: OrthancProcess, name: str, value: float, what: str) -> dict[str, float]:
    """The router's Prometheus metrics as soon as ``name`` reads ``value`` (they are published periodically)."""

    def reached() -> dict[str, float] | None:
        metrics = _prometheus(orthanc)
        return metrics if metrics.get(name) == value else None

    return orthanc.wait_for(reached, timeout=METRICS_TIMEOUT, what=what)


def _state(orthanc: OrthancProcess, instance_id: str) -> str:
    """The instance's state: its metadata, or the router's record for a skipped one (which has none)."""
    return (orthanc.metadata(instance_id).get("BodyPartState")
            or orthanc.get_json(f"/bodypart-router/instances/{instance_id}").get("State") or "")


def _settled(orthanc: OrthancProcess, ids: list[str], states: tuple[str, ...]) -> bool:
    return all(_state(orthanc, i).startswith(states) for i in ids)


# ---- a live router behind HTTP authentication ---------------------------------------------


@pytest.fixture(scope="module")
def live(host: Runtime, test_model: tuple[Path, str]) -> Iterator[tuple[OrthancProcess, OrthancProcess]]:
    chest = OrthancProcess(peer_config("ai-chest"), name="ops-ai-chest")
    router: OrthancProcess | None = None
    try:
        chest.start()
        config = _config(host, test_model, peers={"ai-chest": chest, "ai-down": "http://127.0.0.1:9/"},
                         routes={"adult_chest": ["ai-chest"], "abdominal": ["ai-down"]},
                         router={"Retry": {"MaxAttempts": 2, "BackoffSeconds": 0.2, "MaxBackoffSeconds": 0.5}},
                         extra={"AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}})
        router = OrthancProcess(config, runtime=host, name="ops-router")
        router.session.auth = AUTH
        router.start()
        yield router, chest
    finally:
        if router is not None:
            router.cleanup()
        chest.cleanup()


@pytest.fixture(scope="module")
def live_traffic(live: tuple[OrthancProcess, OrthancProcess]) -> dict[str, str]:
    """Five X-rays and a CT, by REST and by C-STORE; waits until the router is done with them."""
    router, _ = live
    ids = {
        "agree": router.upload(_xray("adult_chest", BodyPartExamined="CHEST", PatientAge="054Y")),
        "agree-text": router.upload(_xray("adult_chest", SpecificCharacterSet="ISO_IR 100",
                                          StudyDescription="Rx Tórax PA", PatientBirthDate="")),
        "disagree": router.upload(_xray("adult_chest", BodyPartExamined="LSPINE")),
        "no-header": router.upload(_xray("spine")),
        "ct": router.upload(dicoms.to_bytes(dicoms.ct())),
    }
    station = dicoms.xray(gray_for("pediatric_chest"))
    station.BodyPartExamined, station.PatientAge = "CHEST", "045Y"  # an adult's chest, says the header
    assert c_store([station], router.dicom_port, called_aet=router.aet) == [0]
    ids["station"] = router.wait_for(lambda: router.find_instance(station.SOPInstanceUID), what="C-STORE stored")
    router.wait_for(lambda: _settled(router, list(ids.values()), ("forwarded", "classified", "skipped:")),
                    timeout=60, what="every instance settled")
    # "classified" is final for the unrouted ones; the three adult chests go on to ai-chest.
    chests = [ids["agree"], ids["agree-text"], ids["disagree"]]
    router.wait_for(lambda: _settled(router, chests, ("forwarded",)), timeout=60, what="adult chests forwarded")
    router.wait_for(lambda: all(SEPARATE_METADATA["HeaderAudit"] in router.metadata(i) for k, i in ids.items() if k != "ct"),
                    what="header audit metadata")
    return ids


def test_header_audit_is_stored_in_metadata(live: tuple[OrthancProcess, OrthancProcess], live_traffic: dict[str, str]) -> None:
    router, _ = live
    audit = {k: router.metadata(i).get(SEPARATE_METADATA["HeaderAudit"]) for k, i in live_traffic.items()}
    assert audit == {
        "agree": "agree:adult_chest",
        "agree-text": "agree:adult_chest/pediatric_chest",  # no age: either chest class agrees
        "disagree": "disagree:spine",
        "no-header": "no-header",
        "ct": None,  # not an X-ray: not classified, not audited
        "station": "disagree:adult_chest",
    }


def test_metrics_appear_on_orthanc_prometheus_endpoint(live: tuple[OrthancProcess, OrthancProcess], live_traffic: dict[str, str]) -> None:
    router, chest = live
    m = _prometheus_when(router, 'bodypart_router_forwards_total{destination="ai-chest"}', 3, "forwards metric")
    assert m['bodypart_router_classified_total{class="adult_chest"}'] == 3
    assert m['bodypart_router_classified_total{class="pediatric_chest"}'] == 1
    assert m['bodypart_router_classified_total{class="spine"}'] == 1
    assert m['bodypart_router_classified_total{class="abdominal"}'] == 0
    assert m['bodypart_router_skipped_total{reason="non-projection-modality"}'] == 1
    assert m["bodypart_router_queue_depth"] == 0
    assert m["bodypart_router_inference_seconds_count"] == 5
    assert m["bodypart_router_decode_seconds_count"] == 5
    assert m['bodypart_router_forward_failures_total{destination="ai-chest"}'] == 0
    assert m['bodypart_router_dead_letters{destination="ai-chest"}'] == 0
    assert m['bodypart_router_circuit_state{destination="ai-chest"}'] == 0
    assert m['bodypart_router_execution_provider{provider="CPUExecutionProvider"}'] == 1
    assert m["bodypart_router_shadow_mode"] == 0
    assert m['bodypart_router_header_verdicts_total{station="TEST_SCU",verdict="disagree"}'] == 1  # the C-STORE sender's AET
    assert m['bodypart_router_header_mismatch_ratio{station="TEST_SCU"}'] == 1
    assert m['bodypart_router_header_verdicts_total{station="(none)",verdict="agree"}'] == 2  # REST uploads have no RemoteAET
    assert len(chest.instances()) == 3


def test_status_json_and_page(live: tuple[OrthancProcess, OrthancProcess], live_traffic: dict[str, str]) -> None:
    router, _ = live
    status = router.get_json("/bodypart-router/status")
    metrics = status["Metrics"]
    assert status["Enabled"] is True and metrics["Mode"] == "live"
    assert metrics["Model"]["Version"].startswith("tiny-test-model@")
    assert metrics["Counts"]["Classified"]["adult_chest"] == 3
    assert metrics["Counts"]["Skipped"] == {"non-projection-modality": 1}
    assert metrics["HeaderAudit"]["TEST_SCU"] == {"agree": 0, "disagree": 1, "no-header": 0, "mismatch_rate": 1.0}
    assert metrics["HeaderAudit"]["(none)"]["disagree"] == 1
    recent = {r["Instance"]: r for r in metrics["Recent"]["Items"]}
    assert recent[live_traffic["disagree"]]["HeaderAudit"] == "disagree:spine"
    assert recent[live_traffic["agree"]]["Destinations"] == ["ai-chest"]
    assert metrics["Destinations"]["ai-chest"]["Forwards"] == 3

    page = router.request("GET", "/bodypart-router/status.html")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<script src="status.js"></script>' in page.text
    assert "render(" in router.request("GET", "/bodypart-router/status.js").text
    explorer = router.request("GET", "/plugins/explorer.js").text
    assert "../bodypart-router/status.html" in explorer  # the link on Explorer's home pages
    assert "BodyPartState" in explorer  # next to the router's own panel, not instead of it


def test_one_studys_result_for_orthanc_explorer_2s_buttons(live: tuple[OrthancProcess, OrthancProcess],
                                                          live_traffic: dict[str, str]) -> None:
    router, _ = live
    instance = live_traffic["agree"]
    study = router.get_json(f"/instances/{instance}/study")["ID"]
    summary = router.get_json(f"/bodypart-router/studies/{study}/summary")
    assert summary["Classes"] == {"adult_chest": 1} and summary["Instances"] == 1
    (item,) = summary["Items"]
    assert (item["ID"], item["ArrivedAt"], item["Waiting"]) == (instance, ["ai-chest"], [])
    assert router.get_json(f"/bodypart-router/instances/{instance}/summary")["Items"][0]["Class"] == "adult_chest"
    assert router.request("GET", "/bodypart-router/studies/0000-bad/summary").status_code == 404
    page = router.request("GET", "/bodypart-router/resource.html")
    assert page.status_code == 200 and '<script src="resource.js"></script>' in page.text
    assert "summary" in router.request("GET", "/bodypart-router/resource.js").text


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/bodypart-router/status"), ("GET", "/bodypart-router/status.html"), ("GET", "/bodypart-router/backfill"),
     ("POST", "/bodypart-router/backfill"), ("POST", "/bodypart-router/resubmit")],
)
def test_plugin_routes_follow_orthanc_authentication(live: tuple[OrthancProcess, OrthancProcess], method: str, path: str) -> None:
    router, _ = live
    anonymous = requests.request(method, router.url + path, data=b"{}", timeout=10)
    assert anonymous.status_code == 401
    wrong = requests.request(method, router.url + path, data=b"{}", auth=(USER, "wrong"), timeout=10)
    assert wrong.status_code == 401
    if method == "GET":
        assert requests.get(router.url + path, auth=AUTH, timeout=10).status_code == 200


def test_failures_are_listed_and_can_be_resubmitted(live: tuple[OrthancProcess, OrthancProcess],
                                                    live_traffic: dict[str, str]) -> None:
    router, _ = live
    dead = router.upload(_xray("abdominal"))  # routed to a peer where nothing listens
    truncated = dicoms.xray(gray_for("spine"))
    truncated.PixelData = truncated.PixelData[:100]
    broken = router.upload(dicoms.to_bytes(truncated))
    router.wait_for(lambda: _settled(router, [dead, broken], ("failed:",)), timeout=60, what="both failed")
    assert router.metadata(dead)["BodyPartState"] == "failed:dead-letter"

    status = router.get_json("/bodypart-router/status")["Metrics"]
    failures = {f["Instance"]: f for f in status["Failures"]}
    dead_letters = {f["Instance"]: f for f in status["DeadLetters"]["Items"]}
    assert (dead_letters[dead]["State"], dead_letters[dead]["Destination"]) == ("failed:dead-letter", "ai-down")
    assert dead_letters[dead]["Time"].endswith("Z") and status["DeadLetters"]["Total"] == 1
    assert status["Destinations"]["ai-down"]["DeadLetters"] == 1
    page = router.get_json("/bodypart-router/dead-letters?offset=0&limit=5")
    assert [f["Instance"] for f in page["Items"]] == [dead] and page["Total"] == 1
    assert router.get_json("/bodypart-router/dead-letters?offset=1&limit=5")["Items"] == []
    assert failures[broken]["State"] == router.metadata(broken)["BodyPartState"]
    assert "(7FE0,0010)" in failures[broken]["Detail"] or "Pixel" in failures[broken]["Detail"]

    assert router.request("POST", "/bodypart-router/resubmit", json={}).status_code == 400
    answer = router.post_json("/bodypart-router/resubmit", {"Instances": [dead, broken]})
    assert answer == {"Forwards": 1, "Classifications": 1}
    # Both are tried again; neither can succeed, so both fail again.
    def metrics() -> dict[str, Any]:
        return router.get_json("/bodypart-router/status")["Metrics"]

    router.wait_for(lambda: metrics()["Destinations"]["ai-down"]["DeadLettered"] == 2, timeout=60,
                    what="second dead letter")
    router.wait_for(lambda: sum(metrics()["CountsSinceStart"]["Failed"].values()) == 2, timeout=30,
                    what="the broken instance classified (and failed) a second time")


# ---- a bad day: a destination down, then back ------------------------------------------


def _log_lines(router: OrthancProcess, text: str) -> list[str]:
    return [line for line in router.log_text().splitlines() if text in line]


def test_a_destination_down_then_back_is_plain_on_the_status_and_in_the_log(host: Runtime,
                                                                             test_model: tuple[Path, str]) -> None:
    spine = CountingSCP("AI_SPINE", answer_find=True)  # not started yet: the destination is down
    config = _config(host, test_model, peers={}, routes={"spine": ["ai-spine"]},
                     router={"Retry": {"MaxAttempts": 2, "BackoffSeconds": 0.2, "MaxBackoffSeconds": 1},
                             "CircuitBreaker": {"FailureThreshold": 1}},
                     extra={"DicomModalities": {"ai-spine": list(spine.modality)}})
    router = OrthancProcess(config, runtime=host, name="bad-day-router")  # Orthanc's default log level
    try:
        router.start()
        ids = [router.upload(_xray("spine")) for _ in range(3)]

        def metrics() -> dict[str, Any]:
            return router.get_json("/bodypart-router/status")["Metrics"]

        router.wait_for(lambda: metrics()["DeadLetters"]["Total"] == 3, timeout=90, what="three dead letters")
        m = metrics()
        down = m["Destinations"]["ai-spine"]
        assert down["Circuit"] == "open" and down["DownSince"].endswith("Z") and down["DeadLetters"] == 3
        assert "connect" in (down["LastError"] or "").lower() or down["LastError"]
        assert {r["Instance"] for r in m["Recent"]["Items"]} == set(ids)
        for r in m["Recent"]["Items"]:  # nothing arrived: "arrived at" stays empty
            assert r["Destinations"] == [] and r["DeadLetters"] == ["ai-spine"]
        assert all(i["Time"].endswith("Z") for i in m["DeadLetters"]["Items"])
        # one warning when it goes down; no ERROR line per dead letter (one summary per minute)
        assert len(_log_lines(router, "destination modality:ai-spine is down")) == 1
        assert _log_lines(router, "destination modality:ai-spine is down")[0].startswith("W")
        assert not [line for line in _log_lines(router, "dead-lettered") if line.startswith("E")
                    and "forward(s) dead-lettered" not in line]

        spine.start()  # the destination comes back; nobody resubmits anything
        router.wait_for(lambda: metrics()["Destinations"]["ai-spine"]["Circuit"] == "closed", timeout=60,
                        what="the circuit closed after the destination came back")
        back = _log_lines(router, "destination modality:ai-spine is reachable again")
        assert len(back) == 1 and back[0].startswith("W")
        assert metrics()["DeadLetters"]["Total"] == 3 and not spine.received  # dead letters wait for a person

        router.stop()
        router.start()  # counts and decisions come from the state database
        m = metrics()
        assert m["Counts"]["Classified"]["spine"] == 3
        assert m["Recent"]["Total"] == 3 and m["DeadLetters"]["Total"] == 3
        answer = router.post_json("/bodypart-router/failed/resubmit", {})  # the page's "Resubmit all"
        assert len(answer["Resubmitted"]) == 3
        router.wait_for(lambda: sum(spine.received.values()) == 3, timeout=60, what="the resubmitted forwards")
        router.wait_for(lambda: all(r["Destinations"] == ["ai-spine"] for r in metrics()["Recent"]["Items"]),
                        timeout=30, what="arrived at ai-spine")
    finally:
        router.cleanup()
        spine.stop()


# ---- shadow mode ------------------------------------------------------------------------


def test_shadow_mode_forwards_nothing_and_counts_would_be_forwards(host: Runtime, test_model: tuple[Path, str]) -> None:
    chest = OrthancProcess(peer_config("ai-chest"), name="shadow-ai-chest")
    router: OrthancProcess | None = None
    try:
        chest.start()
        config = _config(host, test_model, peers={"ai-chest": chest, "ai-spine": chest},
                         routes={"adult_chest": ["ai-chest"], "spine": ["ai-spine", "ai-chest"]},
                         router={"ShadowMode": True})
        router = OrthancProcess(config, runtime=host, name="shadow-router").start()
        ids = [router.upload(_xray(c)) for c in ("adult_chest", "adult_chest", "adult_chest", "spine", "others")]
        router.wait_for(lambda: _settled(router, ids, ("classified",)), timeout=60, what="all classified")
        status = router.get_json("/bodypart-router/status")
        expected = {"peer:ai-chest": {"adult_chest": 3, "spine": 1}, "peer:ai-spine": {"spine": 1}}
        assert status["WouldSend"] == expected
        assert status["Metrics"]["Mode"] == "shadow"
        assert status["Metrics"]["Shadow"] == {"ai-chest": {"adult_chest": 3, "spine": 1}, "ai-spine": {"spine": 1}}
        m = _prometheus_when(router, 'bodypart_router_would_forward_total{destination="ai-chest",class="adult_chest"}', 3, "would-forward metric")
        assert m["bodypart_router_shadow_mode"] == 1
        assert m['bodypart_router_would_forward_total{destination="ai-spine",class="spine"}'] == 1
        assert m['bodypart_router_forwards_total{destination="ai-chest"}'] == 0
        time.sleep(2)  # a forward, had one been started, would have arrived by now
        assert chest.instances() == []
        assert all(router.metadata(i).get("BodyPartForwarded") is None for i in ids)
    finally:
        if router is not None:
            router.cleanup()
        chest.cleanup()


# ---- backfill ---------------------------------------------------------------------------


def _backfill(router: OrthancProcess) -> dict[str, Any] | None:
    return router.get_json("/bodypart-router/backfill")


def test_backfill_classifies_stored_instances_and_resumes_after_restart(host: Runtime, test_model: tuple[Path, str]) -> None:
    chest = OrthancProcess(peer_config("ai-chest"), name="backfill-ai-chest")
    router: OrthancProcess | None = None
    try:
        chest.start()
        config = _config(host, test_model, peers={"ai-chest": chest},
                         routes={"adult_chest": ["ai-chest"], "spine": ["ai-chest"]}, router={"Enabled": False})
        router = OrthancProcess(config, runtime=host, name="backfill-router", args=["--verbose"]).start()
        # An archive from before the router: 2023 and 2024 studies, and one CT.
        old = [router.upload(_xray("spine", StudyDate="20230105")) for _ in range(4)]
        new = [router.upload(_xray(c, StudyDate="20240310")) for c in ["adult_chest"] * 6 + ["others"] * 6]
        ct = router.upload(dicoms.to_bytes(dicoms.ct()))
        archive = old + new + [ct]
        router.stop()

        router.config["BodyPartRouter"] = {**router.config["BodyPartRouter"], "Enabled": True}
        router.start()
        time.sleep(1.5)  # the router leaves existing instances alone until asked
        assert all("BodyPartState" not in router.metadata(i) for i in archive)
        assert router.request("POST", "/bodypart-router/backfill", json={"Since": "2024-13-01"}).status_code == 400

        # 1. "Since" plans only the 2024 studies, labels without forwarding (Route defaults to false).
        started = router.post_json("/bodypart-router/backfill", {"Since": "2024-01-01", "RatePerSecond": 50})
        assert started["State"] in ("planning", "running")
        router.wait_for(lambda: (_backfill(router) or {}).get("State") == "done", timeout=60, what="Since backfill done")
        p = _backfill(router)
        assert (p["Done"], p["Total"], p["Outcomes"]) == (13, 13, {"classified": 12, "skipped": 1})  # the CT too
        assert all(router.metadata(i).get("BodyPart") for i in new)
        assert all("BodyPart" not in router.metadata(i) for i in old)
        assert chest.instances() == []  # Route false: labelled, not forwarded

        # 2. Everything, routed, slowly; Orthanc restarts half-way.
        router.post_json("/bodypart-router/backfill", {"Route": True, "RatePerSecond": 2})
        router.wait_for(lambda: (_backfill(router) or {}).get("Done", 0) >= 3, timeout=30, what="backfill under way")
        assert router.request("POST", "/bodypart-router/backfill", json={}).status_code == 409  # one at a time
        progress = _backfill(router)
        assert progress["Total"] == len(archive) and progress["Planned"] is True
        assert progress["Rate"] is None or progress["Rate"] > 0
        done_before = progress["Done"]  # at least this many were finished before the stop
        router.stop()
        router.start()
        router.wait_for(lambda: (_backfill(router) or {}).get("State") == "done", timeout=60, what="resumed backfill done")
        p = _backfill(router)
        assert p["Done"] == p["Total"] == len(archive)
        assert p["Outcomes"] == {"classified": 4, "known": 13}
        assert p["StartedAt"] == progress["StartedAt"]  # the same run, resumed, not a new one
        assert all(router.metadata(i).get("BodyPart") == "spine" for i in old)
        router.wait_for(lambda: len(chest.instances()) == len(old), timeout=30, what="old spines routed")
        assert _state(router, ct) == "skipped:non-projection-modality"
        assert "BodyPartState" not in router.metadata(ct)  # MarkSkipped is false
        status = router.get_json("/bodypart-router/status")
        # after the restart only the instances that were left were classified
        assert sum(status["Metrics"]["CountsSinceStart"]["Classified"].values()) <= len(old) - done_before + 1
        assert status["Backfill"]["State"] == "done"
        log = router.log_text()
        assert "backfill started: studies dated 2024-01-01 or later" in log and "backfill resumed at" in log
        for secret in ("Secretname", dicoms.PATIENT_ID, dicoms.BIRTH_DATE):  # instances are named by ID only
            assert secret not in log
    finally:
        if router is not None:
            router.cleanup()
        chest.cleanup()


# ---- model integrity --------------------------------------------------------------------


def test_a_modified_model_is_refused_unless_its_hash_is_configured(host: Runtime, test_model: tuple[Path, str], tmp_path: Path) -> None:
    import onnx

    source, published = test_model
    model = tmp_path / "bodypart_router.onnx"
    shutil.copy(source, model)
    (tmp_path / "MODEL_CARD.md").write_text(f"# Tiny test model\n\nSHA-256: {published}\n")
    tampered = onnx.load(str(model))
    tampered.doc_string = "changed after publication"
    onnx.save(tampered, str(model))
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    assert actual != published

    for allowed, enabled in ((None, False), (actual, True)):
        config = _config(host, (model, actual), peers={}, routes={}, router={"ModelSha256": allowed})
        router = OrthancProcess(config, runtime=host, name="tamper-router")
        try:
            router.start()
            status = router.get_json("/bodypart-router/status")
            assert status["Enabled"] is enabled, status.get("Error")
            if not enabled:
                assert f"has sha256 {actual} but its card" in status["Error"]
                assert "the file was changed or replaced" in router.log_text()
                instance = router.upload(_xray("spine"))
                time.sleep(1)
                assert "BodyPartState" not in router.metadata(instance)  # nothing classified by it
                assert router.request("POST", "/bodypart-router/backfill", json={}).status_code == 503
        finally:
            router.cleanup()
