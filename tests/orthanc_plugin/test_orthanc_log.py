"""The adapter's log handler: the package's records reach Orthanc's log function of their level."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator

import pytest

from bodypart_router import logs

class FakeOrthanc(types.ModuleType):
    """Stands in for the ``orthanc`` module: records what each of its log functions received."""

    def __init__(self) -> None:
        super().__init__("orthanc")
        self.lines: list[tuple[str, str]] = []
        self.LogError = lambda text: self.lines.append(("error", text))
        self.LogWarning = lambda text: self.lines.append(("warning", text))
        self.LogInfo = lambda text: self.lines.append(("info", text))


@pytest.fixture()
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOrthanc]:
    """A fake ``orthanc`` module with the adapter's log handler installed on it."""
    fake = FakeOrthanc()
    monkeypatch.setitem(sys.modules, "orthanc", sys.modules.get("orthanc") or fake)  # the adapter imports it
    from bodypart_router.orthanc_plugin import orthanc_log as orthanc_logs

    handler = orthanc_logs.install(fake)
    yield fake
    logging.getLogger(logs.ROOT).removeHandler(handler)


def test_records_reach_orthancs_log_function_of_their_level(host: FakeOrthanc) -> None:
    logger = logging.getLogger("bodypart_router.some.module")
    logger.debug("not shown")
    logger.info("instance abc: classified")
    logger.warning("destination x is down")
    logger.error("something broke")
    logger.critical("worse")
    assert host.lines == [("info", "BodyPartRouter: instance abc: classified"),
                          ("warning", "BodyPartRouter: destination x is down"),
                          ("error", "BodyPartRouter: something broke"),
                          ("error", "BodyPartRouter: worse")]


def test_an_exception_reaches_orthanc_with_its_traceback(host: FakeOrthanc) -> None:
    try:
        raise KeyError("Rows")
    except KeyError:
        logging.getLogger("bodypart_router.x").exception("decoding failed")
    ((level, text),) = host.lines
    assert level == "error"
    assert text.startswith("BodyPartRouter: decoding failed\nTraceback (most recent call last):")
    assert "test_orthanc_log.py" in text and text.endswith("KeyError: 'Rows'")


def test_other_loggers_do_not_reach_orthanc(host: FakeOrthanc) -> None:
    logging.getLogger("pydicom").warning("odd file")
    logging.getLogger("bodypart_routerish").warning("not ours")
    assert host.lines == []


def test_installing_twice_keeps_one_handler(host: FakeOrthanc) -> None:
    from bodypart_router.orthanc_plugin import orthanc_log as orthanc_logs

    handler = orthanc_logs.install(host)
    try:
        logging.getLogger("bodypart_router").warning("once")
        assert host.lines == [("warning", "BodyPartRouter: once")]
    finally:
        logging.getLogger(logs.ROOT).removeHandler(handler)
