"""``connecfy background``: the background jobs (:mod:`broker.jobs`) in a process of
their own.

``connecfy serve`` starts one beside its request workers (and restarts it if it exits),
so a snapshot pass or a burst of webhook POSTs never lengthens a phone's claim. The
work is shared out by shard among these processes (one per host) through leases in
Redis (:mod:`broker.leases`), so any number of them is safe, and more share the work.

History across hosts: a history store in a local SQLite file holds one host's shards
only. :func:`check_history_shared` refuses, in one line, to start this host's
background work into a local file while another host's background process is live on
the same Redis (or to start beside one that keeps its own local file); ``connecfy serve``
and ``connecfy background`` run by hand ask it before starting. Two hosts starting at
the same moment are kept apart by the registry's own atomic check: the second is
refused there, logs the same line, and does no background work while the other is live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from sqlalchemy.exc import DBAPIError

from broker.broker import Broker
from broker.context import wall_clock_ms
from broker.history import HistoryStore, database_url
from broker.jobs import NO_OBSERVERS, Observers, start_jobs, stop_jobs
from broker.leases import Member, conflict_message, history_conflict, live_members, this_host
from broker.redis_client import REDIS_AWAY, RedisClient, open_redis, redis_for
from broker.settings import Settings
from connecfy.errors import RUNTIME, CommandError

log = logging.getLogger("connecfy.background")

PARENT_CHECK_SECONDS = 1.0


async def _parent_gone(parent: int) -> None:
    """Return once ``parent`` is no longer this process's parent: it died and this one was
    re-parented (already so if it died while this one was starting)."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("the server that started this process is gone; stopping")


async def _live_members(url: str) -> list[Member]:
    client = await open_redis(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        return await live_members(client, wall_clock_ms())
    finally:
        await client.aclose()


def check_history_shared(settings: Settings, data_dir: str | None = None) -> None:
    """Refuse (:class:`CommandError`, one line) to start this host's background work when
    another host's background process is live on ``REDIS_URL`` and either host keeps
    history in a local SQLite file. A private Redis (no ``REDIS_URL``) is this host's alone."""
    from connecfy.cli import against_redis

    if not settings.redis_url:
        return
    local = database_url(settings, data_dir).startswith("sqlite")
    host = this_host(data_dir or settings.data_dir)
    other = history_conflict(host, local, against_redis(settings.redis_url, _live_members(settings.redis_url)))
    if other is not None:
        raise CommandError(conflict_message(other, local), RUNTIME)


async def _start(settings: Settings, history: HistoryStore) -> Broker:
    """Connect to Redis (one Redis or a cluster, as its node says), load the scripts and
    open the history store, waiting for Redis or the database while they are away (the
    supervisor need not restart a process that would only fail again)."""
    delay = 0.5
    client: RedisClient | None = None
    while True:
        try:
            if client is None:
                client = await redis_for(settings)
            broker = Broker(client, settings)
            await broker.start()
            await history.start()
            broker.history = history
            return broker
        except (OSError, *REDIS_AWAY, DBAPIError) as exc:
            log.warning("cannot start the background jobs yet (%s); retrying in %.0f s", exc, delay)
        except BaseException:
            if client is not None:
                await client.aclose()
            raise
        await asyncio.sleep(delay)
        delay = min(10.0, delay * 2)


async def run(settings: Settings, *, observers: Observers = NO_OBSERVERS, parent_pid: int | None = None) -> None:
    """Run the jobs until SIGTERM or SIGINT (or, with ``parent_pid``, until that process,
    which started this one, is gone), then stop them and close the connections."""
    if not settings.redis_url:
        raise ValueError("the background jobs need REDIS_URL")
    history = HistoryStore.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_parent_gone(parent_pid)) if parent_pid else None
    waiters = [asyncio.create_task(stop.wait()), *([watchdog] if watchdog else [])]
    starting = asyncio.create_task(_start(settings, history))
    broker: Broker | None = None
    try:
        done, _ = await asyncio.wait([starting, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            broker = starting.result()
            jobs = start_jobs(broker, history, observers)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            await stop_jobs(jobs)
    finally:
        for task in (starting, *waiters):
            task.cancel()
        await history.close()
        if broker is not None:
            await broker.close()
