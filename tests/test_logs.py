"""The package's logging: records cross process boundaries with their tracebacks, and the CLI
shows them only with ``--verbose``."""

from __future__ import annotations

import io
import logging
import pickle

from bodypart_router import logs


def test_a_record_from_another_process_keeps_its_traceback(router_logs: list[tuple[str, str]]) -> None:
    captured: list[logging.LogRecord] = []
    child_side = logging.getLogger("bodypart_router.child")
    handler = logs.Forward(captured.append)
    child_side.addHandler(handler)
    try:
        try:
            raise ValueError("bad frame")
        except ValueError:
            child_side.exception("frame %d failed", 3)
    finally:
        child_side.removeHandler(handler)
    record = pickle.loads(pickle.dumps(captured[0]))  # as it crosses the pipe
    out = io.StringIO()
    parent_handler = logging.StreamHandler(out)
    logging.getLogger(logs.ROOT).addHandler(parent_handler)
    try:
        router_logs.clear()
        logs.replay(record)
    finally:
        logging.getLogger(logs.ROOT).removeHandler(parent_handler)
    assert router_logs == [("error", "frame 3 failed")]
    assert "ValueError: bad frame" in out.getvalue() and "Traceback" in out.getvalue()


def test_replay_respects_the_level_here(router_logs: list[tuple[str, str]]) -> None:
    record = logs.portable(logging.LogRecord("bodypart_router.child", logging.INFO, __file__, 1, "hello", None, None))
    logging.getLogger(logs.ROOT).setLevel(logging.WARNING)
    logs.replay(record)
    assert router_logs == []
    logging.getLogger(logs.ROOT).setLevel(logging.INFO)
    logs.replay(record)
    assert router_logs == [("info", "hello")]


def test_cli_logging_is_silent_unless_verbose() -> None:
    quiet, verbose = io.StringIO(), io.StringIO()
    logs.log_to_stderr(False, stream=quiet)
    logging.getLogger("bodypart_router.decode").error("nothing to see")
    logs.log_to_stderr(True, stream=verbose)
    try:
        raise RuntimeError("decoder bug")
    except RuntimeError:
        logging.getLogger("bodypart_router.decode").exception("source 1 of 1 failed")
    assert quiet.getvalue() == ""
    text = verbose.getvalue()
    assert text.startswith("bodypart-router: ERROR: source 1 of 1 failed\nTraceback")
    assert "RuntimeError: decoder bug" in text
    assert len(logging.getLogger(logs.ROOT).handlers) == 1  # the second call replaced the first handler
