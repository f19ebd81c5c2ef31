"""The classification engine: DICOM files in, predictions (or reasons) out, one batch at a time.

It runs either in the calling process (:class:`LocalEngine`: the CLI, tests, and the plugin's
fallback) or in a child process (:class:`ChildEngine`: the plugin's default). Both run the same
:func:`classify_sources`, so the results are the same; only where the work happens differs.

Why a child process inside Orthanc: decoding a radiograph moves tens of MB through malloc and
holds the GIL in pure-Python codecs, which slows the threads storing instances (the figures:
``docs/decisions.md``, "Classification in a child process"). In a child at low priority the pixels never
touch Orthanc's heap, and the child reads the file straight from Orthanc's storage directory
when it can. A decoder that crashes on a malformed file takes down the child, not Orthanc: the
instance it was decoding is failed with that reason and the child is started again.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, Sequence

from .. import logs
from ..errors import BodyPartRouterError, Reason
from ..imaging.xray_policy import XrayPolicy
from ..states import InstanceState
from .batch import Classified, Prepared, classify_batches, prepare
from .classes import SecondaryOutputs
from .resources import available_cores

LOGGER = logging.getLogger(__name__)

#: A DICOM file to classify: a path the engine may read, or the file's bytes.
Source = str | bytes

#: CPU priority of the child process: ``"idle"`` (SCHED_IDLE, where Linux has it) or a nice increment.
#: SCHED_IDLE leaves Orthanc's ingest more than nice +10 does (``docs/decisions.md``), and it still
#: uses every idle cycle, so classification keeps up whenever Orthanc is not busy.
CHILD_PRIORITY: int | str = "idle"
#: Seconds the child may take to import its libraries and load the model.
CHILD_START_TIMEOUT = 120.0
#: How long to wait for a child killed with SIGKILL to be reaped before leaving it to exit alone.
KILLED_CHILD_WAIT_S = 10.0
#: The child hands its freed memory back to the system after this long without work.
IDLE_TRIM_SECONDS = 1.0
#: State of an instance whose decoding crashed the child process.
CRASH_DETAIL = "the decoder crashed on this file (the classifier process was restarted)"
#: How many times one file may take the classifier process down before it is failed: a child
#: also dies for reasons that are not the file's (kill, the OOM killer taking the biggest
#: process), so a file is only blamed when it brings down a child that had nothing else to do.
CHILD_DEATHS_PER_FILE = 2

#: The most onnxruntime threads one child starts, however many cores the machine has.
MAX_CHILD_INFERENCE_THREADS = 4


def child_inference_threads(workers: int, cores: int | None = None) -> int:
    """onnxruntime threads for each of ``workers`` classifier children: the cores, shared out.

    In Orthanc's process an inference keeps to one thread, so that it never takes every core
    from ingest (``orthanc_plugin/footprint.py``). A child runs at SCHED_IDLE, and so do the
    threads it starts: they only get cycles Orthanc leaves idle, so more threads make an
    inference faster without slowing ingest (``docs/decisions.md``, "Inference threads").
    """
    if cores is None:
        cores = available_cores()
    return max(1, min(MAX_CHILD_INFERENCE_THREADS, cores // max(1, workers)))


@dataclass(frozen=True)
class Outcome(SecondaryOutputs):
    """What became of one source: a prediction, or the state and reason why there is none."""

    class_name: str | None = None
    score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    #: ``skipped:<reason>`` / ``failed:<reason>`` when not classified; ``retry`` for a transient error.
    state: str | None = None
    detail: str = ""
    decode_seconds: float = 0.0

    @property
    def classified(self) -> bool:
        return self.class_name is not None


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Outcome]
    #: Inference time of the batch divided by the images that reached the model.
    inference_seconds: float


@dataclass(frozen=True)
class ModelInfo:
    """What the status page and metrics say about the model in use."""

    model_name: str
    version: str
    sha256: str
    provider: str


class Engine(Protocol):
    info: ModelInfo

    def classify(self, sources: Sequence[Source]) -> BatchResult: ...

    def close(self) -> None: ...


def _failed(reason: Reason, detail: str) -> Outcome:
    return Outcome(state=InstanceState.of(reason), detail=detail)


def _outcome(item: Classified) -> Outcome:
    if item.prediction is not None:
        p = item.prediction
        return Outcome(class_name=p.class_name, score=float(p.score), scores=dict(p.scores), region=p.region,
                       region_score=p.region_score, view=p.view, view_score=p.view_score, rotation=p.rotation,
                       rotation_score=p.rotation_score, inverted=p.inverted, inverted_score=p.inverted_score,
                       decode_seconds=item.decode_seconds)
    if item.retry is not None:
        return Outcome(state="retry", detail=item.retry)
    assert item.error is not None
    return Outcome(state=item.error.state, detail=item.error.detail)


def _read(source: Source) -> bytes:
    if isinstance(source, str):
        with open(source, "rb") as fh:
            return fh.read()
    return source


def classify_sources(sources: Sequence[Source], classifier: Any, policy: XrayPolicy | None,
                     on_item: Callable[[int], None] | None = None) -> BatchResult:
    """Decode, preprocess and classify ``sources`` in one inference, through the batch path
    (:mod:`.batch`) the command line uses too.

    Never raises for bad input: every source gets an :class:`Outcome`. A file that vanished
    (deleted from Orthanc meanwhile) gets state ``retry``. ``on_item(i)`` is called before
    source ``i`` is decoded, and ``on_item(len(sources))`` before the model runs (the child
    reports progress with it: a crash is then the model's, not a file's).
    """
    from ..imaging.decode import decode_dicom

    def prepared() -> Iterator[tuple[int, Prepared]]:
        for i, source in enumerate(sources):
            if on_item is not None:
                on_item(i)
            yield i, prepare(lambda: decode_dicom(_read(source), policy=policy), f"source {i + 1} of {len(sources)}")

    before_inference = (lambda: on_item(len(sources))) if on_item is not None else None
    items = [item for _, item in classify_batches(prepared(), classifier, max(1, len(sources)), before_inference)]
    seconds = max((item.inference_seconds for item in items), default=0.0)
    return BatchResult([_outcome(item) for item in items], seconds)


def _model_info(classifier: Any) -> ModelInfo:
    return ModelInfo(classifier.model_name, classifier.version, classifier.sha256, classifier.provider)


class LocalEngine:
    """The engine in this process (thread-safe: onnxruntime sessions may be shared)."""

    def __init__(self, model_path: str | os.PathLike, *, policy: XrayPolicy | None = None,
                 intra_op_threads: int | None = None, providers: str | Sequence[str] = "auto") -> None:
        from .classifier import Classifier

        self.classifier = Classifier(model_path, intra_op_threads=intra_op_threads, providers=providers)
        self.policy = policy
        self.info = _model_info(self.classifier)

    def classify(self, sources: Sequence[Source]) -> BatchResult:
        return classify_sources(sources, self.classifier, self.policy)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- child process
class EngineStartError(BodyPartRouterError, RuntimeError):
    """The child process could not start or load the model (the message says why)."""


def python_for_child(python_environment: str | os.PathLike | None = None) -> str | None:
    """An interpreter of this Python's version for the child: the configured venv's, else the
    system's ``pythonX.Y``. (In Orthanc, ``sys.executable`` is Orthanc itself.)"""
    candidates: list[str] = []
    if python_environment:
        candidates.append(str(Path(python_environment) / "bin" / "python"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(version)
    if found:
        candidates.append(found)
    if sys.executable and Path(sys.executable).name.startswith("python"):
        candidates.append(sys.executable)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _send(stream: IO[bytes], message: Any) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


class ChildEngine:
    """The engine in a child process, spoken to over its stdin/stdout with pickled messages.

    Parent -> child: ``("classify", [source, ...])``. Child -> parent: ``("item", i)`` before
    decoding source ``i``, then ``("done", BatchResult)``; any time, ``("log", record)``: logged
    here too (so it reaches Orthanc's log). One batch at a time (a lock makes it safe to share
    between threads). The child exits when its stdin closes, so it never outlives Orthanc, even
    after ``kill -9``.
    """

    def __init__(self, model_path: str | os.PathLike, *, python: str, policy: XrayPolicy | None = None,
                 intra_op_threads: int | None = 1, providers: str | Sequence[str] = "auto",
                 niceness: int | str = CHILD_PRIORITY,
                 expected_sha256: str | None = None) -> None:
        self._init = {"model_path": str(model_path), "policy": policy, "intra_op_threads": intra_op_threads,
                      "providers": providers, "niceness": niceness, "sha256": expected_sha256}
        self.python = python
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._closing = False
        self.restarts = 0
        self.info = self._start()
        # Every later start must load the very model this one loaded (a file swapped or
        # modified while Orthanc runs is refused, not run unverified).
        self._init["sha256"] = self.info.sha256

    # -- lifecycle ------------------------------------------------------------------------
    def _start(self) -> ModelInfo:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            process = subprocess.Popen([self.python, "-m", "bodypart_router.inference.engine"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env, close_fds=True)
        except OSError as exc:
            raise EngineStartError(f"cannot run {self.python}: {exc}") from exc
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        try:
            _send(process.stdin, ("init", self._init))
            answer = self._receive(CHILD_START_TIMEOUT)
        except (OSError, EOFError, pickle.UnpicklingError, TimeoutError) as exc:
            self._kill()
            raise EngineStartError(f"the classifier process ({self.python}) did not start: {exc!r}") from exc
        if answer[0] != "ready":
            self._kill()
            raise EngineStartError(f"the classifier process could not load the model: {answer[1]}")
        return answer[1]

    def _receive(self, timeout: float | None = None) -> Any:
        """The child's next message; the log records it sends meanwhile are logged here."""
        assert self._process is not None and self._process.stdout is not None
        if timeout is None:
            while (message := pickle.load(self._process.stdout))[0] == "log":
                logs.replay(message[1])
            return message
        result: list[Any] = []
        error: list[BaseException] = []

        def read() -> None:
            try:
                result.append(self._receive())
            except BaseException as exc:
                error.append(exc)

        reader = threading.Thread(target=read, name="bodypart-engine-start", daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        if error:
            raise error[0]
        return result[0]

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            try:  # at SCHED_IDLE on busy cores, even a killed child may wait a while to be scheduled to exit
                process.wait(KILLED_CHILD_WAIT_S)
            except subprocess.TimeoutExpired:
                LOGGER.warning("classifier child %d has not exited %.0f s after SIGKILL; it is left to exit on its own",
                               process.pid, KILLED_CHILD_WAIT_S)

    def shutdown(self) -> None:
        """Ask the child to exit after the batch it is on (from any thread, without waiting):
        the batch's results still arrive; files not reached come back as ``retry``."""
        self._closing = True
        process = self._process
        if process is not None and process.stdin is not None:
            try:
                process.stdin.close()
            except (OSError, ValueError):
                pass

    def close(self, timeout: float = 1.0) -> None:
        """Stop the child; if a batch is still running after ``timeout``, kill it anyway."""
        self.shutdown()
        if self._lock.acquire(timeout=timeout):
            try:
                self._kill()
            finally:
                self._lock.release()
        elif (process := self._process) is not None:
            process.kill()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    # -- work -----------------------------------------------------------------------------
    def classify(self, sources: Sequence[Source]) -> BatchResult:
        """Classify ``sources``. If the child dies, the files of the batch are classified again
        one at a time in fresh children; a file is failed only when it takes a child down
        :data:`CHILD_DEATHS_PER_FILE` times (see there why not at once).

        Raises :class:`EngineStartError` when no child can be started (the model file is gone
        or no longer the one verified at start-up): nothing of the batch is to blame.
        """
        with self._lock:
            outcomes: dict[int, Outcome] = {}
            deaths = [0] * len(sources)
            groups = [list(range(len(sources)))]  # the whole batch first, then one file at a time
            inference_seconds = 0.0
            idle_death_retried = False
            while groups:
                group = groups[0]
                if self._closing:
                    outcomes.update((i, Outcome(state="retry", detail="interrupted by shutdown"))
                                    for g in groups for i in g)
                    break
                if self._process is None:
                    self.info = self._start()
                    self.restarts += 1
                done, current = self._round_trip([sources[i] for i in group])
                if done is not None:
                    outcomes.update(zip(group, done.outcomes))
                    inference_seconds = max(inference_seconds, done.inference_seconds)
                    groups.pop(0)
                    continue
                self._kill()
                if self._closing:
                    continue
                if current is None and not idle_death_retried:
                    # Gone before it took the batch (killed while idle, the OOM killer...):
                    # nothing of this batch is to blame, so start a fresh child and send it again.
                    idle_death_retried = True
                    LOGGER.warning("the classifier process had stopped; restarting it")
                    continue
                decoding = current is not None and current < len(group)
                if len(group) > 1:
                    if decoding:
                        assert current is not None
                        deaths[group[current]] += 1
                    groups[0:1] = [[i] for i in group]
                    LOGGER.error(f"the classifier process died during a batch of {len(group)}; "
                                 "classifying them again one at a time")
                    continue
                deaths[group[0]] += 1
                if deaths[group[0]] < CHILD_DEATHS_PER_FILE:
                    LOGGER.error("the classifier process died with a single file; trying it once more")
                    continue
                groups.pop(0)
                if decoding or current is None:
                    outcomes[group[0]] = _failed(Reason.UNDECODABLE_PIXELS, CRASH_DETAIL)
                else:
                    outcomes[group[0]] = _failed(Reason.MODEL_ERROR, "the classifier process stopped twice "
                                                                     "during the inference of this file")
                LOGGER.error(f"a file took the classifier process down {deaths[group[0]]} times; "
                             "it is failed, the process is restarted")
            return BatchResult([outcomes[i] for i in range(len(sources))], inference_seconds)

    def _round_trip(self, sources: list[Source]) -> tuple[BatchResult | None, int | None]:
        """``(result, None)``, or ``(None, index being worked on)`` if the child died."""
        assert self._process is not None and self._process.stdin is not None
        current: int | None = None
        try:
            _send(self._process.stdin, ("classify", sources))
            while True:
                message = self._receive()
                if message[0] == "item":
                    current = message[1]
                elif message[0] == "done":
                    return message[1], None
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            return None, current


def _lower_priority(niceness: int | str | None) -> None:
    """``"idle"``: Linux's SCHED_IDLE (the CPU only when nothing else wants it); a number: nice."""
    if niceness == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:
            niceness = 19
    if isinstance(niceness, int) and niceness > 0:
        os.nice(niceness)


def _child_main() -> int:
    """The child: answer ``init`` with ``ready``/``error``, then ``classify`` until stdin closes."""
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print in a library must not corrupt the channel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in Orthanc's terminal: the parent decides
    try:
        kind, init = pickle.load(channel_in)
    except (EOFError, pickle.UnpicklingError):
        return 0
    sending = threading.Lock()

    def send(message: Any) -> None:  # a record may be logged from another thread
        with sending:
            _send(channel_out, message)

    logs.forward_to(lambda record: send(("log", record)))
    try:
        _lower_priority(init.get("niceness"))
        from .resources import release_free_memory, reuse_freed_memory

        reuse_freed_memory()
        engine = LocalEngine(init["model_path"], policy=init["policy"], intra_op_threads=init["intra_op_threads"],
                             providers=init["providers"])
        expected = init.get("sha256")
        if expected and engine.info.sha256 != expected:
            raise RuntimeError(f"{init['model_path']} has changed since Orthanc started (SHA-256 "
                               f"{engine.info.sha256[:12]}..., expected {expected[:12]}...): restore the model "
                               "file, or restart Orthanc to verify and load the new one")
    except Exception as exc:
        send(("error", str(exc) or repr(exc)))
        return 1
    send(("ready", engine.info))
    trimmed = True
    while True:
        if not trimmed and not select.select([channel_in], [], [], IDLE_TRIM_SECONDS)[0]:
            engine.classifier.shrink_arena()  # idle: hand the freed buffers back (see memory.py)
            release_free_memory()
            trimmed = True
        try:
            kind, sources = pickle.load(channel_in)
        except (EOFError, pickle.UnpicklingError, OSError):
            return 0  # the parent closed the channel (stopped, or died)
        try:
            result = classify_sources(sources, engine.classifier, engine.policy,
                                      on_item=lambda i: send(("item", i)))
            del sources
            send(("done", result))
        except (BrokenPipeError, OSError):
            return 0
        trimmed = False


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that what it pickles (Outcome,
    # ModelInfo...) is named bodypart_router.inference.engine.*, not __main__.*.
    from bodypart_router.inference.engine import _child_main as child_main

    sys.exit(child_main())
