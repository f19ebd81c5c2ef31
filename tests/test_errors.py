"""Every exception the package defines has one base, and keeps the built-in class it had."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types

import pytest

import bodypart_router
from bodypart_router.errors import BodyPartRouterError, NotClassifiable, Reason


def _package_exceptions(monkeypatch: pytest.MonkeyPatch) -> list[type[BaseException]]:
    monkeypatch.setitem(sys.modules, "orthanc", sys.modules.get("orthanc") or types.ModuleType("orthanc"))
    found = []
    for info in pkgutil.walk_packages(bodypart_router.__path__, "bodypart_router."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, BaseException) and c.__module__ == module.__name__]
    return found


def test_every_exception_of_the_package_derives_from_one_base(monkeypatch: pytest.MonkeyPatch) -> None:
    found = _package_exceptions(monkeypatch)
    assert len(found) >= 14
    assert [c.__qualname__ for c in found if not issubclass(c, BodyPartRouterError)] == []


def test_the_built_in_classes_callers_catch_are_kept() -> None:
    from bodypart_router.forwarding.backfill import BackfillBusy, BackfillError
    from bodypart_router.config.section import ConfigError
    from bodypart_router.imaging.codecs.jpeg2000 import Jpeg2000Error
    from bodypart_router.ops.request_body import RequestRefused

    assert issubclass(ConfigError, ValueError) and issubclass(BackfillError, ValueError)
    assert issubclass(RequestRefused, ValueError) and issubclass(BackfillBusy, RuntimeError)
    assert issubclass(Jpeg2000Error, RuntimeError)
    error = NotClassifiable(Reason.EMPTY_FILE, "the file is empty (0 bytes)")
    assert isinstance(error, BodyPartRouterError) and error.state == "failed:empty-file"
