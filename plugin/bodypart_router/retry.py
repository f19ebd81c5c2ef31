"""The one retry policy of forwarding, in the manner of urllib3's ``Retry``.

Every loop that tries again (a forward to a destination, a question to a destination about a
forward of unknown outcome, a circuit breaker's probes, a classification that could not read
its file) asks one :class:`Retry` how long to wait and when to give up, instead of counting on
its own. The configuration's ``Retry`` section (``MaxAttempts``, ``BackoffSeconds``,
``MaxBackoffSeconds``) is one of these.
"""

from __future__ import annotations

from dataclasses import dataclass

#: An HTTP status that says the resource is gone (the instance was deleted): trying again cannot help.
GONE_STATUSES: frozenset[int] = frozenset({404})


@dataclass(frozen=True)
class Retry:
    """Exponential backoff: ``BackoffSeconds * 2**(attempt-1)``, capped; give up after ``MaxAttempts``."""

    max_attempts: int = 8
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 300.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (the first waits ``backoff_seconds``)."""
        exponent = max(0, attempts - 1)
        return min(self.max_backoff_seconds, self.backoff_seconds * (2.0 ** min(exponent, 30)))

    def exhausted(self, attempts: int) -> bool:
        """True once ``attempts`` tries were made and no more are allowed."""
        return attempts >= self.max_attempts

    @staticmethod
    def is_retryable(error: BaseException) -> bool:
        """Whether trying again may succeed: not when the answer said the resource is gone
        (an error's ``status`` in :data:`GONE_STATUSES`); a refusal, a timeout or a destination
        that is down may pass next time."""
        return getattr(error, "status", None) not in GONE_STATUSES
