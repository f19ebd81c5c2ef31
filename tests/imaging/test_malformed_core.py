"""The core decoder against >= 500 malformed and unusual DICOM files (see :mod:`support.malformed`).

Every file must come out as a class-ready image or a typed reason: no other
exception escapes, the reason is the one the case expects, the details name no
patient, memory stays bounded although some files declare 65535 x 65535 pixels
(or 2 billion frames), and the whole corpus takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from functools import partial

import pytest
from bodypart_router.imaging.decode import DecodedImage, decode_dicom, decode_file
from bodypart_router.errors import NotClassifiable
from bodypart_router.imaging.preprocess import to_model_input
from support.malformed import (
    CLASSIFIED,
    MINIMUM_CASES,
    CorpusEntry,
    MalformedCase,
    build_corpus,
    find_phi,
    write_corpus,
)

#: The corpus exists to provoke pydicom's warnings about bad values.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: Peak Python-heap growth allowed while decoding the whole corpus (the largest real image is 256x256x3).
MEMORY_LIMIT_BYTES = 64 * 1024 * 1024
#: Wall-clock limits: stall guards, not speed measures (the whole corpus takes about 1 s on 2 cores;
#: speed lives in bench/).
TOTAL_SECONDS_LIMIT = 120.0
FILE_SECONDS_LIMIT = 20.0


@pytest.fixture(scope="module")
def corpus() -> list[MalformedCase]:
    return build_corpus()


@pytest.fixture(scope="module")
def corpus_files(corpus: list[MalformedCase], tmp_path_factory: pytest.TempPathFactory) -> list[CorpusEntry]:
    return write_corpus(tmp_path_factory.mktemp("malformed"), corpus)


def outcome_of(decode: Callable[[], DecodedImage]) -> tuple[str, str]:
    """Run one decode and preprocessing; return (outcome, detail). Any other exception propagates."""
    try:
        image = decode()
        model_input = to_model_input(image.pixels)
    except NotClassifiable as exc:
        return exc.state, exc.detail
    assert model_input.shape == (1, 224, 224)
    return CLASSIFIED, ""


def test_corpus_is_large_varied_and_reproducible(corpus: list[MalformedCase]) -> None:
    assert len(corpus) >= MINIMUM_CASES
    categories = Counter(case.category for case in corpus)
    for required in ("truncated-pixel-data", "rows-columns-too-large", "bits-allocated-mismatch",
                     "bogus-transfer-syntax", "gigantic-declared", "empty-file", "garbage", "non-image-sop",
                     "non-projection-modality", "multi-frame", "colour", "monochrome1", "missing-attribute",
                     "broken-fragments"):
        assert categories[required] > 0, required
    names = [case.name for case in corpus]
    assert len(set(names)) == len(names)
    uids = [case.sop_instance_uid for case in corpus if case.sop_instance_uid]
    assert len(set(uids)) == len(uids), "each case must be a distinct instance for Orthanc"
    assert sum(len(case.data) for case in corpus) < 16_000_000, "keep the corpus a few MB"
    digest = hashlib.sha256(b"".join(case.data for case in corpus)).hexdigest()
    assert digest == hashlib.sha256(b"".join(case.data for case in build_corpus())).hexdigest()


def test_every_file_gets_its_expected_class_or_reason(corpus_files: list[CorpusEntry]) -> None:
    wrong, slow = [], []
    for entry in corpus_files:
        t0 = time.perf_counter()
        outcome, detail = outcome_of(partial(decode_file, entry.path))
        elapsed = time.perf_counter() - t0
        if outcome not in entry.expected:
            wrong.append(f"{entry.path.name}: got {outcome} ({detail}), expected one of {sorted(entry.expected)}")
        if elapsed > FILE_SECONDS_LIMIT:
            slow.append(f"{entry.path.name}: {elapsed:.1f} s")
    assert not wrong, f"{len(wrong)} files decoded to the wrong outcome:\n" + "\n".join(wrong)
    assert not slow, "files slower than the limit:\n" + "\n".join(slow)


def test_bytes_and_files_give_the_same_outcome(corpus: list[MalformedCase], corpus_files: list[CorpusEntry]) -> None:
    """The Orthanc adapter decodes the instance's bytes; the CLI decodes files: same answers."""
    by_name = {entry.path.name: entry for entry in corpus_files}
    differ = []
    for case in corpus:
        from_bytes, _ = outcome_of(partial(decode_dicom, case.data))
        from_file, _ = outcome_of(partial(decode_file, by_name[case.name].path))
        if from_bytes != from_file:
            differ.append(f"{case.name}: bytes -> {from_bytes}, file -> {from_file}")
    assert not differ, "\n".join(differ)


def test_memory_and_time_stay_bounded(corpus: list[MalformedCase]) -> None:
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        worst = ("", 0)
        for case in corpus:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            outcome_of(partial(decode_dicom, case.data))
            growth = tracemalloc.get_traced_memory()[1] - before
            if growth > worst[1]:
                worst = (case.name, growth)
        elapsed = time.perf_counter() - t0
        leaked = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert worst[1] < MEMORY_LIMIT_BYTES, f"{worst[0]} made the heap grow by {worst[1] / 1e6:.0f} MB"
    assert leaked < 8 * 1024 * 1024, f"{leaked / 1e6:.1f} MB still held after the corpus: a leak"
    assert elapsed < TOTAL_SECONDS_LIMIT, f"corpus took {elapsed:.1f} s"


def test_reasons_name_no_patient(corpus: list[MalformedCase]) -> None:
    """Details end up in logs and metadata: they name tags, never PatientName/ID/BirthDate."""
    dates = frozenset(case.birth_date for case in corpus)
    leaks = []
    for case in corpus:
        outcome, detail = outcome_of(partial(decode_dicom, case.data))
        if outcome != CLASSIFIED:
            assert detail, f"{case.name}: {outcome} without a detail"
        hits = find_phi(detail, dates)
        if hits:
            leaks.append(f"{case.name}: {hits}")
    assert not leaks, "\n".join(leaks)


def test_logs_and_tracebacks_name_no_patient(corpus: list[MalformedCase]) -> None:
    """What the decoder logs about the corpus, tracebacks and chained exceptions included, as
    Orthanc's log would show it: it names tags, never PatientName/ID/BirthDate."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("bodypart_router")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        for case in corpus:
            outcome_of(partial(decode_dicom, case.data))
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert text.count("Traceback (most recent call last)") >= 20  # the scan below reads real tracebacks
    assert find_phi(text, frozenset(case.birth_date for case in corpus)) == []


def test_phi_scanner_finds_markers(corpus: list[MalformedCase]) -> None:
    """The leak check used here and in the fault scenarios must itself be able to fail."""
    case = corpus[7]
    log = f"I1123 10:00:00.123456 router: instance abc {case.patient_name} born {case.birth_date}"
    assert find_phi(log, frozenset({case.birth_date})) == [case.patient_name, case.birth_date]
    assert find_phi("W1123 19:01:02.000001 stored 1.2.826.0.1.3680043.8.498.19010101", frozenset({"19010101"})) == []
    assert find_phi(f"id={case.patient_id}") == [case.patient_id]
