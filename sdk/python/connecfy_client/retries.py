"""When a send is tried again, and after how long.

Every send carries an ``Idempotency-Key`` that stays the same across its attempts, so a
retry is safe even when the first attempt's answer was lost on the way: the server
answers the repeat with the first attempt's ids and queues nothing twice. That is why a
broken connection or a timeout is retried like a 503.
"""

from __future__ import annotations

import random

import msgspec

from connecfy_client.errors import ConnecfyError, ConnectionFailed, RateLimited, ServiceUnavailable


class Retries(msgspec.Struct, frozen=True):
    """``max_attempts`` tries in all (1: never retry). Without a ``Retry-After`` the wait
    doubles from ``backoff`` seconds up to ``max_backoff``, jittered; a ``Retry-After``
    is waited exactly, unless it is longer than ``max_retry_after`` (a daily quota's runs
    to midnight), when the error is raised at once."""

    max_attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, attempt: int, error: ConnecfyError) -> float | None:
        """Seconds to wait before the next try after ``attempt`` (1-based) failed with
        ``error``, or None to give up and raise it."""
        if attempt >= self.max_attempts or not retryable(error):
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_after else None
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def retryable(error: ConnecfyError) -> bool:
    """Whether another try may succeed: no answer, the server busy, or a rate limit (not
    the daily quota, which lasts until midnight UTC)."""
    if isinstance(error, RateLimited):
        return error.code != "quota_exceeded"
    return isinstance(error, ConnectionFailed | ServiceUnavailable)
