"""Typed errors: one class per family of the server's answers.

Every error the server answers is JSON ``{"status_code", "code", "detail"}``, some with
``field`` (the input it is about), ``index`` (a batch item) or ``errors`` (every bad item
of a refused batch). :func:`from_response` turns such an answer into the class of its
family, so callers catch what they can act on (``RateLimited``, ``InvalidRequest``) and
read the server's own ``code`` for the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec


class ItemError(msgspec.Struct, frozen=True):
    """One bad item of a refused batch: its position, the field and why."""

    index: int
    field: str
    detail: str


class ConnecfyError(Exception):
    """Anything the client could not get done. ``status_code`` is None when no answer came."""

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        code: str = "",
        field: str | None = None,
        index: int | None = None,
        errors: list[ItemError] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.field = field
        self.index = index
        self.errors = errors or []
        self.retry_after = retry_after
        self.attempts = 1  # how many tries the client made before giving up

    def __str__(self) -> str:
        status = f"{self.status_code} " if self.status_code is not None else ""
        return f"{status}{self.code or 'error'}: {self.detail}"


class ConnectionFailed(ConnecfyError):
    """No answer: the connection was refused, broke, or timed out (after every attempt)."""


class InvalidRequest(ConnecfyError):
    """400, 413, 415: a field, the body or its size; ``field`` and ``errors`` say which."""


class AuthenticationFailed(ConnecfyError):
    """401: the API key (or session) is missing, unknown or revoked."""


class PermissionDenied(ConnecfyError):
    """403: the credential may not do that."""


class NotFound(ConnecfyError):
    """404: a device (or message) that does not exist for this account."""


class Conflict(ConnecfyError):
    """409: e.g. ``idempotency_key_reused`` (the same key with another body)."""


class RateLimited(ConnecfyError):
    """429: ``rate_limited`` (wait ``retry_after`` seconds) or ``quota_exceeded`` (the day's quota)."""


class ServiceUnavailable(ConnecfyError):
    """502, 503, 504: the server or its store cannot serve now; ``retry_after`` says when to try."""


class ServerError(ConnecfyError):
    """Any other status: an answer the client has no family for."""


def no_answer(exc: Exception) -> ConnectionFailed:
    """The error for a request that got no answer (``exc``: the HTTP library's)."""
    return ConnectionFailed(f"no answer from the server ({type(exc).__name__}: {exc})")


FAMILIES: dict[int, type[ConnecfyError]] = {
    400: InvalidRequest,
    413: InvalidRequest,
    415: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


class _ErrorBody(msgspec.Struct):
    code: str = ""
    detail: str = ""
    field: str | None = None
    index: int | None = None
    errors: list[ItemError] | None = None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date (seconds from now)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def from_response(status_code: int, content: bytes, headers: Any) -> ConnecfyError:
    """The error an answer stands for (``headers``: any mapping with ``get``)."""
    try:
        body = msgspec.json.decode(content, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = content[:200].decode(errors="replace").strip()
        body = _ErrorBody("", text or f"HTTP {status_code}")
    family = FAMILIES.get(status_code, ServerError)
    return family(
        body.detail or f"HTTP {status_code}",
        status_code=status_code,
        code=body.code,
        field=body.field,
        index=body.index,
        errors=body.errors,
        retry_after=retry_after_seconds(headers.get("retry-after")),
    )
