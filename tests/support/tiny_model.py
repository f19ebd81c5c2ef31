"""A tiny ONNX model with the shipped model's I/O contract, whose answer the tests control.

Input ``image`` float32 [N,1,224,224], output ``probabilities`` float32 [N,5] (softmax, in
``CLASS_NAMES`` order), ``labels`` and ``model_name`` in metadata_props, opset 17, dynamic
batch. The class is chosen by the image's mean gray level: class *k* wins around
``CENTERS[k]``. :func:`bodypart_router.preprocess.to_model_input` leaves a flat image at
``value / 255``, so :func:`gray_for` gives the pixel value that makes a flat image come out
as a given class with a score near 1, and :data:`UNCERTAIN_GRAY` sits halfway between
two classes (score about 0.5).

This lets the integration tests check routing and forwarding without the trained model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from bodypart_router.classes import CLASS_NAMES

CENTERS = np.array([0.1, 0.3, 0.5, 0.7, 0.9], dtype=np.float32)
SHARPNESS = 400.0
MODEL_NAME = "tiny-test-model"


def gray_for(class_name: str) -> int:
    """Pixel value of a flat image that the tiny model assigns to ``class_name`` (score > 0.99)."""
    return int(round(float(CENTERS[CLASS_NAMES.index(class_name)]) * 255))


#: Halfway between abdominal and adult_chest: a top score of about 0.5.
UNCERTAIN_GRAY = int(round(0.2 * 255))


def build(path: Path) -> str:
    """Write the model to ``path``; returns its SHA-256."""
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
    graph = helper.make_graph(
        nodes,
        "tiny_bodypart",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bodypart-router-tests")
    model.ir_version = 8
    helper.set_model_props(model, {"labels": json.dumps(list(CLASS_NAMES)), "model_name": MODEL_NAME})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
