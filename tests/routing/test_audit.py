"""Header audit: free-text regions, ages, verdicts and the per-station tally."""

from __future__ import annotations

import threading

import pytest

from bodypart_router.routing.audit import (
    AGREE,
    DISAGREE,
    NO_AET,
    NO_HEADER,
    OTHER_AETS,
    Region,
    StationTally,
    audit,
    chest_classes,
    normalise,
    parse_age,
    regions_in,
)

C, A, S, OT = Region.CHEST, Region.ABDOMEN, Region.SPINE, Region.OTHER


@pytest.mark.parametrize(
    "text, expected",
    [
        # chest, as senders really write it
        ("CHEST", (C,)), ("Chest PA", (C,)), ("XR CHEST 2 VIEWS", (C,)), ("CHEST 1V FRONTAL", (C,)),
        ("PORTABLE CHEST", (C,)), ("CXR", (C,)), ("THORAX PA", (C,)), ("THORAX P.A.", (C,)),
        ("Thorax pa + seitl.", (C,)), ("DX THORAX 1 EBENE", (C,)), ("Thoraxaufnahme", (C,)),
        ("Rx Tórax PA", (C,)), ("TORAX AP", (C,)), ("Radiographie pulmonaire", (C,)), ("POUMONS FACE", (C,)),
        ("Torace 2P", (C,)), ("LUNGS", (C,)), ("Lunge", (C,)), ("CHEST2V", (C,)), ("THX", (C,)),
        ("Borstkas", (C,)), ("Pecho PA", (C,)),
        # spine, including the traps ("thoracic", "Brust-") that must not read as chest
        ("SPINE", (S,)), ("L-SPINE", (S,)), ("LSPINE", (S,)), ("C-SPINE 3 VIEWS", (S,)), ("C SPINE", (S,)),
        ("T-spine AP", (S,)), ("THORACIC SPINE", (S,)), ("Spine thoracolumbar", (S,)), ("TLSPINE", (S,)),
        ("LUMBAR", (S,)), ("Lumbosacral 4 views", (S,)), ("LWS in 2 Ebenen", (S,)), ("HWS ap", (S,)),
        ("BWS seitlich", (S,)), ("Wirbelsäule ganz", (S,)), ("WIRBELSAEULE", (S,)), ("Lendenwirbelsäule", (S,)),
        ("Brustwirbelsäule", (S,)), ("Columna lumbar", (S,)), ("COLUMNA DORSAL", (S,)),
        ("Columna torácica", (S,)), ("Rachis lombaire", (S,)), ("Rachis dorsal face", (S,)),
        ("Colonna vertebrale", (S,)), ("Coluna lombar", (S,)), ("SCOLIOSIS PA", (S,)),
        ("Escoliosis", (S,)), ("EOS full spine", (S,)), ("Sacrum", (S,)), ("COCCYX", (S,)), ("Odontoid", (S,)),
        ("Vertebral column", (S,)), ("Cervical", (S,)),
        # abdomen
        ("ABDOMEN", (A,)), ("ABD", (A,)), ("ABD KUB", (A,)), ("KUB", (A,)), ("Abdomen 1 view supine", (A,)),
        ("ABDOMEN SIMPLE", (A,)), ("Abdomen Übersicht", (A,)), ("Bauchübersicht", (A,)), ("ASP debout", (A,)),
        ("Addome diretto", (A,)), ("Abdome", (A,)), ("IVU", (A,)), ("Urography", (A,)), ("Buikoverzicht", (A,)),
        # anything else that is a known region: the class others
        ("HAND", (OT,)), ("Hand li dp", (OT,)), ("Hands bone age", (OT,)), ("WRIST 3V", (OT,)), ("KNEE", (OT,)),
        ("Knie ap/seitl", (OT,)), ("Genou face", (OT,)), ("Rodilla", (OT,)), ("SKULL", (OT,)), ("Schädel", (OT,)),
        ("Crâne", (OT,)), ("PELVIS", (OT,)), ("Becken", (OT,)), ("Bassin face", (OT,)), ("HIP", (OT,)),
        ("Hüfte", (OT,)), ("Hueftgelenk", (OT,)), ("FOOT", (OT,)), ("Fuß", (OT,)), ("Pied", (OT,)), ("Shoulder",
        (OT,)), ("Schulter", (OT,)), ("Épaule", (OT,)), ("Ankle", (OT,)), ("Tobillo", (OT,)), ("ELBOW", (OT,)),
        ("Panoramic dental", (OT,)), ("OPG", (OT,)), ("Ceph lat", (OT,)), ("Sinuses", (OT,)),
        ("LOWER EXTREMITY", (OT,)), ("Femur", (OT,)), ("Clavicle", (OT,)), ("Head Neck", (OT,)),
        # ambiguous or several regions: the union
        ("Ribs left", (C, OT)), ("Rippen re", (C, OT)), ("ACUTE ABDOMEN SERIES W/ CHEST", (C, A)),
        ("CHESTABDOMEN", (C, A)), ("ABDOMENPELVIS", (A, OT)), ("Babygram", (C, A)),
        # no known region
        ("", ()), ("PA AND LATERAL", ()), ("AP", ()), ("PORTABLE", ()), ("UNKNOWN", ()), ("OTHER", ()),
        ("Colombo hospital", ()), ("1.2.3", ()), ("***", ()),
    ],
)
def test_regions_in_real_world_strings(text: str, expected: tuple[Region, ...]) -> None:
    assert regions_in(text) == expected


def test_normalise_strips_accents_and_punctuation() -> None:
    assert normalise(" Tórax  P.A./lat ") == "TORAX P A LAT"
    assert normalise("Fuß") == "FUSS"


@pytest.mark.parametrize(
    "value, years",
    [("004Y", 4.0), ("018M", 1.5), ("006W", 6 * 7 / 365.25), ("010D", 10 / 365.25), ("45", 45.0),
     ("045 Y", 45.0), ("4y", 4.0), ("000Y", 0.0)],
)
def test_parse_age(value: str, years: float) -> None:
    assert parse_age(value) == pytest.approx(years)


@pytest.mark.parametrize("value", [None, "", "Y", "abc", "4 years old", "999Y", "-4Y"])
def test_parse_age_rejects_unusable_values(value: str | None) -> None:
    assert parse_age(value) is None


@pytest.mark.parametrize(
    "age, classes",
    [(0.02, ("pediatric_chest",)), (4.0, ("pediatric_chest",)), (9.9, ("pediatric_chest",)),
     (10.0, ("adult_chest", "pediatric_chest")), (17.9, ("adult_chest", "pediatric_chest")),
     (18.0, ("adult_chest",)), (80.0, ("adult_chest",)), (None, ("adult_chest", "pediatric_chest"))],
)
def test_chest_classes_by_age(age: float | None, classes: tuple[str, ...]) -> None:
    assert chest_classes(age) == classes


def test_adult_header_disagrees_with_a_pediatric_prediction() -> None:
    result = audit("pediatric_chest", {"BodyPartExamined": "CHEST", "PatientAge": "054Y"})
    assert result.verdict == DISAGREE
    assert result.header_classes == ("adult_chest",)
    assert result.source == "BodyPartExamined"
    assert result.metadata_value == "disagree:adult_chest"


def test_child_header_agrees_with_a_pediatric_prediction() -> None:
    result = audit("pediatric_chest", {"StudyDescription": "Rx Tórax AP", "PatientAge": "003Y"})
    assert (result.verdict, result.metadata_value) == (AGREE, "agree:pediatric_chest")
    assert result.source == "StudyDescription"
    assert audit("adult_chest", {"StudyDescription": "Rx Tórax AP", "PatientAge": "003Y"}).verdict == DISAGREE


def test_chest_without_age_accepts_either_chest_class() -> None:
    for predicted in ("adult_chest", "pediatric_chest"):
        result = audit(predicted, {"SeriesDescription": "CHEST PA"})
        assert result.verdict == AGREE
        assert result.metadata_value == "agree:adult_chest/pediatric_chest"
    assert audit("spine", {"SeriesDescription": "CHEST PA"}).verdict == DISAGREE


def test_age_from_birth_date_when_patient_age_is_missing() -> None:
    tags = {"BodyPartExamined": "CHEST", "PatientBirthDate": "20200115", "StudyDate": "20240301"}
    result = audit("adult_chest", tags)
    assert result.verdict == DISAGREE
    assert result.age_years == pytest.approx(4.13, abs=0.01)
    # a birth date after the study date is nonsense, not an age
    bad = {"BodyPartExamined": "CHEST", "PatientBirthDate": "20250101", "StudyDate": "20240301"}
    assert audit("adult_chest", bad).verdict == AGREE


def test_body_part_examined_outranks_the_descriptions() -> None:
    tags = {"BodyPartExamined": "LSPINE", "SeriesDescription": "Abdomen", "StudyDescription": "CHEST"}
    result = audit("spine", tags)
    assert (result.verdict, result.source) == (AGREE, "BodyPartExamined")


def test_an_unknown_body_part_examined_falls_through_to_the_descriptions() -> None:
    tags = {"BodyPartExamined": "PORTABLE", "SeriesDescription": "AP", "ProtocolName": "KNIE ap", "StudyDescription": "x"}
    result = audit("others", tags)
    assert (result.verdict, result.source, result.header_classes) == (AGREE, "ProtocolName", ("others",))


def test_no_usable_header() -> None:
    result = audit("spine", {"BodyPartExamined": "", "StudyDescription": "PA AND LATERAL", "PatientAge": "040Y"})
    assert (result.verdict, result.header_classes, result.source) == (NO_HEADER, (), None)
    assert result.metadata_value == "no-header"
    assert audit("spine", {}).verdict == NO_HEADER


def test_multi_region_study_description_accepts_each_region() -> None:
    tags = {"StudyDescription": "ACUTE ABDOMEN SERIES W/ CHEST", "PatientAge": "060Y"}
    assert audit("abdominal", tags).verdict == AGREE
    assert audit("adult_chest", tags).verdict == AGREE
    assert audit("spine", tags).metadata_value == "disagree:abdominal/adult_chest"


def test_orthanc_json_shapes_are_accepted() -> None:
    assert audit("spine", {"BodyPartExamined": {"Name": "BodyPartExamined", "Type": "String", "Value": "SPINE"}}).verdict == AGREE
    assert audit("spine", {"StudyDescription": ["L", "SPINE"]}).verdict == AGREE


def test_audit_rejects_a_class_the_model_does_not_have() -> None:
    with pytest.raises(ValueError, match="uncertain"):
        audit("uncertain", {"BodyPartExamined": "CHEST"})


def test_station_tally_mismatch_rate_ignores_no_header() -> None:
    tally = StationTally()
    for verdict in (AGREE, AGREE, AGREE, DISAGREE, NO_HEADER, NO_HEADER):
        tally.record("CR_ROOM_1", verdict)
    tally.record("", NO_HEADER)
    tally.record(None, AGREE)
    snap = tally.snapshot()
    assert snap["CR_ROOM_1"] == {"agree": 3, "disagree": 1, "no-header": 2, "mismatch_rate": 0.25}
    assert snap[NO_AET] == {"agree": 1, "disagree": 0, "no-header": 1, "mismatch_rate": 0.0}
    with pytest.raises(ValueError, match="verdict"):
        tally.record("X", "maybe")


def test_station_tally_is_bounded_and_thread_safe() -> None:
    tally = StationTally(max_stations=3)

    def send(aet: str) -> None:
        for _ in range(500):
            tally.record(aet, DISAGREE)

    threads = [threading.Thread(target=send, args=(f"AET{i % 5}",)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = tally.snapshot()
    assert len(snap) == 4 and OTHER_AETS in snap
    assert sum(c["disagree"] for c in snap.values()) == 5000
