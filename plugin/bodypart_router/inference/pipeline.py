"""Files in, classes out: walk paths, decode each file, classify in batches.

Used by the CLI (and usable from any script). Decoding and classifying go through the batch
path the plugin's engines use (:mod:`bodypart_router.inference.batch`), so a file gets the same outcome,
failures included, from the command line and from Orthanc; what this module adds is walking
folders, decoding in a process pool, and catching what native decoders print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import logs
from .batch import Classified, Prepared, classify_batches
from .batch import prepare as prepare_source
from .classifier import Classifier, Prediction
from ..imaging.decode import decode_file
from ..errors import NotClassifiable, Reason
from ..imaging.xray_policy import XrayPolicy

#: Images classified per onnxruntime run.
DEFAULT_BATCH_SIZE = 16
#: Below this many files a process pool costs more to start than it saves.
MIN_FILES_FOR_POOL = 16


@dataclass(frozen=True)
class Result:
    """The outcome for one input file: a prediction, or the reason there is none."""

    path: Path
    prediction: Prediction | None = None
    error: NotClassifiable | None = None
    #: What native decoders wrote to stderr while this file was decoded (with ``capture_messages``).
    messages: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.prediction is not None

    @property
    def reason(self) -> str:
        """Why there is no prediction (a :class:`~bodypart_router.errors.Reason` value)."""
        return self.error.reason.value if self.error is not None else "unknown"

    @property
    def label(self) -> str:
        """The class, or ``error: <reason>`` (what the CLI's summary counts)."""
        return self.prediction.class_name if self.prediction is not None else "error: " + self.reason


def iter_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Every file under ``paths``: files as given, folders walked recursively in sorted order.

    Hidden files and folders (``.name``) inside walked folders are skipped.
    A path that does not exist is yielded as is, so that it gets a reason.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Collect what C libraries write straight to file descriptor 2 meanwhile (libjpeg's
    "Unsupported JPEG data precision 12", GDCM's warnings): on a terminal those lines would cut
    through a progress bar and name no file. Only for a process of its own (the CLI and its
    pool): inside Orthanc, file descriptor 2 is Orthanc's log.
    Python's own writes to ``sys.stderr`` (the CLI's ``--verbose`` log) still reach the terminal."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(saved), "w", encoding="utf-8", errors="backslashreplace", buffering=1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def prepare(path: Path, policy: XrayPolicy | None, capture_messages: bool = False) -> Prepared:
    """Decode and preprocess one file (see :func:`bodypart_router.inference.batch.prepare`), with the
    decoders' messages about it when ``capture_messages`` (see :func:`native_stderr_captured`)."""
    def decode():  # type: ignore[no-untyped-def]
        if not path.exists():
            raise NotClassifiable(Reason.NOT_DICOM, "no such file")
        return decode_file(path, policy=policy)

    captured: contextlib.AbstractContextManager[list[str]] = (
        native_stderr_captured() if capture_messages else contextlib.nullcontext([]))
    with captured as messages:
        prepared = prepare_source(decode, str(path))
    return dataclasses.replace(prepared, messages=tuple(messages)) if messages else prepared


def _result(path: Path, item: Classified) -> Result:
    error = item.error
    if item.retry is not None:  # read failed (unlike Orthanc's storage, nothing will put it back)
        error = NotClassifiable(Reason.NOT_DICOM, item.retry)
    return Result(path=path, prediction=item.prediction, error=error, messages=item.messages)


def classify_paths(
    paths: Iterable[str | os.PathLike],
    classifier: Classifier,
    *,
    policy: XrayPolicy | None = XrayPolicy(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    capture_messages: bool = False,
) -> Iterator[Result]:
    """Yield one :class:`Result` per file found under ``paths``, in input order.

    Inference waits until ``batch_size`` images are ready (or the input ends),
    because one batched run is much cheaper than as many single-image runs.
    With ``workers > 1`` files are decoded in that many processes: decoding,
    not the network, is the cost, and much of it holds the GIL. ``capture_messages`` puts what
    native decoders print into each file's :attr:`Result.messages` instead of the terminal.
    A file that cannot be classified, whatever the cause, gets a result with its reason.
    """
    prepared = _prepared(iter_files(paths), policy, workers, capture_messages)
    for path, item in classify_batches(prepared, classifier, batch_size):
        yield _result(path, item)


def _prepared(
    files: Iterable[Path], policy: XrayPolicy | None, workers: int, capture_messages: bool = False
) -> Iterator[tuple[Path, Prepared]]:
    """``prepare`` every file, in order; in a process pool when ``workers > 1`` and there are enough files.

    At most ``4 x workers`` files are in flight, which bounds the memory held
    by decoded images waiting for the model.
    """
    files = list(files)
    if workers <= 1 or len(files) < MIN_FILES_FOR_POOL:
        for path in files:
            yield path, prepare(path, policy, capture_messages)
        return
    # "spawn": forking a process that already runs onnxruntime's thread pool is unsafe.
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger(logs.ROOT).getEffectiveLevel()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_pool_worker_start,
                             initargs=(level,)) as pool:
        window: deque[tuple[Path, Future]] = deque()

        def finished() -> tuple[Path, Prepared]:
            done, future = window.popleft()
            prepared, records = future.result()
            for record in records:  # what the decoder logged, logged here with its file
                logs.replay(record)
            return done, prepared

        for path in files:
            window.append((path, pool.submit(_prepare_in_pool, path, policy, capture_messages)))
            if len(window) >= 4 * workers:
                yield finished()
        while window:
            yield finished()


#: In a decoding process of the pool: the records logged while the current file was prepared.
_POOL_RECORDS: list[logging.LogRecord] = []


def _pool_worker_start(level: int) -> None:
    logs.forward_to(_POOL_RECORDS.append, level)


def _prepare_in_pool(path: Path, policy: XrayPolicy | None,
                     capture_messages: bool) -> tuple[Prepared, list[logging.LogRecord]]:
    """:func:`prepare` in a pool process; the records it logged travel back with the result."""
    _POOL_RECORDS.clear()
    prepared = prepare(path, policy, capture_messages)
    return prepared, list(_POOL_RECORDS)
