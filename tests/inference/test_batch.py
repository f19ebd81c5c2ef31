"""The one batch path: every source gets an outcome, failures become states with their
tracebacks logged, and the command line and the plugin's engine agree."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bodypart_router.inference.batch import Prepared, classify_batches, prepare
from bodypart_router.inference.classifier import Classifier
from bodypart_router.imaging.decode import decode_file
from bodypart_router.inference.engine import classify_sources
from bodypart_router.errors import NotClassifiable, Reason
from bodypart_router.inference.pipeline import classify_paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _raise(exc: BaseException):  # type: ignore[no-untyped-def]
    def decode():  # type: ignore[no-untyped-def]
        raise exc
    return decode


def test_prepare_turns_every_failure_into_a_reason(fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    ok = prepare(lambda: decode_file(fixtures_dir / "chest_mono1.dcm"))
    assert ok.model_input is not None and ok.model_input.shape == (1, 224, 224) and ok.error is None
    refused = prepare(_raise(NotClassifiable(Reason.EMPTY_FILE, "the file is empty (0 bytes)")))
    assert refused.error is not None and refused.error.state == "failed:empty-file"
    gone = prepare(_raise(FileNotFoundError(2, "No such file or directory")))
    assert gone.retry is not None and gone.error is None and gone.model_input is None
    with caplog.at_level(logging.ERROR, logger="bodypart_router"):
        huge = prepare(_raise(MemoryError()))
        bug = prepare(_raise(AttributeError("'NoneType' object has no attribute 'pixels'")), "source 2 of 3")
    assert huge.error is not None and huge.error.state == "failed:image-too-large"
    assert bug.error is not None and bug.error.state == "failed:undecodable-pixels" and "NoneType" in bug.error.detail
    bug_records = [r for r in caplog.records if "source 2 of 3" in r.getMessage()]
    assert len(bug_records) == 1 and bug_records[0].exc_info is not None  # the traceback is logged


class Model:
    """Records each batch it is given; answers with a real classifier, or raises ``error``."""

    def __init__(self, classifier: Classifier, error: BaseException | None = None) -> None:
        self.classifier, self.error, self.batches = classifier, error, []

    def predict_batch(self, inputs):  # type: ignore[no-untyped-def]
        self.batches.append(len(inputs))
        if self.error is not None:
            raise self.error
        return self.classifier.predict_batch(inputs)


def _ready() -> Prepared:
    return Prepared(model_input=np.zeros((1, 224, 224), np.float32))


def test_batches_of_ready_inputs_in_order_with_failures_in_place(tiny_model_path: Path) -> None:
    model = Model(Classifier(tiny_model_path))
    failed = Prepared(error=NotClassifiable(Reason.NOT_DICOM, "x"))
    sources = [("a", _ready()), ("b", failed), ("c", _ready()), ("d", _ready()), ("e", Prepared(retry="gone"))]
    runs: list[int] = []
    out = list(classify_batches(sources, model, batch_size=2, before_inference=lambda: runs.append(1)))
    assert [k for k, _ in out] == ["a", "b", "c", "d", "e"]
    assert model.batches == [2, 1] and len(runs) == 2
    assert [item.prediction is not None for _, item in out] == [True, False, True, True, False]
    assert out[1][1].error is failed.error and out[4][1].retry == "gone"


@pytest.mark.parametrize("error, detail", [(RuntimeError("session lost"), "session lost"),
                                           (NotClassifiable(Reason.MODEL_ERROR, "onnxruntime failed"),
                                            "onnxruntime failed")])
def test_a_failing_model_fails_its_batch_only(tiny_model_path: Path, error: BaseException, detail: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    model = Model(Classifier(tiny_model_path), error)
    failed = Prepared(error=NotClassifiable(Reason.NOT_DICOM, "x"))
    with caplog.at_level(logging.ERROR, logger="bodypart_router"):
        out = [item for _, item in classify_batches([(0, _ready()), (1, failed), (2, _ready())], model, 8)]
    assert [i.error.state for i in out] == ["failed:model-error", "skipped:not-dicom", "failed:model-error"]
    assert detail in out[0].error.detail
    assert any(r.exc_info for r in caplog.records)


def test_command_line_and_engine_give_a_decoder_bug_the_same_state(
        fixtures_dir: Path, tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the batch path was shared, the command line crashed where the plugin recorded a state."""
    from bodypart_router.imaging import decode as decode

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise IndexError("list index out of range")

    monkeypatch.setattr(decode, "decode_dicom", broken)
    monkeypatch.setattr("bodypart_router.inference.pipeline.decode_file", broken)
    path = fixtures_dir / "chest_mono1.dcm"
    classifier = Classifier(tiny_model_path)
    (from_cli,) = classify_paths([path], classifier)
    (from_engine,) = classify_sources([str(path)], classifier, None).outcomes
    assert from_cli.error is not None
    assert from_cli.error.state == from_engine.state == "failed:undecodable-pixels"
    assert from_cli.error.detail == from_engine.detail
