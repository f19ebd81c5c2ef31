"""Shared pytest fixtures: where the test data lives, and models to classify with.

``tests/`` is on ``sys.path`` (pytest's rootdir conftest rule), so test modules
import helpers as ``from support.<module> import ...``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Small committed DICOM/PNG/JPEG files (see tests/fixtures/make_fixtures.py).
FIXTURES = REPO / "tests" / "fixtures"
#: Real CR/DX files outside the repository; tests needing them skip when absent.
SHARED_DICOM = Path(os.environ.get("BODYPART_ROUTER_SHARED_DICOM", REPO.parent / "shared" / "data" / "dicom-xray"))
#: The trained model shipped in the repository, once it exists (override to test a candidate model).
SHIPPED_MODEL = Path(os.environ.get("BODYPART_ROUTER_TEST_MODEL", REPO / "models" / "bodypart_router.onnx"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_dicom_dir() -> Path:
    """The shared real-DICOM folder with its manifest.csv (skips the test when absent)."""
    if not (SHARED_DICOM / "manifest.csv").is_file():
        pytest.skip(f"shared DICOM data not found at {SHARED_DICOM}")
    return SHARED_DICOM


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ONNX model with the real model's I/O contract (class chosen by mean gray level)."""
    from support.tiny_model import build

    path = tmp_path_factory.mktemp("tiny-model") / "tiny.onnx"
    build(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_with_facts_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the optional region, view, rotation and polarity outputs."""
    from support.tiny_model import build

    path = tmp_path_factory.mktemp("tiny-model-facts") / "tiny-facts.onnx"
    build(path, secondary=True)
    return path


@pytest.fixture(scope="session")
def shipped_model_path() -> Path:
    """The trained model in models/ (skips the test while it has not been produced)."""
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} not present")
    return SHIPPED_MODEL


@pytest.fixture(autouse=True)
def _package_logging_restored() -> Iterator[None]:
    """The CLI and the plugin set up the package's logger; each test starts from how it was."""
    logger = logging.getLogger("bodypart_router")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


class _Collect(logging.Handler):
    def __init__(self, into: list[tuple[str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append((record.levelname.lower(), record.getMessage()))


@pytest.fixture()
def router_logs() -> Iterator[list[tuple[str, str]]]:
    """``(level, message)`` of every record the package logs during the test (``level``: "info"...)."""
    lines: list[tuple[str, str]] = []
    handler = _Collect(lines)
    logger = logging.getLogger("bodypart_router")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
