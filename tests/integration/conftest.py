"""Fixtures that start real Orthanc processes (and DICOM SCPs) for the router's integration tests.

Every process is stopped in the fixture's teardown, whatever the test did. Tests run once
per Orthanc runtime: ``host`` (Debian 12, Orthanc 1.10) and ``trixie`` (Debian 13 root,
Orthanc 1.12), each skipped with its reason when it cannot run here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import tiny_model
from support.orthanc import Runtime, get_runtime
from support.router_setup import RouterSetup, router_setup

#: Runtimes and the optional module that registers each.
RUNTIMES = {"host": None, "trixie": "support.trixie"}


def _runtime(name: str) -> Runtime:
    module = RUNTIMES[name]
    if module:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the runtime's support code itself cannot load here
            pytest.skip(f"{name} runtime unavailable: {exc}")
    runtime = get_runtime(name)
    reason = runtime.unavailable()
    if reason:
        pytest.skip(f"{name} runtime unavailable: {reason}")
    return runtime


@pytest.fixture(scope="session", params=["host", pytest.param("trixie", marks=pytest.mark.trixie)])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    return _runtime(request.param)


@pytest.fixture(scope="session")
def test_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny controllable model (path, sha256): tests decide the class by the gray level. It
    has every output of the shipped model (region, view, rotation, polarity)."""
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return path, tiny_model.build(path, secondary=True)


@pytest.fixture(scope="module")
def setup(runtime: Runtime, test_model: tuple[Path, str]) -> Iterator[RouterSetup]:
    """The router and its receivers (see support.router_setup), shared by a test module."""
    with router_setup(runtime, *test_model) as s:
        yield s
