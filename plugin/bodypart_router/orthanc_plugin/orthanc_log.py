"""The package's log records, forwarded to Orthanc's log.

Installed once when the plugin loads (:func:`install`): every ``bodypart_router.*`` logger then
writes through ``orthanc.LogError``/``LogWarning``/``LogInfo``, so the router's lines sit among
Orthanc's own, prefixed ``BodyPartRouter:``, and Orthanc's ``--verbose`` shows the info ones.
Tracebacks (``LOGGER.exception``) follow their line.
"""

from __future__ import annotations

import logging
from typing import Any

from ..logs import ROOT

#: Every line the router writes to Orthanc's log starts with this (tests and operators grep it).
PREFIX = "BodyPartRouter: "


class OrthancLogHandler(logging.Handler):
    """Sends each record to the Orthanc log function of its level.

    ``host`` is the ``orthanc`` module (or anything with its ``LogError``, ``LogWarning`` and
    ``LogInfo``). ERROR and CRITICAL go to ``LogError``, WARNING to ``LogWarning``, everything
    below to ``LogInfo``.
    """

    def __init__(self, host: Any) -> None:
        super().__init__(logging.INFO)
        self.host = host
        self.setFormatter(logging.Formatter(PREFIX + "%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.host.LogError(text)
            elif record.levelno >= logging.WARNING:
                self.host.LogWarning(text)
            else:
                self.host.LogInfo(text)
        except Exception:
            self.handleError(record)


def install(host: Any) -> OrthancLogHandler:
    """Route the package's records (INFO and up) to Orthanc's log; replaces an earlier handler."""
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, OrthancLogHandler)]:
        logger.removeHandler(old)
    handler = OrthancLogHandler(host)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
