"""A tiny ONNX model with the shipped model's I/O contract, whose answer the tests control.

Input ``image`` float32 [N,1,224,224], output ``probabilities`` float32 [N,5] (softmax, in
``CLASS_NAMES`` order), ``labels`` and ``model_name`` in metadata_props, opset 17, dynamic
batch. The class is chosen by the image's mean gray level: class *k* wins around
``CENTERS[k]``. :func:`bodypart_router.imaging.preprocess.to_model_input` leaves a flat image at
``value / 255``, so :func:`gray_for` gives the pixel value that makes a flat image come out
as a given class with a score near 1, and :data:`UNCERTAIN_GRAY` sits halfway between
two classes (score about 0.5).

With ``secondary=True`` it also has the trained model's optional outputs
(``region_probabilities``, ``view_probabilities``, ``rotation_probabilities``,
``inverted_probabilities``): the region is a fixed function of the class (see
:data:`TINY_REGION`), the film upright and correctly polarised, and the view ``frontal``, or
``lateral`` when the image carries a small bright spot (:func:`support.dicoms.xray` with
``lateral_spot=True``: its brightest pixel at least :data:`LATERAL_SPOT_RISE` above the mean).

This lets the integration tests check routing and forwarding without the trained model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES, ROTATIONS, VIEW_NAMES

CENTERS = np.array([0.1, 0.3, 0.5, 0.7, 0.9], dtype=np.float32)
SHARPNESS = 400.0
MODEL_NAME = "tiny-test-model"


def gray_for(class_name: str) -> int:
    """Pixel value of a flat image that the tiny model assigns to ``class_name`` (score > 0.99)."""
    return int(round(float(CENTERS[CLASS_NAMES.index(class_name)]) * 255))


#: Halfway between abdominal and adult_chest: a top score of about 0.5.
UNCERTAIN_GRAY = int(round(0.2 * 255))


#: Region the tiny model gives each class (with ``secondary=True``).
TINY_REGION = {"abdominal": "abdomen", "adult_chest": "chest", "pediatric_chest": "chest",
               "spine": "lumbar_spine", "others": "hand_wrist"}
#: Its view probabilities for a flat image (frontal); a bright spot makes it lateral.
TINY_VIEW = (0.9, 0.1)
#: How far above the image's mean (on the 0-1 model input) its brightest pixel must be for ``lateral``.
LATERAL_SPOT_RISE = 0.15
TINY_ROTATION = (0.97, 0.01, 0.01, 0.01)
TINY_INVERTED = (0.98, 0.02)


def _secondary_matrices() -> dict[str, np.ndarray]:
    """``class probabilities @ M`` -> each secondary output (rows of M sum to 1)."""
    region = np.zeros((5, len(REGION_NAMES)), dtype=np.float32)
    for k, c in enumerate(CLASS_NAMES):
        region[k] = 0.1 / (len(REGION_NAMES) - 1)
        region[k, REGION_NAMES.index(TINY_REGION[c])] = 0.9
    return {"region_probabilities": region,
            "rotation_probabilities": np.tile(np.array(TINY_ROTATION, np.float32), (5, 1)),
            "inverted_probabilities": np.tile(np.array(TINY_INVERTED, np.float32), (5, 1))}


def build(path: Path, secondary: bool = False, region_labels: list[str] | None = None) -> str:
    """Write the model to ``path``; returns its SHA-256. ``region_labels`` overrides the order
    written in the metadata (to test that a wrong order is refused)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(CENTERS.reshape(1, 5), "centers"),
        numpy_helper.from_array(np.array([-SHARPNESS], dtype=np.float32), "neg_sharpness"),
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean4"], axes=[1, 2, 3], keepdims=1),  # [N,1,1,1]
        helper.make_node("Reshape", ["mean4", "flat_shape"], ["mean"]),                   # [N,1]
        helper.make_node("Sub", ["mean", "centers"], ["diff"]),                           # [N,5]
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("Mul", ["sq", "neg_sharpness"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])]
    props = {"labels": json.dumps(list(CLASS_NAMES)), "model_name": MODEL_NAME}
    if secondary:
        for name, matrix in _secondary_matrices().items():
            inits.append(numpy_helper.from_array(matrix, f"{name}_m"))
            nodes.append(helper.make_node("MatMul", ["probabilities", f"{name}_m"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", matrix.shape[1]]))
        # view: lateral logit = 50 * (max - mean - rise), frontal logit = log(0.9/0.1) for a flat image
        inits += [numpy_helper.from_array(np.array([-LATERAL_SPOT_RISE], np.float32), "spot_rise"),
                  numpy_helper.from_array(np.array([50.0], np.float32), "spot_gain"),
                  numpy_helper.from_array(np.array([np.log(TINY_VIEW[0] / TINY_VIEW[1]) - 50 * LATERAL_SPOT_RISE],
                                                   np.float32), "frontal_bias")]
        nodes += [
            helper.make_node("ReduceMax", ["image"], ["max4"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["max4", "flat_shape"], ["max"]),
            helper.make_node("Sub", ["max", "mean"], ["rise"]),
            helper.make_node("Add", ["rise", "spot_rise"], ["excess"]),
            helper.make_node("Mul", ["excess", "spot_gain"], ["lateral_logit"]),
            helper.make_node("Mul", ["rise", "neg_sharpness"], ["rise0"]),  # shape [N,1] ...
            helper.make_node("Sub", ["rise0", "rise0"], ["zeros"]),          # ... of zeros
            helper.make_node("Add", ["zeros", "frontal_bias"], ["frontal_logit"]),
            helper.make_node("Concat", ["frontal_logit", "lateral_logit"], ["view_logits"], axis=1),
            helper.make_node("Softmax", ["view_logits"], ["view_probabilities"], axis=1),
        ]
        outputs.append(helper.make_tensor_value_info("view_probabilities", TensorProto.FLOAT, ["N", 2]))
        props.update(region_labels=json.dumps(region_labels or list(REGION_NAMES)),
                     view_labels=json.dumps(list(VIEW_NAMES)), rotation_labels=json.dumps(list(ROTATIONS)))
    graph = helper.make_graph(
        nodes,
        "tiny_bodypart",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 224, 224])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bodypart-router-tests")
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


#: The biased polarity head of :func:`build_biased_polarity`: log-odds of "inverted" are
#: ``POLARITY_GAIN * (mean - POLARITY_CENTRE)`` of the model input.
POLARITY_GAIN = 6.0
POLARITY_CENTRE = 0.3


def build_biased_polarity(path: Path) -> None:
    """The tiny class model plus a polarity head biased the way a film from an unfamiliar
    hospital can make the real one: every bright enough image looks somewhat inverted, so the
    film and its negative both do, and only comparing the two tells them apart."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    build(path)
    model = onnx.load(str(path))
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(np.array([-POLARITY_CENTRE], np.float32), "pol_centre"),
                          numpy_helper.from_array(np.array([POLARITY_GAIN], np.float32), "pol_gain"),
                          numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "pol_select")])
    g.node.extend([
        helper.make_node("Add", ["mean", "pol_centre"], ["pol_shift"]),
        helper.make_node("Mul", ["pol_shift", "pol_gain"], ["pol_logit"]),        # [N,1]
        helper.make_node("Mul", ["pol_logit", "pol_select"], ["pol_logits"]),     # [N,2]: 0, logit
        helper.make_node("Softmax", ["pol_logits"], ["inverted_probabilities"], axis=1),
    ])
    g.output.append(helper.make_tensor_value_info("inverted_probabilities", TensorProto.FLOAT, ["N", 2]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


#: The biased rotation head of :func:`build_biased_rotation`: logits ``ROTATION_GAIN`` x how far
#: the mean of the top, left, bottom and right strips (``ROTATION_STRIP`` pixels wide) stands from
#: the image's mean, either way (so that a negative gives the same answer), plus ``ROTATION_BIAS``
#: for "upright".
ROTATION_GAIN = 10.0
ROTATION_BIAS = 2.0
ROTATION_STRIP = 20


def build_biased_rotation(path: Path) -> None:
    """The tiny class model plus a rotation head that reads where a bright band is (top: upright;
    left: needs 90 degrees clockwise; bottom: 180; right: 270), bright or dark alike, but leans
    towards "upright", the way the real head leans on films whose upright it learned from few
    examples: a faint band on the left comes out "upright", unsure."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    build(path)
    model = onnx.load(str(path))
    g = model.graph
    s, n = ROTATION_STRIP, 224
    strips = {"top": (2, 0, s), "left": (3, 0, s), "bottom": (2, n - s, n), "right": (3, n - s, n)}
    for name, (axis, lo, hi) in strips.items():
        g.initializer.extend([numpy_helper.from_array(np.array([lo], np.int64), f"rot_{name}_lo"),
                              numpy_helper.from_array(np.array([hi], np.int64), f"rot_{name}_hi"),
                              numpy_helper.from_array(np.array([axis], np.int64), f"rot_{name}_axis")])
        g.node.extend([
            helper.make_node("Slice", ["image", f"rot_{name}_lo", f"rot_{name}_hi", f"rot_{name}_axis"], [f"rot_{name}"]),
            helper.make_node("ReduceMean", [f"rot_{name}"], [f"rot_{name}_m4"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", [f"rot_{name}_m4", "flat_shape"], [f"rot_{name}_raw"]),
            helper.make_node("Sub", [f"rot_{name}_raw", "mean"], [f"rot_{name}_d"]),
            helper.make_node("Abs", [f"rot_{name}_d"], [f"rot_{name}_m"]),
        ])
    g.initializer.extend([numpy_helper.from_array(np.array([ROTATION_GAIN], np.float32), "rot_gain"),
                          numpy_helper.from_array(np.array([ROTATION_BIAS, 0, 0, 0], np.float32), "rot_bias")])
    g.node.extend([
        helper.make_node("Concat", [f"rot_{k}_m" for k in strips], ["rot_means"], axis=1),
        helper.make_node("Mul", ["rot_means", "rot_gain"], ["rot_scaled"]),
        helper.make_node("Add", ["rot_scaled", "rot_bias"], ["rot_logits"]),
        helper.make_node("Softmax", ["rot_logits"], ["rotation_probabilities"], axis=1),
    ])
    g.output.append(helper.make_tensor_value_info("rotation_probabilities", TensorProto.FLOAT, ["N", 4]))
    props = {p.key: p.value for p in model.metadata_props}
    props["rotation_labels"] = json.dumps(list(ROTATIONS))
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def band_film(where: str, level: float = 0.5, background: float = 0.3) -> np.ndarray:
    """A ``(1, 224, 224)`` model input with a band of ``level`` along one edge."""
    x = np.full((1, 224, 224), background, np.float32)
    s = ROTATION_STRIP
    {"top": lambda: x[:, :s, :].fill(level), "left": lambda: x[:, :, :s].fill(level),
     "bottom": lambda: x[:, -s:, :].fill(level), "right": lambda: x[:, :, -s:].fill(level)}[where]()
    return x
