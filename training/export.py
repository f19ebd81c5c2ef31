"""Export the trained network as the ONNX model the router serves.

The graph takes ``image`` ``[N,1,224,224]`` (stacked ``to_model_input`` outputs) and returns
``probabilities`` ``[N,5]`` (the calibrated class), plus ``region_probabilities`` ``[N,14]``,
``view_probabilities`` ``[N,2]``, ``rotation_probabilities`` ``[N,4]`` and
``inverted_probabilities`` ``[N,2]``. Gray->RGB, Lite0's normalisation, the ensemble, the
calibration and the softmaxes are inside it so that the serving code has nothing model-specific
to get wrong. The output orders are in the model's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES, ROTATIONS, VIEW_NAMES
from bodypart_router.inference.classifier import file_sha256

from .heads import Ensemble
from .model import EfficientNetLite0, normalise_gray

OPSET = 17
#: Output names, in graph order, and the head each one comes from.
OUTPUTS = (("probabilities", "class"), ("region_probabilities", "region"), ("view_probabilities", "view"),
           ("rotation_probabilities", "rotation"), ("inverted_probabilities", "inverted"))


class ServingModel(torch.nn.Module):
    """Normalisation + frozen backbone + heads ensemble, as exported."""

    def __init__(self, backbone: EfficientNetLite0, ensemble: Ensemble) -> None:
        super().__init__()
        self.backbone = backbone
        self.ensemble = ensemble

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probs = self.ensemble(self.backbone.pooled_features(normalise_gray(image)))
        return tuple(probs[head] for _, head in OUTPUTS)


def export_onnx(backbone: EfficientNetLite0, ensemble: Ensemble, path: Path, model_name: str,
                check_inputs: np.ndarray) -> dict:
    """Write the ONNX file with its metadata and check it against PyTorch on ``check_inputs``.

    Returns facts for the model card: max abs difference, size, sha256. Raises if ONNX Runtime and
    PyTorch disagree by more than 1e-4 on any probability or on any arg-max.
    """
    import onnx
    import onnxruntime as ort

    serving = ServingModel(backbone.eval(), ensemble.eval()).eval()
    names = [name for name, _ in OUTPUTS]
    with torch.no_grad():
        reference = [r.numpy() for r in serving(torch.from_numpy(check_inputs))]
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(serving, torch.zeros(1, 1, 224, 224), str(tmp), input_names=["image"],
                      output_names=names,
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                      opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    for key, value in (("labels", json.dumps(list(CLASS_NAMES))), ("model_name", model_name),
                       ("region_labels", json.dumps(list(REGION_NAMES))), ("view_labels", json.dumps(list(VIEW_NAMES))),
                       ("rotation_labels", json.dumps(list(ROTATIONS)))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{model_name}: X-ray body-part classifier, classes {list(CLASS_NAMES)}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    tmp.unlink()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(names, {"image": check_inputs})
    max_diff = max(float(np.abs(g - r).max()) for g, r in zip(got, reference))
    if max_diff > 1e-4 or any(not np.array_equal(g.argmax(1), r.argmax(1)) for g, r in zip(got, reference)):
        raise RuntimeError(f"ONNX and PyTorch outputs disagree (max abs diff {max_diff:.2e})")
    return {"onnx_vs_torch_max_abs_diff": max_diff, "check_batch": int(len(check_inputs)),
            "opset": OPSET, "size_bytes": path.stat().st_size, "sha256": file_sha256(path)}
