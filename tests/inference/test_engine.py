"""The classification engine, in this process and in a child process: same outcomes, and a
child that dies on a file fails that file only."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from bodypart_router.inference.engine import (CRASH_DETAIL, ChildEngine, EngineStartError, LocalEngine, classify_sources,
                                    python_for_child)

FILES = ["chest_mono1.dcm", "chest_j2k.dcm", "chest_jpegls.dcm", "tibia_rescale_voilut.dcm"]


@pytest.fixture(scope="module")
def child(shipped_model_path: Path):
    python = python_for_child(sys.prefix)
    assert python is not None
    engine = ChildEngine(shipped_model_path, python=python)
    yield engine
    engine.close()


def _summary(outcomes):
    return [(o.class_name, round(o.score, 5), o.state) for o in outcomes]


def test_python_for_child_prefers_the_configured_environment() -> None:
    assert python_for_child(sys.prefix) == str(Path(sys.prefix) / "bin" / "python")


def test_child_and_local_engines_agree(child: ChildEngine, shipped_model_path: Path, fixtures_dir: Path) -> None:
    paths = [str(fixtures_dir / f) for f in FILES]
    local = LocalEngine(shipped_model_path).classify(paths)
    remote = child.classify(paths)
    assert _summary(remote.outcomes) == _summary(local.outcomes)
    assert all(o.classified for o in remote.outcomes)
    assert all(o.decode_seconds > 0 for o in remote.outcomes)
    assert child.info == LocalEngine(shipped_model_path).info


def test_what_the_child_logs_is_logged_here_with_its_traceback(child: ChildEngine, fixtures_dir: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The child has no log of its own: its records reach this process's loggers (and so
    Orthanc's log), tracebacks included."""
    broken = bytearray((fixtures_dir / "chest_jpegls.dcm").read_bytes())
    broken[-1000:-950] = bytes(50)  # the header is fine, the JPEG-LS stream is not
    with caplog.at_level(logging.INFO, logger="bodypart_router"):
        (outcome,) = child.classify([bytes(broken)]).outcomes
    assert outcome.state == "failed:undecodable-pixels"
    (record,) = [r for r in caplog.records if outcome.state in r.getMessage()]
    assert record.process != os.getpid()  # logged in the child
    assert record.exc_text and record.exc_text.startswith("Traceback (most recent call last):")


def test_paths_and_bytes_give_the_same_result(child: ChildEngine, fixtures_dir: Path) -> None:
    path = fixtures_dir / FILES[0]
    by_path, by_bytes = child.classify([str(path), path.read_bytes()]).outcomes
    assert _summary([by_path]) == _summary([by_bytes])


def test_bad_input_gets_a_reason_and_the_rest_is_classified(child: ChildEngine, fixtures_dir: Path,
                                                            tmp_path: Path) -> None:
    good = str(fixtures_dir / FILES[0])
    outcomes = child.classify([b"not a dicom file", str(tmp_path / "gone.dcm"), good]).outcomes
    assert outcomes[0].state is not None and outcomes[0].state.startswith("skipped:")
    assert outcomes[1].state == "retry" and "gone.dcm" in outcomes[1].detail
    assert outcomes[2].classified


def _reader_blocked_on(fifo: Path) -> int:
    """Wait until a child opened ``fifo`` for reading; returns a writer fd held open, so the
    child stays blocked in its read until the fd is written to or closed."""
    deadline = time.monotonic() + 300  # a fresh child loads the model first: slow on a busy machine
    while True:  # a FIFO can be opened for writing without blocking only once a reader has it open
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert time.monotonic() < deadline, "no child opened the FIFO"
            time.sleep(0.05)


def _gone(pid: int) -> None:
    """Wait until a killed child is reaped by the engine: only then are its files (the FIFO's
    read end) surely closed. A killed multi-threaded process shows as a zombie, with
    ``/proc/PID/fd`` unreadable, while its other threads still hold the files."""
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"process {pid} was not reaped"
        time.sleep(0.02)


def _kill_while_reading(engine: ChildEngine, fifo: Path) -> int:
    fd = _reader_blocked_on(fifo)
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _gone(pid)
    os.close(fd)
    return pid


def test_a_file_that_takes_the_child_down_twice_is_failed_and_only_it(shipped_model_path: Path,
                                                                      fixtures_dir: Path, tmp_path: Path) -> None:
    engine = ChildEngine(shipped_model_path, python=python_for_child(sys.prefix) or "")
    try:
        fifo = tmp_path / "blocks.dcm"
        os.mkfifo(fifo)  # reading it blocks the child until we kill it
        good = str(fixtures_dir / FILES[0])
        result: list = []
        worker = threading.Thread(target=lambda: result.append(engine.classify([good, str(fifo), good])))
        worker.start()
        first = _kill_while_reading(engine, fifo)    # in the batch: retried alone
        second = _kill_while_reading(engine, fifo)   # alone, a second time: its fault
        worker.join(600)
        outcomes = result[0].outcomes
        assert outcomes[0].classified and outcomes[2].classified
        assert outcomes[1].state == "failed:undecodable-pixels" and outcomes[1].detail == CRASH_DETAIL
        assert engine.restarts >= 2 and engine.pid not in (None, first, second)
    finally:
        engine.close()


def test_a_file_being_decoded_when_the_child_is_killed_once_is_classified(shipped_model_path: Path,
                                                                         fixtures_dir: Path, tmp_path: Path) -> None:
    """kill -9, the OOM killer: the file in hand is not to blame for one death."""
    engine = ChildEngine(shipped_model_path, python=python_for_child(sys.prefix) or "")
    try:
        fifo = tmp_path / "innocent.dcm"
        os.mkfifo(fifo)
        good = fixtures_dir / FILES[0]
        result: list = []
        worker = threading.Thread(target=lambda: result.append(engine.classify([str(good), str(fifo), str(good)])))
        worker.start()
        _kill_while_reading(engine, fifo)
        fd = _reader_blocked_on(fifo)  # a fresh child reads it again, alone: this time it gets the file
        os.set_blocking(fd, True)
        os.write(fd, good.read_bytes())
        os.close(fd)
        worker.join(600)
        outcomes = result[0].outcomes
        assert [o.classified for o in outcomes] == [True, True, True], [o.state for o in outcomes]
    finally:
        engine.close()


def test_a_restarted_child_refuses_a_model_swapped_since_start_up(shipped_model_path: Path, tiny_model_path: Path,
                                                                  fixtures_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(shipped_model_path.read_bytes())
    engine = ChildEngine(model, python=python_for_child(sys.prefix) or "")
    try:
        model.write_bytes(tiny_model_path.read_bytes())  # swapped while running
        pid = engine.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with pytest.raises(EngineStartError, match="has changed since Orthanc started"):
            engine.classify([str(fixtures_dir / FILES[0])])
        model.unlink()  # deleted: refused as well, never a failed instance
        with pytest.raises(EngineStartError):
            engine.classify([str(fixtures_dir / FILES[0])])
        model.write_bytes(shipped_model_path.read_bytes())  # restored: works again
        assert engine.classify([str(fixtures_dir / FILES[0])]).outcomes[0].classified
    finally:
        engine.close()


def test_a_child_killed_while_idle_is_replaced_without_failing_the_next_batch(shipped_model_path: Path,
                                                                             fixtures_dir: Path) -> None:
    engine = ChildEngine(shipped_model_path, python=python_for_child(sys.prefix) or "")
    try:
        first_pid = engine.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        os.waitpid(first_pid, 0)
        outcomes = engine.classify([str(fixtures_dir / f) for f in FILES[:2]]).outcomes
        assert all(o.classified for o in outcomes)
        assert engine.restarts == 1 and engine.pid not in (None, first_pid)
    finally:
        engine.close()


def test_after_shutdown_work_comes_back_to_be_retried(shipped_model_path: Path, fixtures_dir: Path) -> None:
    engine = ChildEngine(shipped_model_path, python=python_for_child(sys.prefix) or "")
    process_pid = engine.pid
    engine.shutdown()
    outcomes = engine.classify([str(fixtures_dir / FILES[0])]).outcomes
    assert [o.state for o in outcomes] == ["retry"]
    engine.close()
    assert engine.pid is None
    with pytest.raises(ProcessLookupError):
        assert process_pid is not None
        os.kill(process_pid, 0)


def test_a_child_that_cannot_load_the_model_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EngineStartError, match="could not load the model.*not a loadable ONNX model"):
        ChildEngine(bad, python=python_for_child(sys.prefix) or "")


def test_an_interpreter_that_is_not_python_is_reported(tmp_path: Path, shipped_model_path: Path) -> None:
    with pytest.raises(EngineStartError, match="did not start"):
        ChildEngine(shipped_model_path, python="/bin/true")
    with pytest.raises(EngineStartError, match="cannot run"):
        ChildEngine(shipped_model_path, python=str(tmp_path / "no-such-python"))


def test_classify_sources_reports_progress_and_a_model_failure(fixtures_dir: Path) -> None:
    class Broken:
        def predict_batch(self, inputs):
            raise RuntimeError("session lost")

    seen: list[int] = []
    result = classify_sources([str(fixtures_dir / FILES[0])], Broken(), None, on_item=seen.append)
    assert seen == [0, 1]  # 1 = past the last decode, in the model
    assert result.outcomes[0].state == "failed:model-error" and "session lost" in result.outcomes[0].detail


def test_child_inference_threads_share_the_cores_among_workers() -> None:
    from bodypart_router.inference.engine import MAX_CHILD_INFERENCE_THREADS, child_inference_threads

    assert child_inference_threads(1, cores=2) == 2
    assert child_inference_threads(2, cores=2) == 1
    assert child_inference_threads(3, cores=2) == 1  # never zero
    assert child_inference_threads(1, cores=64) == MAX_CHILD_INFERENCE_THREADS
    assert child_inference_threads(1) >= 1  # from this process's CPU affinity


def test_an_unexpected_decoding_error_is_a_failed_state_with_a_traceback(
        fixtures_dir: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the router's own decoding code (not a decoder's complaint about the file) fails
    that file, the rest of the batch is classified, and the traceback is logged."""
    from bodypart_router.imaging import decode as decode
    from bodypart_router.inference.classifier import Classifier

    real = decode.decode_dicom

    def buggy(source, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(source, bytes) and source.startswith(b"BUG"):
            raise AttributeError("'NoneType' object has no attribute 'shape'")
        return real(source, **kwargs)

    monkeypatch.setattr(decode, "decode_dicom", buggy)
    good = (fixtures_dir / FILES[0]).read_bytes()
    with caplog.at_level(logging.ERROR, logger="bodypart_router"):
        bad, ok = classify_sources([b"BUG" + good, good], Classifier(tiny_model_path), None).outcomes
    assert bad.state == "failed:undecodable-pixels" and "NoneType" in bad.detail
    assert ok.classified
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is AttributeError and "unexpected error while decoding" in record.getMessage()
