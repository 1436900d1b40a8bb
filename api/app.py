"""The Litestar application: routes, credentials, errors, and the broker's lifetime.

The app only authenticates, validates and calls one broker operation per request. The
Redis client, the broker and the history store are made in the lifespan hook; a
background task sweeps (expiry, lost devices, pool returns) while this process holds
the sweeper lock, another snapshots history while it holds the snapshotter lock, a third
delivers webhooks while it holds the webhooks lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from litestar import Litestar, Request
from litestar.openapi import OpenAPIConfig

from api.api_keys import ApiKeysController
from api.auth import AuthController
from api.credentials import DEPENDENCIES
from api.dashboard import dashboard_router, template_config
from api.devices import DashboardDevicesController, PhoneController
from api.errors import ApiError, exception_handlers
from api.external import ExternalController
from api.health import HealthController
from api.limits import AccountLimitsController, OperatorController
from api.observability import MetricsController, configure_logging, instrument, swept
from api.openapi import complete_schema
from api.sms import SmsController
from api.stats import StatsController
from api.webhooks import WebhooksController
from broker import Broker, Settings, __version__
from broker.history import HistoryStore
from broker.redis_client import connect
from broker.snapshotter import Snapshotter
from broker.webhooks.courier import Courier
from broker.webhooks.dispatcher import WebhookDispatcher

log = logging.getLogger("connecfy.api")

MAX_BODY = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SWEEP_INTERVAL_SECONDS = 1.0


_body_types: dict[int, Any] = {}


def _declared_body(request: Request) -> Any:
    handler = request.route_handler
    key = id(handler)
    if key not in _body_types:
        field = handler.parsed_fn_signature.parameters.get("data")
        _body_types[key] = None if field is None else field.annotation
    return _body_types[key]


async def check_body(request: Request) -> None:
    """A body must be JSON (415 otherwise) of exactly the declared types (400 otherwise).

    Litestar converts leniently ("81" would pass as 81); this strict decode runs first,
    after the credential guards, so a wrong type is refused and a bad credential is 401.
    """
    if request.method not in BODY_METHODS:
        return
    has_body = request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
    if not has_body:
        return
    if request.content_type[0] != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    declared = _declared_body(request)
    if declared is None:
        return
    try:
        msgspec.json.decode(await request.body(), type=declared)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_request", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_request", "the body is nested too deeply") from None


async def _sweep_forever(broker: Broker, holder: str) -> None:
    while True:
        try:
            report = await broker.sweep_if_leader(holder, lease_ms=int(SWEEP_INTERVAL_SECONDS * 10_000))
            if report is not None:
                swept(report)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed pass is retried on the next tick
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


def create_app(settings: Settings | None = None, *, sweep: bool = True) -> Litestar:
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        raise ValueError("the app needs REDIS_URL (connecfy serve starts a private Redis and sets it)")

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Fail fast while Redis is away (503 with Retry-After), retry once on a dropped
        # connection (a restarted Redis), and reconnect by itself afterwards.
        client = connect(settings.redis_url, max_connections=settings.redis_max_connections, pool_timeout=5,
                         health_check_interval=30, socket_connect_timeout=2, socket_timeout=5,
                         retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError])
        broker = Broker(client, settings)
        await broker.start()
        history = HistoryStore.from_settings(settings)
        await history.start()
        broker.history = history
        app.state.broker = broker
        # Test events from the dashboard; the dispatcher has a courier of its own.
        app.state.webhook_courier = courier = Courier(
            timeout_s=settings.webhook_timeout_seconds, max_in_flight=8,
            allow_loopback=settings.webhook_allow_loopback_http)
        complete_schema(app)
        tasks = [asyncio.create_task(_sweep_forever(broker, uuid.uuid4().hex)),
                 asyncio.create_task(Snapshotter(broker, history).run_forever()),
                 asyncio.create_task(WebhookDispatcher(broker).run_forever())] if sweep else []
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await courier.close()
            await history.close()
            await client.aclose()

    return Litestar(
        route_handlers=[PhoneController, DashboardDevicesController, SmsController, ExternalController,
                        ApiKeysController, StatsController, AuthController, HealthController, MetricsController,
                        AccountLimitsController, OperatorController, WebhooksController, dashboard_router],
        template_config=template_config,
        dependencies=DEPENDENCIES,
        exception_handlers=exception_handlers(),
        before_request=check_body,
        request_max_body_size=MAX_BODY,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Connecfy", version=__version__, path="/schema"),
        debug=False,
        logging_config=None,  # configure_logging() owns the log format: JSON lines
    )


def app_from_env() -> Any:
    """Factory for ASGI servers (``api.app:app_from_env``), configured by the environment:
    the app inside the request id, access log and metrics wrapper."""
    configure_logging()
    return instrument(create_app(Settings.from_env()))
