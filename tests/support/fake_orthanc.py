"""A stand-in for the ``orthanc`` module that Orthanc's Python plugin provides, so that unit tests
can import the adapter (``bodypart_router.orthanc_plugin``) and drive its threads with doubles.
Nothing here imitates Orthanc's behaviour: every call is a recording mock; the real thing is
exercised by tests/integration."""

from __future__ import annotations

import sys
from unittest import mock


def install() -> mock.MagicMock:
    """Put a mock ``orthanc`` module in ``sys.modules`` (once) and return it."""
    module = sys.modules.get("orthanc")
    if module is None:
        module = mock.MagicMock(name="orthanc")
        sys.modules["orthanc"] = module
    return module  # type: ignore[return-value]
