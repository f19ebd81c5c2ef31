"""JPEG 2000 at reduced resolution: the router's OpenJPEG binding against Pillow's ``reduce``.

    python -m bench.jpeg2000 [--rounds 7] [--output build/bench/jpeg2000.json]

Both decode the same code-streams with the same OpenJPEG feature (a resolution factor: the
``n`` finest wavelet levels are skipped), interleaved in one process, on the benchmark corpus
(2500 x 3000, 12 bits stored, JPEG 2000 lossless with 5 decomposition levels) at the level the
router asks for. Two figures per decoder: the codec call alone, and the router's whole decode
(:func:`decode_dicom`: parse, decode, VOI, resize) with that decoder in place. Each pair of
decodes is also compared pixel for pixel, and the files Pillow cannot open are listed
(``tests/fixtures``, JPEG 2000 files of ``pydicom-data`` and, when present,
``../shared/data/dicom-xray``). The decision and its
figures: ``docs/decisions.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import get_frame

from bodypart_router.imaging import decode
from bodypart_router.imaging.resample import reduction_factor
from bodypart_router.imaging.codecs import jpeg2000

from . import corpus

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "bench"
RESULTS = BUILD / "jpeg2000.json"
MORE_FILES = (REPO / "tests" / "fixtures", REPO.parent / "shared" / "data" / "dicom-xray")
#: Grayscale JPEG 2000 radiographs and images of the ``pydicom-data`` wheel.
PYDICOM_DATA = ("RG1_J2KR.dcm", "RG3_J2KR.dcm", "693_J2KR.dcm", "J2K_pixelrep_mismatch.dcm", "GDCMJ2K_TextGBR.dcm",
                "MR_small_jp2klossless.dcm", "emri_small_jpeg_2k_lossless.dcm")


def pillow_decode(codestream: bytes, reduce: int = 0) -> jpeg2000.Jpeg2000Image:
    """:func:`jpeg2000.decode` through Pillow: ``Image.reduce`` sets OpenJPEG's resolution factor.

    Pillow widens samples to its 16-bit mode (a 12-bit sample comes back shifted left by 4) and
    offsets signed ones, so the precision and sign are read from the SIZ marker to undo that."""
    start = codestream.find(b"\xff\x4f\xff\x51")
    ssiz = codestream[start + 42]
    precision, signed = (ssiz & 0x7F) + 1, bool(ssiz & 0x80)
    image = Image.open(io.BytesIO(codestream))
    image.reduce = reduce
    image.load()
    pixels = np.asarray(image).astype(np.int32)
    shift = (16 if image.mode.startswith("I;16") else 8) - precision
    if shift > 0:
        pixels >>= shift
    if signed:
        pixels -= 1 << (precision - 1)
    return jpeg2000.Jpeg2000Image(pixels, precision, signed)


def _stream(path: Path) -> bytes:
    ds = pydicom.dcmread(path, force=True)
    return get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))


def _level(stream: bytes, shape: tuple[int, int]) -> int:
    factor = reduction_factor(shape, decode.TARGET_SHORT_SIDE)  # as the router chooses it
    level = int(np.log2(factor)) if factor > 1 else 0
    return min(level, jpeg2000.decomposition_levels(stream) or 0)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare_files(paths: list[Path]) -> list[dict]:
    """Per file: does Pillow decode it, and to the same pixels as the binding, at each level used?"""
    rows = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            if "JPEG 2000" not in ds.file_meta.TransferSyntaxUID.name:
                continue
            stream = _stream(path)
        except Exception:  # not DICOM, no file meta: not a JPEG 2000 file
            continue
        levels = sorted({0, _level(stream, (int(ds.Rows), int(ds.Columns)))})
        row: dict = {"file": path.name, "levels": {}}
        for level in levels:
            try:
                ours = jpeg2000.decode(stream, level)
            except jpeg2000.Jpeg2000Error:  # as the router does: cut what follows the last tile-part
                stream = jpeg2000.without_trailing_segments(stream) or stream
                ours = jpeg2000.decode(stream, level)
            try:
                theirs = pillow_decode(stream, level)
            except Exception as exc:  # noqa: BLE001  (what Pillow says is the result)
                row["levels"][level] = f"Pillow fails: {type(exc).__name__}: {exc}"
                continue
            same = ours.pixels.shape == theirs.pixels.shape and np.array_equal(ours.pixels, theirs.pixels)
            row["levels"][level] = "identical" if same else "different pixels"
        rows.append(row)
    return rows


def measure(paths: list[Path], rounds: int) -> dict:
    """Median seconds per image of each decoder, codec alone and the whole decode, interleaved."""
    streams = [_stream(p) for p in paths]
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    levels = [_level(s, (int(h.Rows), int(h.Columns))) for s, h in zip(streams, heads)]
    decoders = {"binding": jpeg2000.decode, "pillow": pillow_decode}
    codec: dict[str, list[float]] = {name: [] for name in decoders}
    whole: dict[str, list[float]] = {name: [] for name in decoders}
    for r in range(rounds + 1):  # the first round warms up, untimed
        order = list(decoders) if r % 2 == 0 else list(reversed(decoders))
        for name in order:
            fn = decoders[name]
            t = sum(_timed(lambda s=s, lv=lv: fn(s, lv)) for s, lv in zip(streams, levels)) / len(streams)
            with mock.patch.object(jpeg2000, "decode", fn):
                w = sum(_timed(lambda p=p: decode.decode_file(p)) for p in paths) / len(paths)
            if r:
                codec[name].append(t)
                whole[name].append(w)
    result: dict = {"images": len(paths), "levels": sorted(set(levels)), "rounds": rounds}
    for label, table in (("codec_ms", codec), ("decode_ms", whole)):
        result[label] = {name: round(1000 * statistics.median(v), 2) for name, v in table.items()}
        result[label]["pillow_over_binding"] = round(result[label]["pillow"] / result[label]["binding"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jpeg2000", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = corpus.build(BUILD / "corpus")
    paths = [Path(p) for p in data.classify["jpeg2000"]]
    timing = measure(paths, args.rounds)
    from pydicom.data import get_testdata_file

    more = sorted(p for d in MORE_FILES if d.is_dir() for p in d.glob("*.dcm"))
    files = compare_files(paths[:1] + more + [Path(str(get_testdata_file(name))) for name in PYDICOM_DATA])
    result = {"timing": timing, "files": files}
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for label in ("codec_ms", "decode_ms"):
        t = timing[label]
        print(f"{label:10} binding {t['binding']:7.2f}  pillow {t['pillow']:7.2f}  ratio {t['pillow_over_binding']:.3f}")
    for row in files:
        print(f"{row['file']:40} " + "; ".join(f"level {k}: {v}" for k, v in row["levels"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
