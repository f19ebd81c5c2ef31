"""Deterministic benchmark inputs: realistic CR radiographs in each transfer syntax.

Codec speed depends on image content: a flat image decodes far faster than a radiograph and pure
noise far slower. The inputs are therefore real CR films shipped in ``pydicom-data`` (a chest and a
tibia), resampled to the target size, with signal-dependent quantum noise added back at the new
pixel pitch. Resampling smooths the film's own noise away; without that noise, lossless codecs
would compress and decode unrealistically fast. With it, JPEG 2000 lossless reaches about 2.3:1,
as clinical CR does.

Everything is generated from fixed seeds into ``build/bench/`` and reused while the parameters
match, so repeated benchmark runs measure the same bytes.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

#: Real CR films from the ``pydicom-data`` wheel used as image content: a chest and a tibia.
SOURCE_FILES: tuple[str, ...] = ("RG1_UNCR.dcm", "RG3_UNCR.dcm")
#: Bits stored of the generated images; 12 is what most CR/DX detectors deliver.
BITS_STORED = 12
#: Quantum noise: standard deviation = NOISE_GAIN * sqrt(pixel value), about 13 DN at mid-range.
NOISE_GAIN = 0.3
#: Full-size image of the targets: a 35 x 43 cm cassette at about 140 um.
FULL_ROWS, FULL_COLUMNS = 3000, 2500
#: The "0.5 MB" ingest instance: 512 x 512 x 16 bit uncompressed.
SMALL_SIDE = 512
#: Bump when the generated content changes, so that cached corpora are rebuilt.
CORPUS_VERSION = 2


@dataclass(frozen=True)
class Syntax:
    """A transfer syntax the benchmark measures."""

    key: str
    uid: UID
    title: str


SYNTAXES: tuple[Syntax, ...] = (
    Syntax("uncompressed", ExplicitVRLittleEndian, "Uncompressed"),
    Syntax("jpeg-lossless", JPEGLosslessSV1, "JPEG lossless"),
    Syntax("jpeg-ls", JPEGLSLossless, "JPEG-LS lossless"),
    Syntax("jpeg2000", JPEG2000Lossless, "JPEG 2000 lossless"),
)
SYNTAX_BY_KEY = {s.key: s for s in SYNTAXES}


@dataclass(frozen=True)
class Corpus:
    """Paths of the generated inputs.

    Attributes:
        classify: per syntax key, the images the classification benchmark cycles through.
        ingest: ``"small"`` (about 0.5 MB) and ``"large"`` (about 15 MB) uncompressed templates
            that ingest benchmarks copy with fresh UIDs.
        rows, columns: size of the classification images.
    """

    classify: dict[str, list[Path]]
    ingest: dict[str, Path]
    rows: int
    columns: int


def _source_pixels(name: str) -> np.ndarray:
    """Pixels of a ``pydicom-data`` film as float32, rescaled to 0..1 with bright = dense bone."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(
            f"{name} not found: the benchmark needs the pydicom-data wheel (pip install -e '.[test]')"
        )
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float32)
    lo, hi = np.percentile(pixels, (0.1, 99.9))
    pixels = np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def radiograph(index: int, rows: int, columns: int) -> np.ndarray:
    """The ``index``-th benchmark image as MONOCHROME1 ``uint16`` with :data:`BITS_STORED` bits.

    Even and odd indices alternate between the source films; later indices are mirrored and get
    other noise, so that consecutive inputs are never byte-identical.
    """
    source = _source_pixels(SOURCE_FILES[index % len(SOURCE_FILES)])
    if (index // len(SOURCE_FILES)) % 2:
        source = source[:, ::-1]
    image = cv2.resize(source, (columns, rows), interpolation=cv2.INTER_CUBIC)
    # MONOCHROME1, as most CR plates store it: high values are dark (little attenuation).
    top = float(2**BITS_STORED - 1)
    image = (1.0 - np.clip(image, 0.0, 1.0)) * top
    rng = np.random.default_rng(1000 + index)
    image += rng.standard_normal(image.shape, dtype=np.float32) * NOISE_GAIN * np.sqrt(image + 1.0)
    return np.clip(np.rint(image), 0, top).astype(np.uint16)


def derived_uid(*parts: str) -> UID:
    """A UID that is a pure function of ``parts``.

    pydicom hashes the concatenation of its entropy sources, so ("a-1", "10") and ("a-11", "0")
    would collide: the parts are joined with a separator first.
    """
    return generate_uid(entropy_srcs=["|".join(("bodypart-router-bench", *parts))])


def cr_dataset(pixels: np.ndarray, uid_seed: str) -> Dataset:
    """An uncompressed CR Image Storage dataset around ``pixels``, with UIDs derived from ``uid_seed``."""
    ds = Dataset()
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = derived_uid(uid_seed, "instance")
    ds.StudyInstanceUID = derived_uid(uid_seed, "study")
    ds.SeriesInstanceUID = derived_uid(uid_seed, "series")
    ds.PatientName = "Benchmark^Synthetic"
    ds.PatientID = "BENCH"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, BITS_STORED, BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2**BITS_STORED // 2, 2**BITS_STORED
    ds.PixelData = pixels.astype("<u2").tobytes()

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def write_encoded(ds: Dataset, syntax: Syntax, path: Path) -> None:
    """Write ``ds`` (uncompressed) to ``path`` in ``syntax``.

    pydicom encodes JPEG-LS (pyjpegls) and JPEG 2000 (pylibjpeg-openjpeg) but has no JPEG
    lossless encoder, so that one goes through GDCM.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if syntax.uid == JPEGLosslessSV1:
        _write_jpeg_lossless_gdcm(ds, path)
        return
    if syntax.uid != ExplicitVRLittleEndian:
        ds = copy.deepcopy(ds)  # compress() rewrites file_meta, which a shallow copy shares
        ds.compress(syntax.uid)
    ds.save_as(path, enforce_file_format=True)


def _write_jpeg_lossless_gdcm(ds: Dataset, path: Path) -> None:
    import gdcm

    plain = path.with_suffix(".plain.dcm")
    ds.save_as(plain, enforce_file_format=True)
    try:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(plain))
        if not reader.Read():
            raise RuntimeError(f"GDCM could not read {plain}")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("GDCM could not encode JPEG lossless")
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        writer.SetFileName(str(path))
        if not writer.Write():
            raise RuntimeError(f"GDCM could not write {path}")
    finally:
        plain.unlink(missing_ok=True)
    if pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError(f"{path}: GDCM wrote another transfer syntax than JPEG lossless SV1")


def build(
    out_dir: Path,
    rows: int = FULL_ROWS,
    columns: int = FULL_COLUMNS,
    images: int = 4,
    small_side: int = SMALL_SIDE,
) -> Corpus:
    """Generate (or reuse) the corpus in ``out_dir``.

    Args:
        out_dir: destination, normally ``build/bench/corpus``.
        rows, columns: size of the classification images and of the large ingest template.
        images: distinct images per transfer syntax.
        small_side: side of the small ingest template.
    """
    params = {
        "version": CORPUS_VERSION,
        "rows": rows,
        "columns": columns,
        "images": images,
        "small_side": small_side,
        "syntaxes": [s.key for s in SYNTAXES],
    }
    classify = {s.key: [out_dir / s.key / f"{i:02d}.dcm" for i in range(images)] for s in SYNTAXES}
    ingest = {"small": out_dir / "ingest" / "small.dcm", "large": out_dir / "ingest" / "large.dcm"}
    corpus = Corpus(classify=classify, ingest=ingest, rows=rows, columns=columns)

    manifest = out_dir / "manifest.json"
    wanted = [p for paths in classify.values() for p in paths] + list(ingest.values())
    if manifest.exists() and json.loads(manifest.read_text()).get("params") == params:
        if all(p.exists() for p in wanted):
            return corpus

    manifest.unlink(missing_ok=True)
    for i in range(images):
        ds = cr_dataset(radiograph(i, rows, columns), uid_seed=f"classify-{rows}x{columns}-{i}")
        for syntax in SYNTAXES:
            write_encoded(ds, syntax, classify[syntax.key][i])
        if i == 0:
            write_encoded(ds, SYNTAX_BY_KEY["uncompressed"], ingest["large"])
    small = cr_dataset(radiograph(0, small_side, small_side), uid_seed=f"small-{small_side}")
    write_encoded(small, SYNTAX_BY_KEY["uncompressed"], ingest["small"])

    sizes = {str(p.relative_to(out_dir)): p.stat().st_size for p in wanted}
    manifest.write_text(json.dumps({"params": params, "bytes": sizes}, indent=2))
    return corpus


def unique_copies(template: Path, count: int, tag: str) -> list[bytes]:
    """``count`` copies of ``template`` as DICOM bytes, each its own study, series and instance.

    Ingest benchmarks store every copy, so each needs UIDs Orthanc has not seen; ``tag`` keeps
    the UIDs of different runs apart.
    """
    ds = pydicom.dcmread(template)
    copies = []
    for i in range(count):
        ds.StudyInstanceUID = derived_uid(tag, str(i), "study")
        ds.SeriesInstanceUID = derived_uid(tag, str(i), "series")
        ds.SOPInstanceUID = derived_uid(tag, str(i), "instance")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        copies.append(buffer.getvalue())
    return copies
