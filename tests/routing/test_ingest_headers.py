from bodypart_router.routing.ingest_headers import HeaderCache, orthanc_id


def test_ids_are_the_ones_orthanc_gives() -> None:
    # read from Orthanc 1.10.1 after storing an instance with these identifiers
    ids = ("PID-1", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert orthanc_id(*ids) == "31d02643-b7c0b8cc-65ad115f-50268ca0-036dc66b"
    assert orthanc_id(*ids[:3]) == "5f599b63-b549ae97-db67c75e-d4e16140-10a5df78"
    assert orthanc_id(*ids[:2]) == "27185e2a-98d46db6-b195fcce-ecc3829f-0dc2183c"


def test_the_cache_keeps_a_header_whose_ids_are_orthancs_and_hands_it_over_once() -> None:
    cache = HeaderCache(capacity=2)
    ids = ("PID-1", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    tags = {"PatientID": ids[0], "StudyInstanceUID": ids[1], "SeriesInstanceUID": ids[2], "SOPInstanceUID": ids[3],
            "BodyPartExamined": "CHEST", "Rows": 64, "OtherPatientIDsSequence": [{}], "Huge": "x" * 1000}
    cache.put(orthanc_id(*ids), tags, "MODALITY1")
    header = cache.take(orthanc_id(*ids))
    assert header is not None
    assert header.tags["BodyPartExamined"] == "CHEST" and header.tags["Rows"] == 64
    assert "OtherPatientIDsSequence" not in header.tags and "Huge" not in header.tags
    assert (header.remote_aet, header.series_id, header.study_id) == (
        "MODALITY1", orthanc_id(*ids[:3]), orthanc_id(*ids[:2]))
    assert cache.take(orthanc_id(*ids)) is None  # handed over once
    cache.put("not-the-id-orthanc-computes", tags, None)
    assert cache.take("not-the-id-orthanc-computes") is None  # IDs that do not match are not trusted
    for n in range(3):
        cache.put(orthanc_id("P", str(n), "s", "i"), {"PatientID": "P", "StudyInstanceUID": str(n),
                                                      "SeriesInstanceUID": "s", "SOPInstanceUID": "i"}, None)
    assert cache.take(orthanc_id("P", "0", "s", "i")) is None  # bounded: the oldest went
    assert cache.take(orthanc_id("P", "2", "s", "i")) is not None
