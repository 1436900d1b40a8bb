"""The SDK's retry decisions and error parsing, without a server: which answers are
retried, how long the client waits, and how ``Retry-After`` is read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from connecfy_client import (
    AuthenticationFailed,
    ConnectionFailed,
    InvalidRequest,
    RateLimited,
    Retries,
    ServerError,
    ServiceUnavailable,
)
from connecfy_client.errors import from_response, retry_after_seconds


def limited(code: str = "rate_limited", retry_after: float | None = 2.0) -> RateLimited:
    return RateLimited("slow down", status_code=429, code=code, retry_after=retry_after)


def test_what_is_retried_and_for_how_long() -> None:
    retries = Retries(max_attempts=3, backoff=1.0, max_backoff=3.0, max_retry_after=10.0)
    assert retries.delay(1, limited()) == 2.0  # Retry-After, exactly
    assert retries.delay(2, ServiceUnavailable("busy", status_code=503, retry_after=5.0)) == 5.0
    assert retries.delay(3, limited()) is None  # the last attempt
    assert retries.delay(1, limited("quota_exceeded", 3600.0)) is None  # until midnight: not waited for
    assert retries.delay(1, limited(retry_after=11.0)) is None  # longer than max_retry_after
    for final in (
        InvalidRequest("bad", status_code=400),
        AuthenticationFailed("who", status_code=401),
        ServerError("bug", status_code=500),
    ):
        assert retries.delay(1, final) is None
    # No Retry-After: half to all of a doubling ceiling, capped.
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 3.0), (5, 3.0)):
        waits = [
            Retries(max_attempts=9, backoff=1.0, max_backoff=3.0).delay(attempt, ConnectionFailed("x"))
            for _ in range(50)
        ]
        assert all(w is not None and ceiling / 2 <= w <= ceiling for w in waits), (attempt, waits)
    assert Retries(max_attempts=1).delay(1, limited()) is None
    with pytest.raises(ValueError):
        Retries(max_attempts=0)


def test_an_error_answer_becomes_its_family() -> None:
    body = (
        b'{"status_code": 400, "code": "invalid_input", "detail": "2 bad messages", "field": "messages",'
        b' "errors": [{"index": 1, "field": "to", "detail": "not E.164"}, {"index": 4, "field": "message", "detail": "empty"}]}'
    )
    error = from_response(400, body, {"retry-after": None})
    assert isinstance(error, InvalidRequest)
    assert (error.code, error.detail, error.field) == ("invalid_input", "2 bad messages", "messages")
    assert [(e.index, e.field) for e in error.errors] == [(1, "to"), (4, "message")]
    unavailable = from_response(
        503, b'{"status_code": 503, "code": "store_full", "detail": "full"}', {"retry-after": "30"}
    )
    assert isinstance(unavailable, ServiceUnavailable) and unavailable.retry_after == 30.0
    proxy = from_response(502, b"<html>Bad Gateway</html>", {})
    assert isinstance(proxy, ServiceUnavailable) and proxy.code == "" and "Bad Gateway" in proxy.detail
    assert isinstance(from_response(418, b"", {}), ServerError)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < (retry_after_seconds(later) or 0) <= 120
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)
    assert retry_after_seconds(earlier) == 0.0
