"""The onnxruntime wrapper (with a tiny model built here) and, once it exists, the shipped model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from bodypart_router.inference import polarity
from bodypart_router.inference import rotation as rotation_rule
from bodypart_router.inference.classes import CLASS_NAMES
from bodypart_router.inference.classifier import Classifier, ModelLoadError, file_sha256
from bodypart_router.imaging.decode import decode_file
from bodypart_router.inference.modelcard import verify_model
from bodypart_router.imaging.preprocess import to_model_input
from support.tiny_model import MODEL_NAME, TINY_REGION, build, gray_for

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def flat(gray: int) -> np.ndarray:
    return to_model_input(np.full((64, 64), gray, np.uint8))


def with_metadata(source: Path, target: Path, **props: str | None) -> Path:
    """Copy a model, replacing (or with None removing) metadata_props entries."""
    model = onnx.load(str(source))
    current = {p.key: p.value for p in model.metadata_props}
    for key, value in props.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, current)
    onnx.save(model, str(target))
    return target


# ----------------------------------------------------------------------------- tiny model


def test_loads_on_cpu_and_reports_provider_and_version(tiny_model_path: Path) -> None:
    clf = Classifier(tiny_model_path, providers="auto", intra_op_threads=1)
    assert clf.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert clf.model_name == MODEL_NAME
    assert clf.sha256 == file_sha256(tiny_model_path)
    assert clf.version == f"{MODEL_NAME}@{clf.sha256[:12]}"
    assert clf.labels == CLASS_NAMES


def test_predict_batch_keeps_order_and_gives_all_class_scores(tiny_model_path: Path) -> None:
    clf = Classifier(tiny_model_path, providers=["CPUExecutionProvider"])
    wanted = ["spine", "abdominal", "others", "adult_chest", "pediatric_chest", "spine"]
    predictions = clf.predict_batch([flat(gray_for(c)) for c in wanted])
    assert [p.class_name for p in predictions] == wanted
    for p in predictions:
        assert set(p.scores) == set(CLASS_NAMES)
        assert abs(sum(p.scores.values()) - 1.0) < 1e-3
        assert p.score == max(p.scores.values()) > 0.9
    assert clf.predict_batch([]) == []
    assert clf.predict(flat(gray_for("others"))).class_name == "others"


def test_labels_json_beside_the_model_is_used_without_metadata(tiny_model_path: Path, tmp_path: Path) -> None:
    model = with_metadata(tiny_model_path, tmp_path / "m.onnx", labels=None)
    with pytest.raises(ModelLoadError, match="labels"):
        Classifier(model)
    (tmp_path / "labels.json").write_text(json.dumps(list(CLASS_NAMES)))
    assert Classifier(model).labels == CLASS_NAMES


def test_a_model_with_another_class_order_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    swapped = list(CLASS_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    model = with_metadata(tiny_model_path, tmp_path / "m.onnx", labels=json.dumps(swapped))
    with pytest.raises(ModelLoadError, match="expects"):
        Classifier(model)


def test_missing_or_broken_model_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        Classifier(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        Classifier(tmp_path / "junk.onnx")


def test_a_model_without_secondary_outputs_leaves_them_empty(tiny_model_path: Path) -> None:
    p = Classifier(tiny_model_path).predict(flat(gray_for("spine")))
    assert (p.region, p.view, p.rotation, p.inverted) == (None, None, None, None)
    assert not Classifier(tiny_model_path).has_region


def test_secondary_outputs_give_region_view_rotation_and_polarity(tiny_model_with_facts_path: Path) -> None:
    clf = Classifier(tiny_model_with_facts_path)
    assert clf.has_region
    wanted = ["spine", "pediatric_chest", "others"]
    for c, p in zip(wanted, clf.predict_batch([flat(gray_for(c)) for c in wanted]), strict=True):
        assert p.class_name == c
        assert p.region == TINY_REGION[c] and p.region_score == pytest.approx(0.9, abs=0.01)
        assert (p.view, p.rotation, p.inverted) == ("frontal", 0, False)
        assert p.view_score == pytest.approx(0.9, abs=1e-3) and p.rotation_score == pytest.approx(0.97, abs=1e-3)
        assert p.inverted_score == pytest.approx(0.98, abs=1e-3)


def test_a_model_with_another_region_order_is_refused(tmp_path: Path) -> None:
    from bodypart_router.inference.classes import REGION_NAMES

    build(tmp_path / "m.onnx", secondary=True, region_labels=list(reversed(REGION_NAMES)))
    with pytest.raises(ModelLoadError, match="region_probabilities.*expects"):
        Classifier(tmp_path / "m.onnx")


def test_an_unavailable_provider_is_refused(tiny_model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not available"):
        Classifier(tiny_model_path, providers=["NoSuchExecutionProvider"])


# ----------------------------------------------------------------------------- shipped model

EXPECTED_FIXTURE_CLASSES = {
    "chest_mono1.dcm": "adult_chest",
    "chest_mono2_inverse.dcm": "adult_chest",
    "chest_j2k.dcm": "adult_chest",
    "chest.jpg": "adult_chest",
    "tibia_no_meta.dcm": "others",
    "tibia_rescale_voilut.dcm": "others",
    "tibia.png": "others",
}


@pytest.fixture(scope="module")
def shipped(shipped_model_path: Path) -> Classifier:
    return Classifier(shipped_model_path, providers=["CPUExecutionProvider"])


def test_shipped_model_matches_its_card(shipped_model_path: Path) -> None:
    card = shipped_model_path.with_name("MODEL_CARD.md")
    assert verify_model(shipped_model_path, card) == file_sha256(shipped_model_path)
    labels = json.loads(shipped_model_path.with_name("labels.json").read_text())
    assert tuple(labels.get("labels", labels) if isinstance(labels, dict) else labels) == CLASS_NAMES


def test_shipped_model_classifies_the_fixtures(shipped: Classifier, fixtures_dir: Path) -> None:
    names = sorted(EXPECTED_FIXTURE_CLASSES)
    got = shipped.predict_batch([to_model_input(decode_file(fixtures_dir / n).pixels) for n in names])
    assert {n: p.class_name for n, p in zip(names, got)} == {n: EXPECTED_FIXTURE_CLASSES[n] for n in names}


@pytest.mark.parametrize("name", ["chest_mono1.dcm", "tibia_no_meta.dcm"])
def test_resolution_and_aspect_changes_do_not_flip_the_class(shipped: Classifier, fixtures_dir: Path, name: str) -> None:
    pixels = decode_file(fixtures_dir / name).pixels
    h, w = pixels.shape
    variants = {
        "original": pixels,
        "half": cv2.resize(pixels, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "double": cv2.resize(pixels, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC),
        "wide": cv2.resize(pixels, (int(w * 1.4), h), interpolation=cv2.INTER_AREA),
        "tall": cv2.resize(pixels, (w, int(h * 1.4)), interpolation=cv2.INTER_AREA),
        "square": cv2.resize(pixels, (224, 224), interpolation=cv2.INTER_AREA),
    }
    got = shipped.predict_batch([to_model_input(v) for v in variants.values()])
    classes = {k: p.class_name for k, p in zip(variants, got)}
    assert set(classes.values()) == {EXPECTED_FIXTURE_CLASSES[name]}, classes


#: Fixtures whose region the shipped model must name.
EXPECTED_FIXTURE_REGIONS = {"chest_mono1.dcm": "chest", "chest_j2k.dcm": "chest", "chest.jpg": "chest",
                            "tibia_no_meta.dcm": "thigh_knee_leg", "tibia.png": "thigh_knee_leg"}


def test_shipped_model_names_the_region_and_an_upright_frontal_film(shipped: Classifier, fixtures_dir: Path) -> None:
    names = sorted(EXPECTED_FIXTURE_REGIONS)
    got = shipped.predict_batch([to_model_input(decode_file(fixtures_dir / n).pixels) for n in names])
    assert {n: p.region for n, p in zip(names, got)} == EXPECTED_FIXTURE_REGIONS
    chest = got[names.index("chest_mono1.dcm")]
    assert (chest.view, chest.rotation, chest.inverted) == ("frontal", 0, False)


@pytest.mark.parametrize("name", ["chest_mono1.dcm", "chest_j2k.dcm", "chest.jpg"])
def test_turned_and_inverted_copies_are_recognised_and_keep_their_class(
        shipped: Classifier, fixtures_dir: Path, name: str) -> None:
    """A copy turned counter-clockwise by k quarters needs a clockwise turn of 90k degrees."""
    pixels = decode_file(fixtures_dir / name).pixels
    copies = {f"turned {90 * k}": (np.ascontiguousarray(np.rot90(pixels, k)), 90 * k, False) for k in range(4)}
    copies["inverted"] = (255 - pixels, 0, True)
    got = shipped.predict_batch([to_model_input(image) for image, _, _ in copies.values()])
    for (label, (_, rotation, inverted)), p in zip(copies.items(), got, strict=True):
        assert p.class_name == EXPECTED_FIXTURE_CLASSES[name], label
        assert (p.rotation, p.inverted) == (rotation, inverted), label


def test_shipped_model_gives_the_manifest_classes(shipped: Classifier, shared_dicom_dir: Path) -> None:
    """Every shared DICOM with an expected class gets it, except that a film of a kind the model
    never saw (the panoramic dental film) may come out below the minimum score, i.e. uncertain:
    never confidently wrong."""
    from bodypart_router.config import RouterConfig

    with open(shared_dicom_dir / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["expected_class"]]
    got = shipped.predict_batch([to_model_input(decode_file(shared_dicom_dir / r["file"]).pixels) for r in rows])
    wrong = {r["file"]: (r["expected_class"], p.class_name, round(p.score, 3))
             for r, p in zip(rows, got) if p.class_name != r["expected_class"]}
    confidently_wrong = {f: w for f, w in wrong.items() if w[2] >= RouterConfig.minimum_score}
    assert not confidently_wrong, f"expected, got, score: {confidently_wrong}"
    assert set(wrong) <= {"CR-ModalitySequenceLUT.dcm"}, f"expected, got, score: {wrong}"


def test_shrinking_the_arena_keeps_predictions_identical(shipped_model_path) -> None:
    import numpy as np

    from bodypart_router.inference.classifier import Classifier

    classifier = Classifier(shipped_model_path, intra_op_threads=1)
    inputs = [np.random.default_rng(i).random((1, 224, 224), dtype=np.float32) for i in range(3)]
    before = classifier.predict_batch(inputs)
    classifier.shrink_arena()
    assert classifier.predict_batch(inputs) == before


def test_the_tiny_models_view_follows_a_bright_spot(tiny_model_with_facts_path: Path) -> None:
    """The integration tests make a lateral film with a spot (support.dicoms.xray(lateral_spot=True))."""
    from support.dicoms import xray

    clf = Classifier(tiny_model_with_facts_path)
    for spot in (False, True):
        ds = xray(gray_for("pediatric_chest"), lateral_spot=spot)
        pixels = (np.frombuffer(ds.PixelData, np.uint16).reshape(64, 64) // 16).astype(np.uint8)
        p = clf.predict(to_model_input(pixels))
        assert (p.class_name, p.view) == ("pediatric_chest", "lateral" if spot else "frontal")


def test_an_unsure_polarity_is_settled_by_the_films_negative(tmp_path: Path) -> None:
    """A head that finds every bright image somewhat inverted: alone it calls both a film and
    its inverted copy inverted; compared with their negatives, only the copy is."""
    from support.tiny_model import POLARITY_CENTRE, POLARITY_GAIN, build_biased_polarity

    path = tmp_path / "biased.onnx"
    build_biased_polarity(path)
    clf = Classifier(path)

    def alone(mean: float) -> float:
        return 1.0 / (1.0 + np.exp(-POLARITY_GAIN * (mean - POLARITY_CENTRE)))

    film, copy = np.full((1, 224, 224), 0.4, np.float32), np.full((1, 224, 224), 0.6, np.float32)
    assert alone(0.4) > 0.5 and alone(0.6) > 0.5  # the single answers would both say "inverted"
    got_film, got_copy = clf.predict_batch([film, copy])
    assert got_film.inverted is False and got_copy.inverted is True
    assert got_copy.inverted_score == pytest.approx(polarity.paired_inverted(alone(0.6), alone(0.4)), abs=1e-4)
    # a sure first answer is kept as it is, without the negative
    bright = np.full((1, 224, 224), 0.95, np.float32)
    assert alone(0.95) >= polarity.SURE
    assert clf.predict(bright).inverted_score == pytest.approx(alone(0.95), abs=1e-4)


def test_an_unsure_rotation_is_settled_by_the_second_look(tmp_path: Path) -> None:
    """A head that leans towards "upright": alone it calls a film that needs 90 degrees upright
    (unsure); with the second look (the film's negative turned by a quarter) voting too, the
    lean no longer decides."""
    from support.tiny_model import band_film, build_biased_rotation

    path = tmp_path / "biased-rotation.onnx"
    build_biased_rotation(path)
    clf = Classifier(path)
    first = ort_first_answer(path, "rotation_probabilities", band_film("left"))
    assert first.argmax() == 0 and first.max() < rotation_rule.SURE  # alone: "upright", unsure
    got = clf.predict_batch([band_film(w) for w in ("top", "left", "bottom", "right")])
    assert [p.rotation for p in got] == [0, 90, 180, 270]
    # the upright film's first answer is sure, and kept as it is
    upright = ort_first_answer(path, "rotation_probabilities", band_film("top"))
    assert upright.max() >= rotation_rule.SURE and got[0].rotation_score == pytest.approx(upright.max(), abs=1e-5)


def ort_first_answer(path: Path, output: str, model_input: np.ndarray) -> np.ndarray:
    """One output of a model for one input, straight from onnxruntime (no second look)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        [output], {"image": model_input[None]})[0][0]
