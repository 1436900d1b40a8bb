"""``connecfy background``: the background jobs (:mod:`broker.jobs`) in a process of
their own.

``connecfy serve`` starts one beside its request workers (and restarts it if it exits),
so a snapshot pass or a burst of webhook POSTs never lengthens a phone's claim. Each job
still takes its Redis lock before it works, so any number of these processes (one per
host) is safe: one of each job runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from sqlalchemy.exc import DBAPIError

from broker.broker import Broker
from broker.history import HistoryStore
from broker.jobs import NO_OBSERVERS, Observers, start_jobs, stop_jobs
from broker.redis_client import REDIS_AWAY, redis_for
from broker.settings import Settings

log = logging.getLogger("connecfy.background")

PARENT_CHECK_SECONDS = 1.0


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
        except (OSError, *REDIS_AWAY, DBAPIError) as exc:
            log.warning("cannot start the background jobs yet (%s); retrying in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(10.0, delay * 2)


async def run(settings: Settings, *, observers: Observers = NO_OBSERVERS, parent_pid: int | None = None) -> None:
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
