"""The one batch path: sources in, one outcome each (a prediction, or the reason there is none).

The command line (:func:`.pipeline.classify_paths`) and the plugin's engines
(:func:`.engine.classify_sources`: live ingest, backfill, resubmissions and ``make bench``, in
the classifier child or in Orthanc's process) all decode and classify here. So a file gets the
same outcome wherever it is classified, and no failure escapes a batch: input the decoders
refuse gets its reason, an unexpected error (a bug in the router or a library) fails that
source with its traceback in the log, and a failing model fails the batch's sources.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import NotClassifiable, Reason
from ..states import InstanceState

if TYPE_CHECKING:  # numpy, OpenCV and onnxruntime stay out of Orthanc's process while a child classifies
    import numpy as np

    from ..imaging.decode import DecodedImage
    from .classifier import Prediction

LOGGER = logging.getLogger(__name__)

#: Longest exception text kept in a state's detail.
DETAIL_LIMIT = 300

Key = TypeVar("Key")


@dataclass(frozen=True)
class Prepared:
    """One source decoded and preprocessed for the model, or why it cannot be."""

    model_input: np.ndarray | None = None
    error: NotClassifiable | None = None
    #: The source could not be read just now (a file deleted meanwhile): the caller may try again.
    retry: str | None = None
    decode_seconds: float = 0.0
    #: What native decoders wrote on file descriptor 2 meanwhile (see ``pipeline.native_stderr_captured``).
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Classified:
    """The outcome of one source: exactly one of ``prediction``, ``error`` and ``retry`` is set."""

    prediction: Prediction | None = None
    error: NotClassifiable | None = None
    retry: str | None = None
    decode_seconds: float = 0.0
    #: The model's time for this source's batch, divided by the sources that reached it.
    inference_seconds: float = 0.0
    messages: tuple[str, ...] = ()


def _short(exc: BaseException) -> str:
    return repr(exc)[:DETAIL_LIMIT]


def prepare(decode: Callable[[], DecodedImage], what: str = "a source") -> Prepared:
    """Run ``decode`` and the model's preprocessing; every failure becomes a :class:`Prepared`
    without model input. ``what`` names the source in the log (never with patient data)."""
    from ..imaging.preprocess import to_model_input

    t0 = time.perf_counter()
    try:
        model_input = to_model_input(decode().pixels)
    except NotClassifiable as exc:
        return Prepared(error=exc, decode_seconds=time.perf_counter() - t0)
    except OSError as exc:  # the file went away, or a storage hiccup: the caller retries
        return Prepared(retry=f"could not read the file: {exc}", decode_seconds=time.perf_counter() - t0)
    except MemoryError:
        LOGGER.exception(f"{what}: out of memory while decoding; it gets {InstanceState.of(Reason.IMAGE_TOO_LARGE)}")
        return Prepared(error=NotClassifiable(Reason.IMAGE_TOO_LARGE, "out of memory while decoding"))
    except Exception as exc:  # a bug on odd input must not stop the batch
        LOGGER.exception(f"{what}: unexpected error while decoding; it gets {InstanceState.of(Reason.UNDECODABLE_PIXELS)}")
        return Prepared(error=NotClassifiable(Reason.UNDECODABLE_PIXELS, _short(exc)),
                        decode_seconds=time.perf_counter() - t0)
    return Prepared(model_input=model_input, decode_seconds=time.perf_counter() - t0)


def _predict(classifier: Any, inputs: list[np.ndarray]) -> list[Prediction] | NotClassifiable:
    """The model's predictions for ``inputs``, or the reason they all failed."""
    try:
        return classifier.predict_batch(inputs)
    except NotClassifiable as exc:
        LOGGER.exception(f"the model failed on a batch of {len(inputs)}; it gets {exc.state}")
        return exc
    except Exception as exc:
        LOGGER.exception(f"the model failed on a batch of {len(inputs)}; it gets {InstanceState.of(Reason.MODEL_ERROR)}")
        return NotClassifiable(Reason.MODEL_ERROR, _short(exc))


def classify_batches(prepared: Iterable[tuple[Key, Prepared]], classifier: Any, batch_size: int,
                     before_inference: Callable[[], None] | None = None) -> Iterator[tuple[Key, Classified]]:
    """Classify prepared sources as they come, ``batch_size`` model inputs per inference (one
    batched run costs much less than as many single ones); yields every source, in order.

    ``before_inference()`` is called before each run of the model.
    """
    pending: list[tuple[Key, Prepared]] = []

    def flush() -> Iterator[tuple[Key, Classified]]:
        ready = [p.model_input for _, p in pending if p.model_input is not None]
        predictions: list[Prediction] | NotClassifiable = []
        share = 0.0
        if ready:
            if before_inference is not None:
                before_inference()
            t0 = time.perf_counter()
            predictions = _predict(classifier, ready)
            share = (time.perf_counter() - t0) / len(ready)
        given = iter(predictions) if isinstance(predictions, list) else None
        for key, p in pending:
            common: dict[str, Any] = {"decode_seconds": p.decode_seconds, "messages": p.messages}
            if p.model_input is None:
                yield key, Classified(error=p.error, retry=p.retry, **common)
            elif given is None:
                yield key, Classified(error=predictions, inference_seconds=share, **common)  # type: ignore[arg-type]
            else:
                yield key, Classified(prediction=next(given), inference_seconds=share, **common)
        pending.clear()

    for key, p in prepared:
        pending.append((key, p))
        if sum(1 for _, q in pending if q.model_input is not None) >= batch_size:
            yield from flush()
    yield from flush()
