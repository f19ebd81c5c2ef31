"""Where the package's log records go: Orthanc's log, the terminal, or a parent process.

Every module logs through ``LOGGER = logging.getLogger(__name__)``, so all records fall under
the ``bodypart_router`` logger; the program decides where they go. The Orthanc adapter forwards
them to Orthanc's log (``orthanc_plugin/orthanc_log.py``), the CLI writes them to stderr with
``--verbose`` (:func:`log_to_stderr`), and a process working for another one (the classifier
child, the CLI's decoding pool) hands them to its parent (:func:`portable`, :func:`replay`).

Messages name instances by Orthanc ID, never by patient tags. A traceback shows code locations
and exception messages, and the exceptions raised on DICOM input name tags, not their values
(``tests/test_logs.py`` decodes the malformed corpus and scans the tracebacks for patient data).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

#: The logger every module's logger descends from.
ROOT = "bodypart_router"


def portable(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` that pickles: its message merged with its arguments and its
    traceback already rendered as text, so another process can :func:`replay` it."""
    formatter = logging.Formatter()
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg, copy.args = record.getMessage(), None
    if record.exc_info:
        copy.exc_text = record.exc_text or formatter.formatException(record.exc_info)
    copy.exc_info = None
    copy.stack_info = None
    return copy


def replay(record: logging.LogRecord) -> None:
    """Log a record received from another process here, as if it had been logged here."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class Forward(logging.Handler):
    """Hands every record, made :func:`portable`, to ``send`` (a pipe or a queue to a parent)."""

    def __init__(self, send: Callable[[logging.LogRecord], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(portable(record))
        except Exception:
            self.handleError(record)


def forward_to(send: Callable[[logging.LogRecord], None], level: int = logging.INFO) -> Forward:
    """In a process working for another one: send the package's records at ``level`` and above there."""
    handler = Forward(send)
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, Forward)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def log_to_stderr(verbose: bool, stream: TextIO | None = None) -> logging.Handler:
    """The CLI's logging: with ``verbose``, the package's records from INFO up, tracebacks
    included, on stderr; without it, none (every file's outcome, failures included, is in the
    CLI's output)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("bodypart-router: %(levelname)s: %(message)s"))
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if getattr(h, "name", None) == "bodypart-router-cli"]:
        logger.removeHandler(old)
    handler.set_name("bodypart-router-cli")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.CRITICAL + 1)
    return handler
