"""Walking folders, telling file kinds apart by content, batching inference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bodypart_router.inference.classes import CLASS_NAMES
from bodypart_router.inference.classifier import Classifier
from bodypart_router.errors import NotClassifiable, Reason
from bodypart_router.inference.pipeline import classify_paths, iter_files

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture()
def tree(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A folder mixing DICOM (without extension), PNG, JPEG, junk and a hidden file."""
    root = tmp_path / "inbox"
    (root / "b" / "deeper").mkdir(parents=True)
    shutil.copy(fixtures_dir / "chest_mono1.dcm", root / "a_chest")              # DICOM, no extension
    shutil.copy(fixtures_dir / "tibia_no_meta.dcm", root / "b" / "tibia.bin")    # DICOM without meta
    shutil.copy(fixtures_dir / "tibia.png", root / "b" / "deeper" / "x.dat")     # PNG, misleading name
    shutil.copy(fixtures_dir / "chest.jpg", root / "b" / "deeper" / "y.jpg")
    (root / "b" / "notes.txt").write_text("not an image at all\n" * 10)
    (root / ".hidden").write_text("skipped")
    return root


def test_iter_files_walks_recursively_in_sorted_order_skipping_hidden(tree: Path) -> None:
    names = [p.relative_to(tree).as_posix() for p in iter_files([tree])]
    assert names == ["a_chest", "b/notes.txt", "b/tibia.bin", "b/deeper/x.dat", "b/deeper/y.jpg"]


def test_every_file_gets_a_result_in_order(tree: Path, tiny_model_path: Path) -> None:
    clf = Classifier(tiny_model_path)
    results = list(classify_paths([tree, tree / "missing.dcm"], clf, batch_size=2))
    names = [r.path.name for r in results]
    assert names == ["a_chest", "notes.txt", "tibia.bin", "x.dat", "y.jpg", "missing.dcm"]
    by_name = {r.path.name: r for r in results}
    for name in ("a_chest", "tibia.bin", "x.dat", "y.jpg"):
        assert by_name[name].ok and by_name[name].prediction.class_name in CLASS_NAMES
    assert by_name["notes.txt"].error.reason is Reason.NOT_DICOM
    assert by_name["missing.dcm"].error.reason is Reason.NOT_DICOM


def test_inference_is_batched(tree: Path, tiny_model_path: Path) -> None:
    clf = Classifier(tiny_model_path)
    sizes: list[int] = []
    original = clf.predict_batch

    def counting(inputs):  # type: ignore[no-untyped-def]
        sizes.append(len(inputs))
        return original(inputs)

    clf.predict_batch = counting  # type: ignore[method-assign]
    results = list(classify_paths([tree], clf, batch_size=3))
    assert sum(r.ok for r in results) == 4
    assert sizes == [3, 1]


def test_a_model_failure_becomes_a_reason_for_its_batch(tree: Path, tiny_model_path: Path) -> None:
    clf = Classifier(tiny_model_path)

    def broken(inputs):  # type: ignore[no-untyped-def]
        raise NotClassifiable(Reason.MODEL_ERROR, "simulated")

    clf.predict_batch = broken  # type: ignore[method-assign]
    results = list(classify_paths([tree], clf))
    assert [r.error.reason for r in results if r.error] == [
        Reason.MODEL_ERROR, Reason.NOT_DICOM, Reason.MODEL_ERROR, Reason.MODEL_ERROR, Reason.MODEL_ERROR]


def test_policy_none_accepts_other_modalities(tmp_path: Path, tiny_model_path: Path, fixtures_dir: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(fixtures_dir / "chest_mono1.dcm")
    ds.Modality = "MR"
    ds.save_as(tmp_path / "mr.dcm")
    clf = Classifier(tiny_model_path)
    (strict,) = classify_paths([tmp_path / "mr.dcm"], clf)
    assert strict.error.reason is Reason.NON_PROJECTION_MODALITY
    (lenient,) = classify_paths([tmp_path / "mr.dcm"], clf, policy=None)
    assert lenient.ok and np.isfinite(lenient.prediction.score)


def test_a_process_pool_gives_the_same_results_in_the_same_order(tmp_path: Path, tiny_model_path: Path,
                                                                  fixtures_dir: Path) -> None:
    from bodypart_router.inference import pipeline

    for k in range(pipeline.MIN_FILES_FOR_POOL):
        source = sorted(fixtures_dir.glob("*.dcm"))[k % 7]
        shutil.copy(source, tmp_path / f"{k:02d}_{source.name}")
    (tmp_path / "99_empty.dcm").write_bytes(b"")
    clf = Classifier(tiny_model_path)
    serial = [(r.path, r.prediction, r.error and r.error.state) for r in classify_paths([tmp_path], clf)]
    pooled = [(r.path, r.prediction, r.error and r.error.state) for r in classify_paths([tmp_path], clf, workers=2)]
    assert pooled == serial
    assert serial[-1][2] == "failed:empty-file"
