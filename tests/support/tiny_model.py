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
