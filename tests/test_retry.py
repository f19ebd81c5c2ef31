"""The one retry policy: backoff, give-up, what is worth trying again."""

from __future__ import annotations

from bodypart_router.retry import Retry


class _Error(Exception):
    def __init__(self, status: int | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = Retry(max_attempts=10, backoff_seconds=2, max_backoff_seconds=30)
    assert [policy.delay(n) for n in range(0, 7)] == [2, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30  # no overflow however long the outage


def test_gives_up_after_max_attempts() -> None:
    policy = Retry(max_attempts=3)
    assert [policy.exhausted(n) for n in range(5)] == [False, False, False, True, True]


def test_defaults_are_the_configurations() -> None:
    assert Retry() == Retry(max_attempts=8, backoff_seconds=2.0, max_backoff_seconds=300.0)


def test_a_resource_that_is_gone_is_not_retried() -> None:
    assert not Retry.is_retryable(_Error(404))
    assert Retry.is_retryable(_Error(500)) and Retry.is_retryable(_Error(None))
    assert Retry.is_retryable(TimeoutError("timed out"))
