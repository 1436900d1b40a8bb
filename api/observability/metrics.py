"""Prometheus metrics: our counters and histograms, and ``GET /metrics``.

The counters of every worker process are merged at scrape time (prometheus_client's
multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set, as ``connecfy serve`` does);
the gauges (queue depths, devices, presence) are read from Redis at scrape time
(``broker.gauges``), at most once a second per process.
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import time
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from api.errors import ApiError
from api.observability.logs import pid
from api.state import broker_of
from broker import Broker
from broker.gauges import Gauges
from broker.records import SweepReport
from broker.webhooks.endpoints import Attempt

log = logging.getLogger("connecfy.api")

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
if MULTIPROCESS:
    # Each increment of a multiprocess value asks for the process id, to notice a fork
    # (a child must write files of its own); by default with os.getpid(), a system call
    # each time, four a request. pid() is the same id, kept current across a fork. Set
    # before any metric is made: each keeps the value store it was made with.
    values.ValueClass = values.MultiProcessValue(process_identifier=pid)
# Our own metrics; in multiprocess mode their values live in files per worker and a
# scrape merges them, so this registry is only read when there is one process.
REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, 405)
LONG_POLL = "connecfy.long_poll"  # set in a long poll's scope: its route label says so
LONG_POLL_LABEL = " (long poll)"  # what the label adds: its time is mostly waiting
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

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
LONG_POLLS_WAITING = Gauge(
    "connecfy_long_polls_waiting",
    "Long polls (GET .../tasks/?wait=N) held now, all workers together.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
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
# Every outcome's series exists from the start, at 0: an alert on increase() of one that
# appeared only with its first count would never see that count.
for _outcome in ("delivered", "failed", "gave_up", "disabled"):
    WEBHOOK_ATTEMPTS.labels(_outcome)
WEBHOOK_DELAY = Histogram(
    "connecfy_webhook_delay_seconds",
    "From a status change to its webhook's 2xx, retries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 86400.0),
    registry=REGISTRY,
)

GC_PAUSES = Histogram(
    "connecfy_gc_pause_seconds",
    "Time a process stood still in Python's cyclic garbage collector, by kind of process "
    "(worker: requests wait; background: jobs wait) and generation (2: a full collection, "
    "which walks every object the process keeps).",
    ["process", "generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
_gc_pauses: list[Any] = []  # this process's series, by generation
_gc_started = [0.0]


def watch_gc_pauses(process: str) -> None:
    """Time every collection of this process's cyclic garbage collector into
    :data:`GC_PAUSES` under ``process`` (``worker`` or ``background``; once per process,
    however often called). A full collection stops every request of a worker for as long
    as it takes: this is how a latency spike is told to be one."""
    if _timing_gc not in gc.callbacks:
        _gc_pauses[:] = [GC_PAUSES.labels(process, str(generation)) for generation in range(3)]
        gc.callbacks.append(_timing_gc)


def _timing_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _gc_pauses[info["generation"]].observe(time.perf_counter() - _gc_started[0])


class long_poll:  # used as a function: ``with long_poll(scope):``
    """A long poll in progress: counted while it lasts, and its request's latency is
    recorded under its own route label (``... (long poll)``), not the plain poll's. A
    class with no attributes rather than a generator: thousands are held at once."""

    __slots__ = ()

    def __init__(self, scope: dict[str, Any]) -> None:
        scope[LONG_POLL] = True

    def __enter__(self) -> None:
        LONG_POLLS_WAITING.inc()

    def __exit__(self, *exc: object) -> None:
        LONG_POLLS_WAITING.dec()


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


class RequestMetrics:
    """The request count and latency, by route template, method and status, with the
    labelled children kept so a request costs two dict lookups, not a label resolution."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._route_labels: dict[str, str] = {}

    def route_label(self, path_template: str | None) -> str:
        """The route as the API documents it (``/api/devices/{device_id}/tasks/``): Litestar
        matches /api/ paths without their trailing slash, the documents show it."""
        if not path_template:
            return UNMATCHED
        label = self._route_labels.get(path_template)
        if label is None:
            label = path_template
            if label.startswith("/api/") and not label.endswith("/"):
                label += "/"
            self._route_labels[path_template] = label
        return label

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "other"  # a label per made-up method would let anyone grow the metrics
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                HTTP_REQUESTS.labels(route, method, str(status)),
                HTTP_DURATION.labels(route, method),
            )
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
    pool_wait = GaugeMetricFamily(
        "connecfy_pool_wait_seconds",
        "How long the message next in line in a pool has been queued (since its send_at "
        "when scheduled), the longest over the pools of account shards (shard=account) "
        "or of the platform pool (shard=platform); 0 when they are empty.",
        labels=["shard"],
    )
    for kind, totals in (("account", gauges.account), ("platform", gauges.platform)):
        queued.add_metric(["device", kind], totals.device_queued)
        queued.add_metric(["pool", kind], totals.pool_queued)
        devices.add_metric([kind], totals.devices)
        online.add_metric([kind], totals.devices_online)
        shards.add_metric([kind], totals.shards)
        pool_wait.add_metric([kind], gauges.pool_wait_seconds(totals))
    return [up, queued, devices, online, shards, pool_wait]


class _Families:
    """A collector that yields families already read (the Redis read is async, collect is not)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self.families


class _Registered:
    def collect(self) -> Any:
        return REGISTRY.collect()


def exposition(gauges: Gauges | None) -> bytes:
    """This process's view of every worker's counters, and the gauges, as text."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(_Registered())
    registry.register(_Families(_gauge_families(gauges)))  # type: ignore[arg-type]
    return generate_latest(registry)


GAUGES_MAX_AGE_SECONDS = 1.0


class GaugeCache:
    """The gauges, read from Redis at most once per GAUGES_MAX_AGE_SECONDS per process:
    reading them costs O(shards), and an open /metrics must not let anyone make Redis do
    that per request."""

    def __init__(self) -> None:
        self.read_at = -GAUGES_MAX_AGE_SECONDS
        self.gauges: Gauges | None = None

    async def get(self, broker: Broker) -> Gauges | None:
        if time.monotonic() - self.read_at < GAUGES_MAX_AGE_SECONDS:
            return self.gauges
        try:
            self.gauges = await broker.gauges()
        except Exception:  # noqa: BLE001 - the counters are still worth serving
            log.warning("metrics: could not read the gauges from Redis", exc_info=True)
            self.gauges = None
        self.read_at = time.monotonic()
        return self.gauges


_gauges = GaugeCache()


def metrics_token_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """With ``CONNECFY_METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer <token>``."""
    token = broker_of(connection).settings.metrics_token
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
    """Prometheus's text exposition for scrapers: not part of the JSON API, so not in its
    document (docs/operations.md describes it)."""

    path = "/metrics"
    tags = ["operations"]
    include_in_schema = False

    @get("/", operation_id="metrics", guards=[metrics_token_guard], include_in_schema=False)
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every worker's counters, queue depths and presence."""
        return Response(exposition(await _gauges.get(broker_of(request))), media_type=CONTENT_TYPE_LATEST)
