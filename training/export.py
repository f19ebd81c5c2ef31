"""Export the trained network as the ONNX model the router serves.

The graph takes ``image`` ``[N,1,224,224]`` (stacked ``to_model_input`` outputs) and returns
``probabilities`` ``[N,5]``; gray->RGB, Lite0's normalisation and the softmax are inside it so that
the serving code has nothing model-specific to get wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bodypart_router.classes import CLASS_NAMES
from bodypart_router.classifier import file_sha256

from .model import EfficientNetLite0, normalise_gray

OPSET = 17


class ServingModel(torch.nn.Module):
    """Normalisation + network + softmax, as exported."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.net(normalise_gray(image)), dim=1)


def export_onnx(net: EfficientNetLite0, path: Path, model_name: str, check_inputs: np.ndarray) -> dict:
    """Write the ONNX file with its metadata and check it against PyTorch on ``check_inputs``.

    Returns facts for the model card: max abs difference, size, sha256. Raises if ONNX Runtime and
    PyTorch disagree by more than 1e-4 on any probability or on any arg-max.
    """
    import onnx
    import onnxruntime as ort

    serving = ServingModel(net).eval()
    with torch.no_grad():
        reference = serving(torch.from_numpy(check_inputs)).numpy()
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(serving, torch.zeros(1, 1, 224, 224), str(tmp), input_names=["image"],
                      output_names=["probabilities"],
                      dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
                      opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    for key, value in (("labels", json.dumps(list(CLASS_NAMES))), ("model_name", model_name)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{model_name}: X-ray body-part classifier, classes {list(CLASS_NAMES)}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    tmp.unlink()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": check_inputs})[0]
    max_diff = float(np.abs(got - reference).max())
    if max_diff > 1e-4 or not np.array_equal(got.argmax(1), reference.argmax(1)):
        raise RuntimeError(f"ONNX and PyTorch outputs disagree (max abs diff {max_diff:.2e})")
    return {"onnx_vs_torch_max_abs_diff": max_diff, "check_batch": int(len(check_inputs)),
            "opset": OPSET, "size_bytes": path.stat().st_size, "sha256": file_sha256(path)}
