"""The background jobs, in a process of their own: the sweeper (expiry, lost devices,
pool returns), the history snapshotter and the webhook dispatcher.

``connecfy serve`` starts one ``connecfy background`` beside its request workers (and
restarts it if it exits), so this work never competes with a request on a worker's
event loop: a snapshot pass or a burst of webhook POSTs does not lengthen a phone's
claim. Each job still takes its Redis lock before it works, so any number of these
processes (one per host) is safe: one of each job runs at a time. An ASGI server other
than ``connecfy serve`` runs the jobs inside its workers instead
(``CONNECFY_BACKGROUND_IN_WORKERS``, on by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError

from broker.broker import Broker
from broker.history import HistoryStore
from broker.records import SweepReport
from broker.redis_client import PassLog, connect
from broker.settings import Settings
from broker.snapshotter import Snapshotter
from broker.webhooks.dispatcher import WebhookDispatcher
from broker.webhooks.endpoints import Attempt

log = logging.getLogger("connecfy.background")

SWEEP_INTERVAL_SECONDS = 1.0
PARENT_CHECK_SECONDS = 1.0


def redis_for(settings: Settings) -> Any:
    """The Redis client of a server process: fail fast while Redis is away, retry once on
    a dropped connection (a restarted Redis), reconnect by itself afterwards."""
    return connect(settings.redis_url, max_connections=settings.redis_max_connections, pool_timeout=5,
                   health_check_interval=30, socket_connect_timeout=2, socket_timeout=5,
                   retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError])


async def sweep_forever(broker: Broker, on_sweep: Callable[[SweepReport], None] | None = None) -> None:
    holder = uuid.uuid4().hex
    pass_log = PassLog(log, "sweeps")
    while True:
        try:
            report = await broker.sweep_if_leader(holder, lease_ms=int(SWEEP_INTERVAL_SECONDS * 10_000))
            pass_log.ok()
            if report is not None and on_sweep is not None:
                on_sweep(report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed pass is retried on the next tick
            pass_log.failed(exc)
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


class Observers(msgspec.Struct, frozen=True):
    """What the jobs report to (the API's metrics): each sweep pass, each webhook POST."""

    on_sweep: Callable[[SweepReport], None] | None = None
    on_webhook: Callable[[Attempt], None] | None = None


def start_jobs(broker: Broker, history: HistoryStore, observers: Observers = Observers()) -> list[asyncio.Task[None]]:
    """The three jobs as tasks of the running loop; cancel them to stop."""
    return [asyncio.create_task(sweep_forever(broker, observers.on_sweep), name="sweeper"),
            asyncio.create_task(Snapshotter(broker, history).run_forever(), name="snapshotter"),
            asyncio.create_task(WebhookDispatcher(broker, on_attempt=observers.on_webhook).run_forever(),
                                name="webhooks")]


async def stop_jobs(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _parent_gone(parent: int) -> None:
    """Return once ``parent`` is no longer this process's parent: it died and this one was
    re-parented (already so if it died while this one was starting)."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("the server that started this process is gone; stopping")


async def _start(broker: Broker, history: HistoryStore) -> None:
    """Load the scripts and open the history store, waiting for Redis or the database
    while they are away (the supervisor need not restart a process that would only fail
    again)."""
    delay = 0.5
    while True:
        try:
            await broker.start()
            await history.start()
            broker.history = history
            return
        except (OSError, RedisConnectionError, DBAPIError) as exc:
            log.warning("cannot start the background jobs yet (%s); retrying in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(10.0, delay * 2)


async def run(settings: Settings, *, observers: Observers = Observers(), parent_pid: int | None = None) -> None:
    """Run the jobs until SIGTERM or SIGINT (or, with ``parent_pid``, until that process,
    which started this one, is gone), then stop them and close the connections."""
    if not settings.redis_url:
        raise ValueError("the background jobs need REDIS_URL")
    client = redis_for(settings)
    broker = Broker(client, settings)
    history = HistoryStore.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_parent_gone(parent_pid)) if parent_pid else None
    waiters = [asyncio.create_task(stop.wait()), *([watchdog] if watchdog else [])]
    starting = asyncio.create_task(_start(broker, history))
    try:
        done, _ = await asyncio.wait([starting, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            tasks = start_jobs(broker, history, observers)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            await stop_jobs(tasks)
    finally:
        for task in (starting, *waiters):
            task.cancel()
        await history.close()
        await client.aclose()
