"""The Litestar application: routes, credentials, errors, and the broker's lifetime.

The app only authenticates, validates and calls one broker operation per request. The
Redis client, the broker and the history store are made in the lifespan hook. Unless
``connecfy serve`` runs them in a process of their own (``connecfy/background.py``), the
background jobs run here as tasks: the sweeper (expiry, lost devices, pool returns), the
history snapshotter and the webhook dispatcher, each on the shards this process holds
(:mod:`broker.leases`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.exceptions import HTTPException
from litestar.response.base import ASGIResponse
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send

from api.account_settings import AccountSettingsController
from api.api_keys import ApiKeysController
from api.auth import AuthController
from api.campaigns import MULTIPART, CampaignsController
from api.dashboard import dashboard_router, page_or_json_error, template_config
from api.devices import DashboardDevicesController, PhoneController
from api.errors import ApiError, exception_handlers, not_json, not_sent_as_json
from api.external import ExternalController
from api.health import HealthController
from api.hot_path import HOT_PATH, check_hot_paths
from api.inbox import InboxController
from api.inputs import MAX_BODY
from api.limits import AccountLimitsController, OperatorController
from api.observability import (
    MetricsController,
    configure_logging,
    instrument,
    swept,
    watch_gc_pauses,
    webhook_attempted,
)
from api.openapi import ClosedStructs, openapi_config
from api.shutdown import on_stopping
from api.sms import SmsController
from api.stats import StatsController
from api.suppressions import SuppressionsController
from api.webhooks import WebhooksController
from broker import Broker, Settings, __version__
from broker.history import HistoryStore
from broker.jobs import Observers, start_jobs, stop_jobs
from broker.redis_client import redis_for
from broker.webhooks.courier import Courier

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _declared_body(request: Request[Any, Any, Any]) -> Any:
    """The type of the route's body (``Any``, any JSON, for a route that takes none),
    from the handler's signature, which Litestar parses once and keeps on the handler.
    (A cache of ours keyed by ``id(handler)`` gave a handler of a later app, whose id
    reused a freed one's, that other route's body type.)"""
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    return Any if field is None else field.annotation


async def _answer_options(scope: Scope, receive: Receive, send: Send) -> None:
    """``OPTIONS`` on any route: 204 with ``Allow`` listing every method of the path,
    answered before the route's guards (Litestar's own answer comes after them, so it
    asked for the path's credential): it tells nothing the API document does not."""
    allowed: dict[str, str] = Litestar.from_scope(scope).state.allowed_methods
    allow = allowed.get(str(scope.get("path_template")), "OPTIONS")
    await ASGIResponse(status_code=204, headers={"Allow": allow})(scope, receive, send)


def answer_options(app: ASGIApp) -> ASGIApp:
    """Every route's way in without the hot path: ``OPTIONS`` answered, else the route."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "OPTIONS":
            await _answer_options(scope, receive, send)
            return
        await app(scope, receive, send)

    return middleware


def route_entry(app: ASGIApp) -> ASGIApp:
    """Every route's way in, once Litestar has routed the request: ``OPTIONS`` answered
    (:func:`_answer_options`); the hot path (``api/hot_path.py``) for a route
    that has one, which answers a plain request itself and hands any other on; else the
    route, as Litestar serves it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "OPTIONS":
            await _answer_options(scope, receive, send)
            return
        hot_path = scope["route_handler"].opt.get(HOT_PATH)
        if hot_path is not None:
            handed_on = await hot_path.serve(scope, receive, send)
            if handed_on is None:
                return
            receive = handed_on
        await app(scope, receive, send)

    return middleware


async def check_request(request: Request[Any, Any, Any]) -> None:
    """A query names each parameter once (every one the API takes is a single value, and
    Litestar would silently keep one of two), and a body must be JSON (415 otherwise,
    400 ``invalid_json`` when it does not parse) of exactly the declared types (400
    ``invalid_request`` otherwise); a route that declares no body takes none but JSON.

    Litestar converts leniently ("81" would pass as 81); this strict decode runs first,
    after the credential guards, so a wrong type is refused and a bad credential is 401.
    """
    if request.scope["query_string"]:
        names = [name for name, _ in request.query_params.multi_items()]
        if len(names) != len(set(names)):
            repeated = next(name for name in names if names.count(name) > 1)
            raise ApiError(400, "invalid_request", f"send the query parameter {repeated} once", field=repeated)
    if request.method not in BODY_METHODS:
        return
    has_body = request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
    if not has_body:
        return
    if request.route_handler.opt.get(MULTIPART):
        if request.content_type[0] != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send the body as multipart/form-data")
        return
    if request.content_type[0] != "application/json":
        raise not_sent_as_json()
    declared = _declared_body(request)
    body = await request.body()
    if not body:  # chunked, and empty after all
        return
    try:
        msgspec.json.decode(body, type=declared)
    except msgspec.ValidationError as exc:  # a DecodeError too: caught first
        # Of the declared types? The decode stops at the first wrong value, before
        # it reads what follows, so the body may not even be JSON.
        if not _valid_with_whole_floats(_json(body), declared):
            raise ApiError(400, "invalid_request", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise not_json(exc) from None
    except RecursionError:
        raise ApiError(400, "invalid_request", "the body is nested too deeply") from None


def _json(body: bytes) -> Any:
    """The body as plain JSON values; 400 ``invalid_json`` if it is not JSON."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise not_json(exc) from None
    except RecursionError:
        raise ApiError(400, "invalid_request", "the body is nested too deeply") from None


def _whole_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_floats_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_floats_as_ints(item) for key, item in value.items()}
    return value


def _valid_with_whole_floats(value: Any, declared: Any) -> bool:
    """Whether the body's JSON values are of the declared types once a number written
    with a zero fraction (``30.0``) counts as the integer it is, as JSON Schema counts
    it. Tried only after the strict decode failed, so a well-formed request pays nothing
    for it."""
    try:
        msgspec.convert(_whole_floats_as_ints(value), type=declared)
    except (msgspec.ValidationError, RecursionError):
        return False
    return True


def create_app(settings: Settings | None = None, *, sweep: bool = True) -> Litestar:
    """The app. With ``hot_paths`` off in ``settings`` the plain polls, heartbeats and
    external sends too are served by Litestar's handlers (``api/hot_path.py``), as tests
    compare the two."""
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        raise ValueError("the app needs REDIS_URL (connecfy serve starts a private Redis and sets it)")

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # One Redis or a Redis Cluster, as REDIS_URL's node says; each command bounded
        # in time (503 with Retry-After past it) and sent once.
        client = await redis_for(settings)
        broker = Broker(client, settings)
        await broker.start()
        history = HistoryStore.from_settings(settings)
        await history.start()
        broker.history = history
        app.state.broker = broker
        forget_stopping = on_stopping(broker.wakeups.end_all)
        app.state.allowed_methods = {
            route.path_format: ", ".join(sorted(route.methods)) for route in app.routes if isinstance(route, HTTPRoute)
        }
        # Test events from the dashboard; the dispatcher has a courier of its own.
        app.state.webhook_courier = courier = Courier(
            timeout_s=settings.webhook_timeout_seconds,
            max_in_flight=8,
            allow_loopback=settings.webhook_allow_loopback_http,
            clock=broker.clock,
        )
        jobs = (
            start_jobs(broker, history, Observers(swept, webhook_attempted))
            if sweep and settings.background_in_workers
            else []
        )
        try:
            yield
        finally:
            forget_stopping()
            await stop_jobs(jobs)
            await courier.close()
            await history.close()
            await broker.close()

    app = Litestar(
        route_handlers=[
            PhoneController,
            DashboardDevicesController,
            SmsController,
            ExternalController,
            ApiKeysController,
            SuppressionsController,
            CampaignsController,
            AccountSettingsController,
            InboxController,
            StatsController,
            AuthController,
            HealthController,
            MetricsController,
            AccountLimitsController,
            OperatorController,
            WebhooksController,
            dashboard_router,
        ],
        template_config=template_config,
        exception_handlers={**exception_handlers(), HTTPException: page_or_json_error},
        before_request=check_request,
        middleware=[route_entry if settings.hot_paths else answer_options],
        request_max_body_size=MAX_BODY,
        lifespan=[lifespan],
        openapi_config=openapi_config(__version__),
        plugins=[ClosedStructs()],
        debug=False,
        logging_config=None,  # configure_logging() owns the log format: JSON lines
    )
    check_hot_paths(app, check_request, MAX_BODY)
    return app


# A served worker's collector, once its app has started: the objects of the code and the
# app (about 100,000, from imports to the routes' models) frozen out of every later
# collection, and the young generation collected after 10,000 new objects instead of 700,
# full collections after 50 of the middle one's instead of 10. A long poll keeps its
# request's objects for up to a minute, so a worker holding thousands of them has a large
# live heap that a full collection walks in one go, every request waiting meanwhile; see
# docs/benchmarks.md ("Garbage collection in the workers").
GC_THRESHOLDS = (10_000, 10, 50)


async def settle_heap(_: Litestar) -> None:
    """The served worker's collector set up (:data:`GC_THRESHOLDS`), after startup."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    logging.getLogger("connecfy.api").info(
        "collector settled: %d objects of the started app frozen, thresholds %s", gc.get_freeze_count(), GC_THRESHOLDS
    )


def app_from_env() -> Any:
    """Factory for ASGI servers (``api.app:app_from_env``), configured by the environment:
    the app inside the request id, access log and metrics wrapper; its collector's pauses
    timed, and set up for a long-running worker once the app has started
    (:func:`settle_heap`)."""
    configure_logging()
    watch_gc_pauses("worker")
    app = create_app(Settings.from_env())
    app.on_startup.append(settle_heap)
    return instrument(app)
