"""The ONNX model behind the router: load it once, check its labels, classify batches.

The model contract (see ``models/MODEL_CARD.md``): input ``image`` float32
``[N, 1, 224, 224]`` made of stacked :func:`~bodypart_router.imaging.preprocess.to_model_input`
outputs, output ``probabilities`` float32 ``[N, 5]`` in ``CLASS_NAMES`` order.
The class order is checked against the model's own ``labels`` metadata (or
``labels.json`` beside it) so that a model trained with another order is
refused instead of silently mislabelling every image.

A model may also have ``region_probabilities``, ``view_probabilities``,
``rotation_probabilities`` and ``inverted_probabilities``; their orders
(``region_labels``, ``view_labels``, ``rotation_labels`` metadata) are checked
the same way. A model without them still serves: those fields are ``None``.
Where the polarity or rotation answer is unsure, a second look at those images (their negatives,
turned by a quarter) is run and the answers combined (:mod:`.second_look`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import polarity, rotation, second_look
from .classes import CLASS_NAMES, REGION_NAMES, ROTATIONS, VIEW_NAMES, SecondaryOutputs
from ..errors import BodyPartRouterError, NotClassifiable, Reason
from ..imaging.preprocess import INPUT_SIZE

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INVERTED_OUTPUT = "inverted_probabilities"
ROTATION_OUTPUT = "rotation_probabilities"
#: Optional outputs: name -> (metadata key of their order, the order this version expects).
SECONDARY_OUTPUTS: dict[str, tuple[str | None, tuple]] = {
    "region_probabilities": ("region_labels", REGION_NAMES),
    "view_probabilities": ("view_labels", VIEW_NAMES),
    ROTATION_OUTPUT: ("rotation_labels", ROTATIONS),
    INVERTED_OUTPUT: (None, (False, True)),
}


class ModelLoadError(BodyPartRouterError, RuntimeError):
    """The model file is missing, unreadable or does not follow the model contract."""


@dataclass(frozen=True)
class Prediction(SecondaryOutputs):
    """The class of one image, its probability and all class probabilities."""

    class_name: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Classifier:
    """An onnxruntime session for the body-part model.

    ``providers="auto"`` uses CUDA when the installed onnxruntime has it (the
    optional ``onnxruntime-gpu`` install) and falls back to CPU; ``provider``
    tells which one is actually in use. ``intra_op_threads`` bounds the
    threads of one inference (None lets onnxruntime use every core).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        providers: str | Sequence[str] = "auto",
        intra_op_threads: int | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} not found; set --model or $BODYPART_ROUTER_MODEL")
        self.path = path
        # Hashed and loaded from the same bytes, so the hash is that of the model that runs.
        model_bytes = path.read_bytes()
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if intra_op_threads is not None:
            options.intra_op_num_threads = max(1, int(intra_op_threads))
        # Idle pool threads must not busy-wait: in Orthanc they would take a core from ingest.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no provider chatter in the host's log
        try:
            self._session = ort.InferenceSession(model_bytes, sess_options=options,
                                                 providers=_choose_providers(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        del model_bytes
        self.provider: str = self._session.get_providers()[0]
        meta = self._session.get_modelmeta().custom_metadata_map
        self.model_name: str = meta.get("model_name") or path.stem
        self.version: str = f"{self.model_name}@{self.sha256[:12]}"
        self.labels: tuple[str, ...] = _read_labels(path, meta)
        if self.labels != CLASS_NAMES:
            raise ModelLoadError(
                f"{path} outputs classes {list(self.labels)} but this version of bodypart-router expects "
                f"{list(CLASS_NAMES)}; use a model exported for this version"
            )
        self._check_io()
        self.secondary: tuple[str, ...] = self._check_secondary(meta)
        self._outputs = [OUTPUT_NAME, *self.secondary]

    def _check_secondary(self, meta: dict[str, str]) -> tuple[str, ...]:
        """The optional outputs this model has, after checking their orders against this version's."""
        present = {o.name for o in self._session.get_outputs()}
        found = []
        for name, (key, expected) in SECONDARY_OUTPUTS.items():
            if name not in present:
                continue
            if key is not None:
                try:
                    order = tuple(json.loads(meta.get(key, "null")) or ())
                except json.JSONDecodeError as exc:
                    raise ModelLoadError(f"{self.path} metadata {key!r} is not valid JSON: {exc}") from exc
                if order != tuple(expected):
                    raise ModelLoadError(f"{self.path} output {name!r} is in order {list(order)} (metadata {key!r}) but "
                                         f"this version of bodypart-router expects {list(expected)}")
            found.append(name)
        return tuple(found)

    @property
    def has_region(self) -> bool:
        return "region_probabilities" in self.secondary

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelLoadError(
                f"{self.path} must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}; "
                f"it has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
            )
        shape = inputs[INPUT_NAME].shape
        if len(shape) != 4 or list(shape[1:]) != [1, INPUT_SIZE, INPUT_SIZE]:
            raise ModelLoadError(f"{self.path} input {INPUT_NAME!r} has shape {shape}, expected [N, 1, {INPUT_SIZE}, {INPUT_SIZE}]")

    def predict_batch(self, inputs: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify ``(1, 224, 224)`` float32 arrays from ``to_model_input`` in one run."""
        if not inputs:
            return []
        batch = np.stack([np.asarray(x, dtype=np.float32) for x in inputs])
        try:
            results = self._session.run(self._outputs, {INPUT_NAME: batch})
        except Exception as exc:
            raise NotClassifiable(Reason.MODEL_ERROR, f"onnxruntime failed on a batch of {len(inputs)}: {exc}") from exc
        arrays = {name: np.asarray(r, dtype=np.float64) for name, r in zip(self._outputs, results, strict=True)}
        self._second_looks(batch, arrays)
        return [self._prediction({name: a[k] for name, a in arrays.items()}) for k in range(len(inputs))]

    def _second_looks(self, batch: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Settle unsure polarity and rotation answers in ``arrays`` with one more run, on the
        second-look images (:mod:`.second_look`) of the films that need one."""
        p_inverted = arrays[INVERTED_OUTPUT][:, 1] if INVERTED_OUTPUT in arrays else None
        ask = np.flatnonzero(second_look.needed(p_inverted, arrays.get(ROTATION_OUTPUT)))
        if not len(ask):
            return
        wanted = [name for name in (INVERTED_OUTPUT, ROTATION_OUTPUT) if name in arrays]
        try:
            answers = self._session.run(wanted, {INPUT_NAME: second_look.image(batch[ask])})
        except Exception as exc:
            raise NotClassifiable(Reason.MODEL_ERROR,
                                  f"onnxruntime failed on the second look at {len(ask)} images: {exc}") from exc
        for name, answer in zip(wanted, answers, strict=True):
            look = np.zeros_like(arrays[name])
            look[ask] = np.asarray(answer, dtype=np.float64)
            if name == INVERTED_OUTPUT:
                p = polarity.decide(arrays[name][:, 1], look[:, 1])
                arrays[name] = np.stack([1.0 - p, p], axis=1)
            else:
                arrays[name] = rotation.decide(arrays[name], look)

    def shrink_arena(self) -> None:
        """Hand the free chunks of onnxruntime's CPU memory arena back (one 1-image inference, ~20 ms).

        The arena grows to fit every batch size it has seen and keeps that memory (hundreds of
        MB; ``docs/decisions.md``, "Memory"). Call it when idle, not between batches (the next
        batch would grow the arena again).
        """
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        blank = np.zeros((1, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        try:
            self._session.run(self._outputs, {INPUT_NAME: blank}, options)
        except Exception:  # e.g. a provider without a CPU arena: nothing to give back
            pass

    def predict(self, model_input: np.ndarray) -> Prediction:
        """Classify one ``(1, 224, 224)`` array."""
        return self.predict_batch([model_input])[0]

    def _prediction(self, rows: dict[str, np.ndarray]) -> Prediction:
        row = rows[OUTPUT_NAME]
        best = int(np.argmax(row))
        scores = {name: round(float(p), 6) for name, p in zip(self.labels, row)}
        extra: dict[str, Any] = {}
        for name, (field_name, order) in (("region_probabilities", ("region", REGION_NAMES)),
                                          ("view_probabilities", ("view", VIEW_NAMES)),
                                          (ROTATION_OUTPUT, ("rotation", ROTATIONS)),
                                          (INVERTED_OUTPUT, ("inverted", (False, True)))):
            if name in rows:
                k = int(np.argmax(rows[name]))
                extra[field_name] = order[k]
                extra[f"{field_name}_score"] = round(float(rows[name][k]), 6)
        return Prediction(class_name=self.labels[best], score=round(float(row[best]), 6), scores=scores, **extra)


def _choose_providers(providers: str | Sequence[str]) -> list[str]:
    available = ort.get_available_providers()
    if providers == "auto":
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
        return chosen + ["CPUExecutionProvider"]
    wanted = [providers] if isinstance(providers, str) else list(providers)
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ModelLoadError(f"execution provider(s) {missing} not available; this onnxruntime has {available}")
    return wanted


def _read_labels(path: Path, meta: dict[str, str]) -> tuple[str, ...]:
    """Class order from the model's ``labels`` metadata, else from ``labels.json`` beside it."""
    if "labels" in meta:
        source, text = f"{path} metadata 'labels'", meta["labels"]
    else:
        labels_file = path.with_name("labels.json")
        if not labels_file.is_file():
            raise ModelLoadError(f"{path} has no 'labels' metadata and there is no {labels_file}")
        source, text = str(labels_file), labels_file.read_text(encoding="utf-8")
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{source} is not valid JSON: {exc}") from exc
    if isinstance(labels, dict):  # {"labels": [...]} or {"0": "abdominal", ...}
        labels = labels.get("labels", [labels[k] for k in sorted(labels, key=lambda k: int(k))] if all(
            str(k).isdigit() for k in labels) else None)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ModelLoadError(f"{source} must be a JSON list of class names")
    return tuple(labels)
