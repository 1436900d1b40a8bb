"""Every error, everywhere, as JSON: ``{"status_code", "code", "detail"}``.

Handlers never build error responses themselves: they raise ``ApiError`` (or a broker
domain error, or Litestar raises its own), and :func:`exception_handlers` maps each to
that shape. An unexpected exception becomes a 500 with the same shape and no traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.state import broker_of
from broker import errors
from broker.campaign_files import FileTooLarge
from broker.records import RateDecision
from broker.redis_client import REDIS_UNREACHABLE, RedisError, StoreRefused, refusal

log = logging.getLogger("connecfy.api")


class ApiError(Exception):
    def __init__(
        self, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def not_authenticated(detail: str = "authentication required") -> ApiError:
    return ApiError(401, "not_authenticated", detail)


def forbidden(detail: str = "this credential may not do that") -> ApiError:
    return ApiError(403, "forbidden", detail)


def not_json(exc: Exception) -> ApiError:
    """The 400 for a body sent as JSON that does not parse as JSON."""
    return ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}")


def not_sent_as_json() -> ApiError:
    """The 415 for a body sent with another ``Content-Type``."""
    return ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


# Broker error -> HTTP status. Anything not listed is a 400.
_BROKER_STATUS: dict[type[errors.BrokerError], int] = {
    errors.AccountNotFound: 404,
    errors.ApiKeyNotFound: 404,
    errors.DeviceNotFound: 404,
    errors.MessageNotFound: 404,
    errors.InvalidTransition: 409,
    errors.IdempotencyKeyReused: 409,
    errors.EmailTaken: 409,
    errors.QuotaExceeded: 429,
    errors.RateLimited: 429,
    errors.PairingCodeInvalid: 404,  # no pairing code waits under this one
    errors.LimitRequestNotFound: 404,
    errors.WebhookNotFound: 404,
    errors.WebhookEventNotFound: 404,
    errors.WebhookLimitReached: 409,
    errors.WebhookDisabled: 409,
    errors.LimitRequestPending: 409,
    errors.LimitRequestDecided: 409,
    errors.AlreadySuppressed: 409,
    errors.NotSuppressed: 404,
    errors.CampaignNotFound: 404,
    errors.CampaignStateConflict: 409,
    FileTooLarge: 413,
}


def _body(status_code: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"status_code": status_code, "code": code, "detail": detail, **extra}


def _api_error(_: Request, exc: ApiError) -> Response:
    return Response(
        _body(exc.status_code, exc.code, exc.detail, **exc.extra), status_code=exc.status_code, headers=exc.headers
    )


def rate_headers(decision: RateDecision) -> dict[str, str]:
    """The ``RateLimit-*`` headers (IETF draft): the burst, what is left of it now, and
    seconds until it is whole again; a refusal adds ``Retry-After`` in seconds."""
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(-(-decision.reset_ms // 1000)),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, -(-decision.retry_after_ms // 1000)))
    return headers


def rate_header_pairs(decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """:func:`rate_headers` as a response sends them (names in lower case)."""
    return [(name.lower().encode(), value.encode()) for name, value in rate_headers(decision).items()]


def _broker_error(request: Request, exc: errors.BrokerError) -> Response:
    status = next((s for cls, s in _BROKER_STATUS.items() if isinstance(exc, cls)), 400)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if getattr(exc, "field", ""):
        extra["field"] = exc.field  # type: ignore[attr-defined]
    if getattr(exc, "index", None) is not None:
        extra["index"] = exc.index  # type: ignore[attr-defined]
    if isinstance(exc, errors.RateLimited):
        headers = rate_headers(exc.decision)
    elif isinstance(exc, errors.QuotaExceeded):
        now_ms = broker_of(request).clock()
        headers = {"Retry-After": str(max(1, -(-(86_400_000 - now_ms % 86_400_000) // 1000)))}
    return Response(_body(status, exc.code, exc.detail, **extra), status_code=status, headers=headers)


def _validation_error(_: Request, exc: ValidationException) -> Response:
    """A value Litestar refused before the handler: a query, path or header parameter
    (named in ``field``, and in the sentence), or the body."""
    detail = exc.detail or "the request body is not valid"
    extra: dict[str, Any] = {}
    if isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict) and first.get("message"):
            detail = str(first["message"])
            if isinstance(first.get("key"), str) and first.get("source") is not None:
                extra["field"] = first["key"]
                detail = f"{first['key']}: {detail}"
    return Response(_body(400, "invalid_request", detail, **extra), status_code=400)


_HTTP_CODES = {
    400: "invalid_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def http_error(_: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if exc.status_code < 500 else "the server could not complete the request"
    headers = dict(getattr(exc, "headers", None) or {})
    for name, value in headers.items():
        if name.lower() == "allow":
            # Litestar's 405 lists a set of methods, in an order that differs from one
            # worker process to the next; sorted, as an OPTIONS answer lists them.
            headers[name] = ", ".join(sorted(method.strip() for method in value.split(",")))
    return Response(_body(exc.status_code, code, detail), status_code=exc.status_code, headers=headers)


def store_unavailable(refused: StoreRefused | None = None) -> ApiError:
    """The 503 for a message store that cannot serve: ``refused``'s code when Redis
    refused (``store_full``, ``store_read_only``, ``store_loading``, ``store_busy``) or
    did not copy a write to its replicas in time (``store_not_replicated``), else
    ``unavailable`` (unreachable, or no answer in time); always with Retry-After."""
    if refused is None:
        return ApiError(
            503, "unavailable", "the message store is unreachable; try again shortly", headers={"Retry-After": "2"}
        )
    return ApiError(503, refused.code, refused.detail, headers={"Retry-After": str(refused.retry_after)})


def _store_error(request: Request, exc: Exception) -> Response:
    """Any error of the Redis client: 503 when Redis is unreachable, too slow or refusing
    (whichever exception redis-py raised for the refusal), else a 500 like any other."""
    refused = refusal(exc)
    if refused is not None:
        log.warning("redis refused: %s (%s)", refused.code, refused.reply)
        return _api_error(request, store_unavailable(refused))
    if isinstance(exc, REDIS_UNREACHABLE):
        # Name the exception too: some say nothing (redis-py's MaxConnectionsError when all
        # of a worker's connections to a node are busy), which read as "Redis is down".
        log.warning("redis unreachable: %s: %s", type(exc).__name__, exc or "(no detail)")
        return _api_error(request, store_unavailable())
    return _unexpected(request, exc)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(_body(500, "internal_error", "the server could not complete the request"), status_code=500)


def exception_handlers() -> dict[type[Exception] | int, Any]:
    return {
        ApiError: _api_error,
        errors.BrokerError: _broker_error,
        ValidationException: _validation_error,
        HTTPException: http_error,
        RedisError: _store_error,
        Exception: _unexpected,
    }
