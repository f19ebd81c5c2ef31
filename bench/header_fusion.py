"""Header fusion accuracy on films with realistic headers: ``make bench-fusion`` (one command).

The set: the held-out test split of ``../shared/data/xray-bodypart`` (the training split
function, same seed, so no image the model learnt from), each film given a synthetic header
drawn with a fixed seed:

* 70 % **right**: a region term of its true class in one of BodyPartExamined (coded),
  StudyDescription, SeriesDescription or ProtocolName, worded as sites write them
  (``XR C-SPINE 2V``, ``Thorax p.a.``, ``KUB``...);
* 15 % **missing**: no region term (no tag, or ``FOLLOW UP``);
* 15 % **wrong**: a term of another region;
* the patient's age always set (``PatientAge``): 1-5 years for pediatric chests (the
  collection's ages), 18-90 for adult chests, 2-90 for the rest.

The model's probabilities are computed once per model (cached under ``build/``), then every
``HeaderEvidence`` mode is scored on the same films: accuracy (routed class = true class, an
``uncertain`` film counting as wrong), the share ending ``uncertain``, the accuracy among films
routed to a class (what reaches a destination), and the same per header kind.

``--dicom-out DIR`` also writes the set as DICOM files with those headers (8-bit, uncompressed),
for ``make demo INPUT=DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "xray-bodypart"
DEFAULT_MODEL = REPO / "models" / "bodypart_router.onnx"
CACHE = REPO / "build" / "header-fusion"
#: The training split's seed (training/train.py ``--seed``).
SPLIT_SEED = 20261123
HEADER_SEED = 15

RIGHT, MISSING, WRONG = "right", "missing", "wrong"
#: (kind, share): the realistic mix of the issue (Güld: about 15 % of headers wrong).
MIX = ((RIGHT, 0.70), (MISSING, 0.15), (WRONG, 0.15))

#: Header wordings per class: (tag, value). Each is checked against the audit's vocabulary in the tests.
WORDINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "chest": (
        ("BodyPartExamined", "CHEST"), ("StudyDescription", "XR CHEST PA AND LATERAL"),
        ("StudyDescription", "CXR PA"), ("SeriesDescription", "Thorax p.a."), ("ProtocolName", "RX TORAX PA"),
        ("StudyDescription", "XR CHEST 1V"), ("SeriesDescription", "Thorax liegend"),
    ),
    "spine": (
        ("BodyPartExamined", "LSPINE"), ("BodyPartExamined", "CSPINE"), ("StudyDescription", "XR C-SPINE 2V"),
        ("StudyDescription", "XR L-SPINE 2 VIEWS"), ("SeriesDescription", "LWS in 2 Ebenen"),
        ("ProtocolName", "Scoliosis survey"), ("StudyDescription", "Columna lumbar AP"),
    ),
    "abdominal": (
        ("BodyPartExamined", "ABDOMEN"), ("StudyDescription", "XR ABDOMEN 1V"), ("StudyDescription", "KUB"),
        ("SeriesDescription", "Abdomen Uebersicht"), ("ProtocolName", "ABD SUPINE"),
    ),
    "others": (
        ("BodyPartExamined", "HAND"), ("BodyPartExamined", "KNEE"), ("StudyDescription", "XR WRIST 3V"),
        ("BodyPartExamined", "SKULL"), ("StudyDescription", "XR PELVIS AP"), ("SeriesDescription", "Schulter a.p."),
        ("StudyDescription", "XR FOOT 3 VIEWS"), ("ProtocolName", "OPG"), ("StudyDescription", "Cephalometric lateral"),
        ("StudyDescription", "XR HUMERUS 2V"), ("BodyPartExamined", "ELBOW"),
    ),
}
#: Header wordings that name no region.
NO_REGION: tuple[tuple[str, str], ...] = (("StudyDescription", "FOLLOW UP"), ("StudyDescription", "XR 2 VIEWS"),
                                          ("SeriesDescription", "AP"), ("", ""))
_REGION_OF = {"adult_chest": "chest", "pediatric_chest": "chest", "spine": "spine", "abdominal": "abdominal",
              "others": "others"}


@dataclass(frozen=True)
class Film:
    path: Path
    true_class: str
    header_kind: str
    tags: dict[str, str]


def synthetic_header(true_class: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    """(kind, tags by keyword) for one film, drawn from :data:`MIX`."""
    roll, kind = rng.random(), MISSING
    acc = 0.0
    for name, share in MIX:
        acc += share
        if roll < acc:
            kind = name
            break
    region = _REGION_OF[true_class]
    if kind == RIGHT:
        tag, value = rng.choice(WORDINGS[region])
    elif kind == WRONG:
        tag, value = rng.choice(WORDINGS[rng.choice([r for r in WORDINGS if r != region])])
    else:
        tag, value = rng.choice(NO_REGION)
    if true_class == "pediatric_chest":
        age = rng.randint(1, 5)
    elif true_class == "adult_chest":
        age = rng.randint(18, 90)
    else:
        age = rng.randint(2, 90)
    tags = {"PatientAge": f"{age:03d}Y"}
    if tag:
        tags[tag] = value
    return kind, tags


def test_films(data: Path, limit: int | None = None) -> list[Film]:
    """The test split with its synthetic headers (deterministic)."""
    sys.path.insert(0, str(REPO))
    from training.data import read_manifest, split_by_group

    samples = read_manifest(data)
    idx = split_by_group(samples, SPLIT_SEED)["test"]
    rng = random.Random(HEADER_SEED)
    films = []
    for i in idx:
        s = samples[i]
        kind, tags = synthetic_header(s.class_name, rng)
        films.append(Film(s.path, s.class_name, kind, tags))
    if limit:
        films = random.Random(1).sample(films, min(limit, len(films)))
    return films


def predictions(films: list[Film], model: Path) -> list[dict[str, float]]:
    """The model's probabilities per film, cached per model SHA-256 and film list."""
    from bodypart_router.imaging.decode import decode_image_file
    from bodypart_router.inference.batch import classify_batches, prepare
    from bodypart_router.inference.classifier import Classifier, file_sha256

    key = hashlib.sha256((file_sha256(model) + "".join(str(f.path) for f in films)).encode()).hexdigest()[:16]
    cache = CACHE / f"scores-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    classifier = Classifier(model)
    out: list[dict[str, float]] = []
    t0 = time.time()
    prepared = ((film, prepare(lambda film=film: decode_image_file(str(film.path)), str(film.path))) for film in films)
    for n, (film, item) in enumerate(classify_batches(prepared, classifier, 32), 1):  # the router's batch path
        if item.prediction is None:
            raise RuntimeError(f"{film.path}: not classified ({item.error or item.retry})")
        out.append(dict(item.prediction.scores))
        if n % 32 == 0 or n == len(films):
            print(f"\rclassified {n}/{len(films)} ({time.time() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def score(films: list[Film], scores: list[dict[str, float]], *, mode: str, minimum_score: float,
          error_rate: float) -> dict[str, Any]:
    """Accuracy, uncertain share and routed accuracy of one HeaderEvidence mode, overall and per header kind."""
    from bodypart_router.inference.classes import UNCERTAIN
    from bodypart_router.routing.fusion import fuse

    rows: dict[str, list[tuple[bool, bool]]] = {"all": [], RIGHT: [], MISSING: [], WRONG: []}
    sources: Counter[str] = Counter()
    for film, p in zip(films, scores, strict=True):
        f = fuse(p, film.tags, mode=mode, minimum_score=minimum_score, header_error_rate=error_rate)
        routed = UNCERTAIN if f.score < minimum_score else f.class_name
        sources[f.source] += 1
        for key in ("all", film.header_kind):
            rows[key].append((routed == film.true_class, routed == UNCERTAIN))
    out: dict[str, Any] = {}
    for key, r in rows.items():
        n = len(r)
        routed = [ok for ok, unsure in r if not unsure]
        out[key] = {
            "films": n,
            "accuracy": round(sum(ok for ok, _ in r) / n, 4) if n else None,
            "uncertain": round(sum(unsure for _, unsure in r) / n, 4) if n else None,
            "routed_accuracy": round(sum(routed) / len(routed), 4) if routed else None,
        }
    out["sources"] = dict(sources)
    return out


def write_dicoms(films: list[Film], out: Path) -> None:
    """The set as DICOM files (Secondary Capture, 8-bit MONOCHROME2) with the synthetic headers."""
    import cv2
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for n, film in enumerate(films):
        image = cv2.imread(str(film.path), cv2.IMREAD_GRAYSCALE)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality, ds.PatientID, ds.StudyDate, ds.InstanceNumber = "DX", f"FUSION{n:05d}", "20240101", 1
        for k, v in film.tags.items():
            setattr(ds, k, v)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.ascontiguousarray(image).tobytes()
        name = f"{n:05d}_{film.true_class}.dcm"
        ds.save_as(out / name, enforce_file_format=True)
        truth[name] = {"class": film.true_class, "header": film.header_kind}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--limit", type=int, default=None, help="score a random subset of the test split")
    parser.add_argument("--minimum-score", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "header_fusion.json")
    parser.add_argument("--dicom-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        print(f"no data set at {args.data} (needs ../shared/data/xray-bodypart)", file=sys.stderr)
        return 2
    films = test_films(args.data, args.limit)
    kinds = Counter(f.header_kind for f in films)
    print(f"{len(films)} test films; headers: " + ", ".join(f"{k} {v / len(films):.1%}" for k, v in kinds.items()))
    if args.dicom_out:
        write_dicoms(films, args.dicom_out)
        print(f"wrote {len(films)} DICOM files and truth.json to {args.dicom_out}")
    scores = predictions(films, args.model)
    variants = [("off", 0.15), ("tie-break", 0.15), ("prior", 0.05), ("prior", 0.15), ("prior", 0.30), ("prior", 0.40),
                ("prior", 0.50), ("prior", 0.60)]
    results = {}
    print(f"{'HeaderEvidence':<22}{'accuracy':>9}{'uncertain':>10}{'routed acc':>11}   "
          f"{'right':>7}{'missing':>8}{'wrong':>7}  (accuracy by header kind)")
    for mode, e in variants:
        name = mode if mode != "prior" else f"prior e={e:g}"
        r = score(films, scores, mode=mode, minimum_score=args.minimum_score, error_rate=e)
        results[name] = r
        a = r["all"]
        print(f"{name:<22}{a['accuracy']:>9.4f}{a['uncertain']:>10.4f}{a['routed_accuracy']:>11.4f}   "
              f"{r[RIGHT]['accuracy']:>7.4f}{r[MISSING]['accuracy']:>8.4f}{r[WRONG]['accuracy']:>7.4f}")
    from bodypart_router.inference.classifier import file_sha256

    report = {"model_sha256": file_sha256(args.model), "films": len(films), "header_kinds": dict(kinds),
              "minimum_score": args.minimum_score, "split_seed": SPLIT_SEED, "header_seed": HEADER_SEED,
              "results": results}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
