"""Routing rules, header fusion, explain and reroute inside a real Orthanc.

Rules (in order):
1. "St Mary to the archive": InstitutionName matches a regex -> "archive" (Continue);
2. "adult chests, adults only": class adult_chest and PatientAge >= 18 -> "ai-chest";
3. "spines from the CR rooms": class spine sent by an AET matching CR_* -> "ai-chest";
4. "frontal children's chests": class pediatric_chest, frontal only -> "ai-chest"; a lateral film
   (here from View Position: the test model has no view output) is held for "archive" (QualityRoutes).
The receivers are DICOM SCPs that count what they get.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import dicoms
from support.dicom_net import CountingSCP, c_store
from support.orthanc import OrthancProcess, Runtime, router_config, wait_router_started
from support.tiny_model import gray_for

pytestmark = pytest.mark.integration

RULES = [
    {"Name": "St Mary to the archive", "Tags": {"InstitutionName": {"Regex": "(?i)^st\\.? mary"}},
     "Destinations": ["archive"], "Continue": True},
    {"Name": "adult chests, adults only", "Class": "adult_chest", "Tags": {"PatientAge": {"Min": 18}},
     "Destinations": ["ai-chest"]},
    {"Name": "spines from the CR rooms", "Class": "spine", "CallingAet": "CR_*", "Destinations": ["ai-chest"]},
    {"Name": "frontal children's chests", "Class": "pediatric_chest", "Require": {"View": "frontal"},
     "Destinations": ["ai-chest"]},
]


@dataclass
class RulesSetup:
    router: OrthancProcess
    chest: CountingSCP
    archive: CountingSCP


@pytest.fixture(scope="module")
def rules_setup(runtime: Runtime, test_model: tuple) -> Iterator[RulesSetup]:
    model, sha256 = test_model
    chest = CountingSCP("AI_CHEST").start()
    archive = CountingSCP("ARCHIVE").start()
    router: OrthancProcess | None = None
    try:
        config = router_config(
            runtime, model=model, routes={},
            modalities={"ai-chest": chest.modality, "archive": archive.modality},
            router={"ModelSha256": sha256, "Routes": RULES, "HeaderEvidence": "prior", "QualityRoutes": ["archive"],
                    "Retry": {"MaxAttempts": 3, "BackoffSeconds": 0.2, "MaxBackoffSeconds": 0.5}},
        )
        router = OrthancProcess(config, runtime=runtime, name="router-rules", args=["--verbose"])
        router.start()
        wait_router_started(router, timeout=20)
        yield RulesSetup(router, chest, archive)
    finally:
        if router is not None:
            router.cleanup()
        chest.stop()
        archive.stop()


def _final(router: OrthancProcess, instance: str, states: tuple[str, ...] = ("forwarded",)) -> dict:
    router.wait_for(lambda: router.metadata(instance).get("BodyPartState") in states, timeout=30,
                    what=f"instance {instance} in {states} (now {router.metadata(instance).get('BodyPartState')})")
    return router.metadata(instance)


def _xray(class_name: str, lateral: bool = False, **tags: str):
    ds = dicoms.xray(gray_for(class_name), lateral_spot=lateral)
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def test_a_tag_rule_and_a_class_rule_both_take_effect(rules_setup: RulesSetup) -> None:
    s = rules_setup
    both = _xray("adult_chest", InstitutionName="St. Mary Hospital", PatientAge="045Y")
    chest_only = _xray("adult_chest", InstitutionName="General Hospital", PatientAge="045Y")
    child = _xray("adult_chest", PatientAge="004Y", PatientBirthDate="")
    archive_only = _xray("spine", InstitutionName="st mary")
    ids = {name: s.router.upload(dicoms.to_bytes(ds)) for name, ds in
           [("both", both), ("chest_only", chest_only), ("child", child), ("archive_only", archive_only)]}

    assert _final(s.router, ids["both"])["BodyPartForwarded"] == "ai-chest,archive"
    assert _final(s.router, ids["chest_only"])["BodyPartForwarded"] == "ai-chest"
    assert _final(s.router, ids["archive_only"])["BodyPartForwarded"] == "archive"
    child_meta = _final(s.router, ids["child"], ("classified",))
    assert child_meta["BodyPartState"] == "classified" and "BodyPartForwarded" not in child_meta
    assert (s.chest.count(both.SOPInstanceUID), s.archive.count(both.SOPInstanceUID)) == (1, 1)
    assert (s.chest.count(chest_only.SOPInstanceUID), s.archive.count(chest_only.SOPInstanceUID)) == (1, 0)
    assert (s.chest.count(archive_only.SOPInstanceUID), s.archive.count(archive_only.SOPInstanceUID)) == (0, 1)
    assert s.chest.count(child.SOPInstanceUID) == 0


def test_a_calling_aet_rule_takes_effect(rules_setup: RulesSetup) -> None:
    s = rules_setup
    from_cr, from_dx = _xray("spine"), _xray("spine")
    assert c_store([from_cr], s.router.dicom_port, called_aet=s.router.aet, calling_aet="CR_ROOM2") == [0]
    assert c_store([from_dx], s.router.dicom_port, called_aet=s.router.aet, calling_aet="DX_ROOM1") == [0]
    cr = s.router.wait_for(lambda: s.router.find_instance(from_cr.SOPInstanceUID), what="stored")
    dx = s.router.wait_for(lambda: s.router.find_instance(from_dx.SOPInstanceUID), what="stored")
    assert _final(s.router, cr)["BodyPartForwarded"] == "ai-chest"
    assert "BodyPartForwarded" not in _final(s.router, dx, ("classified",))
    assert (s.chest.count(from_cr.SOPInstanceUID), s.chest.count(from_dx.SOPInstanceUID)) == (1, 0)


def test_a_film_failing_a_quality_requirement_is_held_for_quality_routes(rules_setup: RulesSetup) -> None:
    s = rules_setup
    lateral = _xray("pediatric_chest", lateral=True, ViewPosition="LL")  # the tiny model sees the spot
    frontal = _xray("pediatric_chest", ViewPosition="PA")
    held = s.router.upload(dicoms.to_bytes(lateral))
    sent = s.router.upload(dicoms.to_bytes(frontal))
    meta = _final(s.router, held, ("held:lateral",))
    s.router.wait_for(lambda: s.router.metadata(held).get("BodyPartForwarded") == "archive", timeout=30,
                      what="the held film forwarded to QualityRoutes")
    assert s.router.metadata(held)["BodyPartState"] == "held:lateral" and meta["BodyPart"] == "pediatric_chest"
    assert _final(s.router, sent)["BodyPartForwarded"] == "ai-chest"
    assert (s.archive.count(lateral.SOPInstanceUID), s.chest.count(lateral.SOPInstanceUID)) == (1, 0)
    assert (s.archive.count(frontal.SOPInstanceUID), s.chest.count(frontal.SOPInstanceUID)) == (0, 1)


def test_body_part_source_says_what_decided(rules_setup: RulesSetup) -> None:
    s = rules_setup
    agree = s.router.upload(dicoms.to_bytes(_xray("spine", BodyPartExamined="LSPINE")))
    none = s.router.upload(dicoms.to_bytes(_xray("spine")))
    wrong = s.router.upload(dicoms.to_bytes(_xray("spine", BodyPartExamined="CHEST")))
    assert _final(s.router, agree, ("classified",))["BodyPartSource"] == "pixels+header"
    assert _final(s.router, none, ("classified",))["BodyPartSource"] == "pixels"
    meta = _final(s.router, wrong, ("classified",))
    assert (meta["BodyPart"], meta["BodyPartSource"]) == ("spine", "conflict")  # the tiny model is sure: > 0.99


def _post(router: OrthancProcess, path: str, body: dict) -> dict:
    return router.post_json(path, body)


def test_explain_gives_the_evidence_and_the_rules_and_sends_nothing(rules_setup: RulesSetup) -> None:
    s = rules_setup
    ds = _xray("adult_chest", InstitutionName="General Hospital", PatientAge="045Y", BodyPartExamined="CHEST")
    instance = s.router.upload(dicoms.to_bytes(ds))
    _final(s.router, instance)
    before = (s.chest.count(ds.SOPInstanceUID), s.archive.count(ds.SOPInstanceUID))
    answer = _post(s.router, "/bodypart-router/explain", {"Instance": instance})
    assert answer["SendsNothing"] is True and answer["Class"] == "adult_chest" and answer["Source"] == "pixels+header"
    assert answer["Evidence"]["Scores"]["adult_chest"] > 0.99
    assert answer["Evidence"]["Header"]["BodyPartExamined"] == "CHEST"
    assert answer["Evidence"]["Header"]["AgeYears"] == 45
    assert "PatientName" not in answer["Evidence"]["Header"] and "PatientID" not in answer["Evidence"]["Header"]
    rules = {r["Rule"]: r for r in answer["Rules"]}
    assert rules["St Mary to the archive"]["Matched"] is False
    assert 'InstitutionName matches' in rules["St Mary to the archive"]["Conditions"][0]["Why"]
    assert rules["adult chests, adults only"]["Matched"] is True
    assert answer["Destinations"] == ["ai-chest"]
    assert [d["Destination"] for d in answer["Deliveries"]] == ["ai-chest"]
    time.sleep(1.0)  # a forward would have gone out by now
    assert (s.chest.count(ds.SOPInstanceUID), s.archive.count(ds.SOPInstanceUID)) == before == (1, 0)
    bad = s.router.request("POST", "/bodypart-router/explain", json={"Instance": "nope"})
    assert bad.status_code == 400


def _reroute(router: OrthancProcess, body: dict) -> dict:
    _post(router, "/bodypart-router/reroute", body)
    router.wait_for(lambda: router.get_json("/bodypart-router/reroute")["Reroute"]["State"] == "done",
                    timeout=30, what="re-route done")
    return router.get_json("/bodypart-router/reroute")["Reroute"]


def test_reroute_sends_only_to_destinations_that_do_not_have_the_instance(rules_setup: RulesSetup,
                                                                          runtime: Runtime) -> None:
    s = rules_setup
    sent = _xray("adult_chest", InstitutionName="General Hospital", PatientAge="045Y")
    unrouted = _xray("spine")
    a = s.router.upload(dicoms.to_bytes(sent))
    b = s.router.upload(dicoms.to_bytes(unrouted))
    _final(s.router, a)
    _final(s.router, b, ("classified",))

    refused = [s.router.request("POST", "/bodypart-router/reroute", json=body).status_code
               for body in ({}, {"Since": "yesterday"}, {"Instances": [a], "Destinations": ["ai-nowhere"]})]
    assert refused == [400, 400, 400]

    # Under the same rules: nothing new to send, and nothing is sent twice.
    progress = _reroute(s.router, {"Instances": [a, b]})
    assert (progress["Forwards"], progress["AlreadySent"], progress["Done"]) == (0, 1, 2)

    # A destination added today: every stored instance goes there once, the old destinations get nothing again.
    s.router.stop()
    section = s.router.config["BodyPartRouter"]
    section["Routes"] = [{"Name": "everything to the archive", "Destinations": ["archive"], "Continue": True},
                         *RULES]
    try:
        s.router.start()
        wait_router_started(s.router, timeout=20)
        progress = _reroute(s.router, {"Since": "2000-01-01", "Destinations": ["archive"]})
        assert progress["Forwards"] >= 2 and progress["Destinations"] == {"archive": progress["Forwards"]}
        for instance in (a, b):
            _final(s.router, instance)
        assert (s.archive.count(sent.SOPInstanceUID), s.chest.count(sent.SOPInstanceUID)) == (1, 1)
        assert s.archive.count(unrouted.SOPInstanceUID) == 1
        again = _reroute(s.router, {"Since": "2000-01-01"})
        assert again["Forwards"] == 0 and again["AlreadySent"] >= 2
        study = s.router.get_json(f"/instances/{a}/study")["ID"]
        by_study = _reroute(s.router, {"Studies": [study]})
        assert (by_study["Total"], by_study["Forwards"], by_study["AlreadySent"]) == (1, 0, 2)
        time.sleep(1.0)
        assert all(n == 1 for n in s.archive.received.values()), s.archive.received
        assert all(n == 1 for n in s.chest.received.values()), s.chest.received
        status = s.router.get_json("/bodypart-router/status")
        assert status["Reroute"]["State"] == "done"
    finally:
        section["Routes"] = RULES
