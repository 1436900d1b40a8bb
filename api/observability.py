"""Metrics, request ids and JSON logs.

- :func:`instrument` wraps the whole ASGI app (outside Litestar's router, so 404 and 405
  are seen too): every request gets an id (``X-Request-ID``), one JSON access line and
  its count and latency by route template, method and status.
- ``MetricsController``: ``GET /metrics`` in the Prometheus text format; the counters of
  every worker process (prometheus_client's multiprocess mode when
  ``PROMETHEUS_MULTIPROC_DIR`` is set, as ``connecfy serve`` does) plus gauges read
  from Redis at scrape time (``broker.gauges``).
- :func:`configure_logging`: every log record one JSON object per line on stderr,
  carrying the request id inside a request.
- :func:`claimed`, :func:`swept` and :func:`webhook_attempted`: counters the tasks
  handler, the sweeper and the webhook dispatcher feed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import logging
import os
import re
import sys
import time
from typing import Any

import msgspec
from litestar import Controller, Response, get
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from api.errors import ApiError
from broker import Broker
from broker.gauges import Gauges
from broker.records import SweepReport
from broker.webhooks.endpoints import Attempt

log = logging.getLogger("connecfy.api")
access_log = logging.getLogger("connecfy.access")

# Empty: the observability wrapper sits outside Litestar (see instrument), not in its route stack.

REQUEST_ID_HEADER = b"x-request-id"
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, 405)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_valid_request_id = re.compile(rb"[A-Za-z0-9._-]{1,64}").fullmatch


# ---------------------------------------------------------------- metrics

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# Our own metrics; in multiprocess mode their values live in files per worker and a
# scrape merges them, so this registry is only read when there is one process.
REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "connecfy_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "connecfy_http_request_duration_seconds",
    "Time from request to the last byte of the response, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
CLAIMS = Counter("connecfy_claims", "Claim calls by phones (GET .../tasks/).", registry=REGISTRY)
CLAIMED = Counter("connecfy_claimed_messages", "Messages handed to phones by claims.", registry=REGISTRY)
SWEEPS = Counter("connecfy_sweeps", "Sweep passes over every shard.", registry=REGISTRY)
SWEPT = Counter(
    "connecfy_swept_messages",
    "Messages the sweep moved: expired (TTL passed while queued), lost (failed device_lost), "
    "returned (back to the pool from an offline phone).",
    ["outcome"],
    registry=REGISTRY,
)
_swept_expired, _swept_lost, _swept_returned = (SWEPT.labels(o) for o in ("expired", "lost", "returned"))
WEBHOOK_ATTEMPTS = Counter(
    "connecfy_webhook_attempts",
    "Webhook POSTs of message events by outcome: delivered, failed (retried later), "
    "gave_up (a day of failures), disabled (the endpoint was disabled).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_DELAY = Histogram(
    "connecfy_webhook_delay_seconds",
    "From a status change to its webhook's 2xx, retries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 86400.0),
    registry=REGISTRY,
)


def claimed(messages: int) -> None:
    """One claim by a phone that took ``messages`` messages."""
    CLAIMS.inc()
    if messages:
        CLAIMED.inc(messages)


def webhook_attempted(attempt: Attempt) -> None:
    """One webhook POST of a message event by the dispatcher."""
    WEBHOOK_ATTEMPTS.labels(attempt.outcome).inc()
    if attempt.outcome == "delivered":
        WEBHOOK_DELAY.observe(max(0, attempt.at_ms - attempt.event.at) / 1000)


def swept(report: SweepReport) -> None:
    """One sweep pass over every shard."""
    SWEEPS.inc()
    if report.expired:
        _swept_expired.inc(report.expired)
    if report.lost:
        _swept_lost.inc(report.lost)
    if report.returned:
        _swept_returned.inc(report.returned)


_route_labels: dict[str, str] = {}


def route_label(path_template: str | None) -> str:
    """The route as the API documents it (``/api/devices/{device_id}/tasks/``): Litestar
    matches /api/ paths without their trailing slash, the documents show it."""
    if not path_template:
        return UNMATCHED
    label = _route_labels.get(path_template)
    if label is None:
        label = path_template
        if label.startswith("/api/") and not label.endswith("/"):
            label += "/"
        _route_labels[path_template] = label
    return label


_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(route: str, method: str, status: int, seconds: float) -> None:
    if method not in KNOWN_METHODS:
        method = "other"  # a label per made-up method would let anyone grow the metrics
    key = (route, method, status)
    child = _children.get(key)
    if child is None:
        child = _children[key] = (HTTP_REQUESTS.labels(route, method, str(status)), HTTP_DURATION.labels(route, method))
    child[0].inc()
    child[1].observe(seconds)


def _gauge_families(gauges: Gauges | None) -> list[GaugeMetricFamily]:
    up = GaugeMetricFamily(
        "connecfy_redis_up",
        "Whether this scrape could read the gauges below from Redis.",
        value=0 if gauges is None else 1,
    )
    if gauges is None:
        return [up]
    queued = GaugeMetricFamily(
        "connecfy_queued_messages",
        "Queued messages: in device queues (queue=device) and pools (queue=pool), of "
        "account shards (shard=account) and platform pools (shard=platform).",
        labels=["queue", "shard"],
    )
    devices = GaugeMetricFamily("connecfy_devices", "Paired devices.", labels=["shard"])
    online = GaugeMetricFamily("connecfy_devices_online", "Devices with a live heartbeat.", labels=["shard"])
    shards = GaugeMetricFamily(
        "connecfy_shards", "Shards: one per self-managed account, one per platform pool.", labels=["shard"]
    )
    for kind, totals in (("account", gauges.account), ("platform", gauges.platform)):
        queued.add_metric(["device", kind], totals.device_queued)
        queued.add_metric(["pool", kind], totals.pool_queued)
        devices.add_metric([kind], totals.devices)
        online.add_metric([kind], totals.devices_online)
        shards.add_metric([kind], totals.shards)
    return [up, queued, devices, online, shards]


class _Families:
    """A collector that yields families already read (the Redis read is async, collect is not)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self.families


def exposition(gauges: Gauges | None) -> bytes:
    """This process's view of every worker's counters, and the gauges, as text."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(_Registered())
    registry.register(_Families(_gauge_families(gauges)))  # type: ignore[arg-type]
    return generate_latest(registry)


class _Registered:
    def collect(self) -> Any:
        return REGISTRY.collect()


def metrics_token_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """With ``CONNECFY_METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer <token>``."""
    broker: Broker = connection.app.state.broker
    token = broker.settings.metrics_token
    if not token:
        return
    sent = connection.headers.get("authorization", "")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(
            401,
            "not_authenticated",
            "GET /metrics needs Authorization: Bearer <metrics token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


class MetricsController(Controller):
    path = "/metrics"
    tags = ["operations"]
    include_in_schema = False

    @get("/", operation_id="metrics", guards=[metrics_token_guard], include_in_schema=False)
    async def metrics(self, broker: Broker) -> Response[bytes]:
        """Prometheus text exposition: every worker's counters, queue depths and presence."""
        return Response(exposition(await _cached_gauges(broker)), media_type=CONTENT_TYPE_LATEST)


GAUGES_MAX_AGE_SECONDS = 1.0
_gauges_cache: list[Any] = [0.0, None]  # [monotonic time read, Gauges or None]


async def _cached_gauges(broker: Broker) -> Gauges | None:
    """The gauges, read from Redis at most once per GAUGES_MAX_AGE_SECONDS per process:
    reading them costs O(shards), and an open /metrics must not let anyone make Redis
    do that per request."""
    read_at, gauges = _gauges_cache
    if time.monotonic() - read_at < GAUGES_MAX_AGE_SECONDS:
        return gauges
    try:
        gauges = await broker.gauges()
    except Exception:  # noqa: BLE001 - the counters are still worth serving
        log.warning("metrics: could not read the gauges from Redis", exc_info=True)
        gauges = None
    _gauges_cache[:] = [time.monotonic(), gauges]
    return gauges


# ---------------------------------------------------------------- logging

_encoder = msgspec.json.Encoder(enc_hook=repr)
_second = [-1, ""]  # the last whole second formatted, and its text


def iso_utc(t: float) -> str:
    """``2026-01-31T12:00:00.123Z``; strftime once a second, not per line."""
    second = int(t)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((t - second) * 1000):03d}Z"


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC), level, logger, message, pid (which worker),
    request_id inside a request, the ``fields`` a record carries (the access line's), exc
    when any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _encoder.encode(entry).decode()


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("connecfy-json")
    return handler


def logging_dictconfig(level: str = "INFO") -> dict[str, Any]:
    """The same JSON lines for granian's own loggers (its ``log_dictconfig``)."""
    handler = {"()": "api.observability.json_handler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {"json": handler},
        "loggers": {
            "_granian": {"handlers": ["json"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["json"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["json"], "level": level},
    }


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as one JSON object per line.

    Idempotent; call it again after building the Litestar app, whose default logging
    config replaces the root logger's handlers."""
    root = logging.getLogger()
    root.setLevel(level)
    removed: set[logging.Handler] = set()
    for name in ("", "litestar", "granian", "_granian", "granian.access"):
        logger = logging.getLogger(name)
        removed.update(logger.handlers)
        logger.handlers.clear()
        logger.propagate = True
    for handler in removed:
        listener = getattr(handler, "listener", None)  # Litestar's queue handler owns a thread
        if listener is not None:
            listener.stop()
        handler.close()
    root.addHandler(json_handler())
    global _write_access_line
    _write_access_line = _access_line_to_stderr


# ---------------------------------------------------------------- the ASGI wrapper


def new_request_id() -> str:
    return os.urandom(12).hex()


class ObservedApp:
    """Pure ASGI: request id, access line, request count and latency, around ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # the wrapped app's attributes (state, openapi_schema, ...)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]  # as sent: the router normalizes scope["path"] in place
        rid = None
        forwarded = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if rid is None and _valid_request_id(value):
                    rid = value.decode()
            elif name == b"x-forwarded-for":
                forwarded = value if forwarded is None else forwarded + b", " + value
        if rid is None:
            rid = new_request_id()
        rid_header = (REQUEST_ID_HEADER, rid.encode())
        token = request_id.set(rid)
        status = 0
        sent = 0
        body_done = False

        async def receive_tracked() -> Any:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_with_id(message: Any) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_tracked, send_with_id)
            if not body_done and status:
                await _drain(receive)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if status:
                raise
            status = 500
            body = _encoder.encode(
                {"status_code": 500, "code": "internal_error", "detail": "the server could not complete the request"}
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        rid_header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            sent = len(body)
        finally:
            seconds = time.perf_counter() - start
            route = route_label(scope.get("path_template"))
            method = scope.get("method", "")
            _observe(route, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                _access_line(method, path, route, status, seconds, sent, scope.get("client"), rid, forwarded)
            request_id.reset(token)


DRAIN_MAX_BYTES = 8 * 1024 * 1024


async def _drain(receive: Any) -> None:
    """Read and drop what is left of a request body the app answered without reading
    (a 401 before the body, a 413 past the cap), up to DRAIN_MAX_BYTES: otherwise the
    unread bytes are taken for the next request on a kept-alive connection, and the
    client sees that one fail."""
    read = 0
    while read <= DRAIN_MAX_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _access_line_to_stderr(entry: dict[str, Any]) -> None:
    """The access line straight to stderr, formatted as :class:`JsonFormatter` would: the
    logging machinery (record, handler lock, formatter) costs more than the request."""
    entry["ts"] = iso_utc(time.time())
    with contextlib.suppress(OSError):  # no stderr is no reason to fail a request
        os.write(2, _encoder.encode(entry) + b"\n")


def _access_line_to_logging(entry: dict[str, Any]) -> None:
    record = logging.LogRecord(access_log.name, logging.INFO, "", 0, entry["message"], None, None)
    record.fields = {k: v for k, v in entry.items() if k not in _RECORD_KEYS}
    access_log.handle(record)


_RECORD_KEYS = frozenset({"ts", "level", "logger", "message", "pid", "request_id"})
# Until configure_logging() puts JSON lines on stderr, access lines go through logging.
_write_access_line = _access_line_to_logging


def _access_line(
    method: str,
    path: str,
    route: str,
    status: int,
    seconds: float,
    sent: int,
    client: Any,
    rid: str,
    forwarded: bytes | None = None,
) -> None:
    path = path[:MAX_LOGGED_CHARS]
    entry = {
        "ts": "",
        "level": "info",
        "logger": "connecfy.access",
        "message": f"{method} {path} {status}",
        "pid": _pid[0],
        "request_id": rid,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": client[0] if client else None,
        "bytes": sent,
    }
    if forwarded is not None:
        # As received: whether to trust it is the proxy's business (CONNECFY_TRUST_FORWARDED_FOR).
        entry["forwarded_for"] = forwarded[:MAX_LOGGED_CHARS].decode("latin-1")
    _write_access_line(entry)


MAX_LOGGED_CHARS = 512


def instrument(app: Any) -> Any:
    """``app`` wrapped by :class:`ObservedApp` (once: an instrumented app is returned as is)."""
    return app if isinstance(app, ObservedApp) else ObservedApp(app)
