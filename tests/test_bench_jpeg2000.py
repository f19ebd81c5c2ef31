"""bench.jpeg2000: the two JPEG 2000 decoders it compares give the same samples where both decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from bench import corpus
from bench import jpeg2000 as bench_j2k
from bodypart_router.imaging.codecs import jpeg2000

FIXTURES = Path(__file__).with_name("fixtures")


@pytest.mark.parametrize(("name", "level"), [("RG3_J2KR.dcm", 2), ("J2K_pixelrep_mismatch.dcm", 1)])
def test_pillow_samples_are_the_bindings_once_the_widening_is_undone(name: str, level: int) -> None:
    stream = bench_j2k._stream(Path(str(get_testdata_file(name))))
    ours, theirs = jpeg2000.decode(stream, level), bench_j2k.pillow_decode(stream, level)
    assert (theirs.precision, theirs.signed) == (ours.precision, ours.signed)
    assert np.array_equal(theirs.pixels, ours.pixels)


def test_the_comparison_reports_every_level_the_router_uses(tmp_path: Path) -> None:
    rows = bench_j2k.compare_files([FIXTURES / "chest_j2k.dcm", FIXTURES / "chest_mono1.dcm"])
    assert rows == [{"file": "chest_j2k.dcm", "levels": {0: "identical"}}]  # the uncompressed file is not one


def test_timing_on_a_small_corpus(tmp_path: Path) -> None:
    data = corpus.build(tmp_path, rows=600, columns=500, images=1, small_side=64)
    timing = bench_j2k.measure([Path(p) for p in data.classify["jpeg2000"]], rounds=1)
    assert timing["levels"] == [1] and set(timing["codec_ms"]) == {"binding", "pillow", "pillow_over_binding"}
