"""Polarity from a film and its negative: the rule that serving and training's evaluation share.

The polarity head alone is biased per hospital: a source whose films are processed unlike the
training pool can look "inverted" as stored and still look inverted once negated. Asking the
head about both the film and its negative (``1 - input``, as part of the second look,
:mod:`.second_look`) and comparing the two answers cancels that bias: the film is inverted when
it looks more inverted than its own negative (``docs/decisions.md``, "Second looks").

The second look costs one more network run, so it is made only where the first answer is not
already sure (:func:`needs_negative`).
"""

from __future__ import annotations

import numpy as np

#: A first answer at or beyond this probability (either way) is taken without the negative.
SURE = 0.9
#: Probabilities are clipped this far from 0 and 1 before taking log-odds.
_EPS = 1e-6


def needs_negative(p_inverted: np.ndarray | float) -> np.ndarray:
    """Where the film's own polarity answer is unsure enough to ask about its negative too."""
    p = np.asarray(p_inverted, dtype=np.float64)
    return (p < SURE) & (1.0 - p < SURE)


def negative(model_input: np.ndarray) -> np.ndarray:
    """The photographic negative of a model input (values in [0, 1])."""
    return (1.0 - np.asarray(model_input, dtype=np.float32)).astype(np.float32)


def paired_inverted(p_film: np.ndarray | float, p_negative: np.ndarray | float) -> np.ndarray:
    """Probability that the film is inverted, from the polarity head's answer for the film and
    for its negative: the log-odds of the first minus those of the second, so 0.5 exactly where
    both look equally inverted."""
    a = np.clip(np.asarray(p_film, dtype=np.float64), _EPS, 1.0 - _EPS)
    b = np.clip(np.asarray(p_negative, dtype=np.float64), _EPS, 1.0 - _EPS)
    logit = np.log(a / (1.0 - a)) - np.log(b / (1.0 - b))
    return 1.0 / (1.0 + np.exp(-logit))


def decide(p_film: np.ndarray, p_negative: np.ndarray) -> np.ndarray:
    """The served probability that each film is inverted: its own answer where that is sure
    (:func:`needs_negative` false), else :func:`paired_inverted`. ``p_negative`` is read only
    where it is needed (it may hold anything elsewhere)."""
    a = np.asarray(p_film, dtype=np.float64)
    return np.where(needs_negative(a), paired_inverted(a, p_negative), a)
