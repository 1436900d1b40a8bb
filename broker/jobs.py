"""The background jobs: the sweeper (expiry, lost devices, pool returns), the history
snapshotter and the webhook dispatcher, as tasks of the running event loop.

``connecfy serve`` runs them in a process of their own (``connecfy background``), so this
work never competes with a request on a worker's event loop; an ASGI server other than
``connecfy serve`` runs them inside its workers instead (``CONNECFY_BACKGROUND_IN_WORKERS``,
on by default). Each job takes its Redis lock before it works, so any number of processes
running them is safe: one of each job runs at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import msgspec

from broker.broker import Broker
from broker.history import HistoryStore
from broker.records import SweepReport
from broker.redis_client import PassLog
from broker.snapshotter import Snapshotter
from broker.webhooks.dispatcher import WebhookDispatcher
from broker.webhooks.endpoints import Attempt

log = logging.getLogger("connecfy.background")

SWEEP_INTERVAL_SECONDS = 1.0


async def sweep_forever(broker: Broker, on_sweep: Callable[[SweepReport], None] | None = None) -> None:
    lease = broker.sweeper.lease(uuid.uuid4().hex, int(SWEEP_INTERVAL_SECONDS * 10_000))
    pass_log = PassLog(log, "sweeps")
    while True:
        try:
            report = await broker.sweeper.sweep_if_leader(lease)
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


NO_OBSERVERS = Observers()


def start_jobs(broker: Broker, history: HistoryStore, observers: Observers = NO_OBSERVERS) -> list[asyncio.Task[None]]:
    """The three jobs as tasks of the running loop; cancel them to stop."""
    return [
        asyncio.create_task(sweep_forever(broker, observers.on_sweep), name="sweeper"),
        asyncio.create_task(Snapshotter(broker, history).run_forever(), name="snapshotter"),
        asyncio.create_task(WebhookDispatcher(broker, on_attempt=observers.on_webhook).run_forever(), name="webhooks"),
    ]


RECANCEL_S = 0.1


async def stop_jobs(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the jobs and wait until each has ended, cancelling again every
    :data:`RECANCEL_S` one that is still running: Python 3.11's ``asyncio.wait_for``
    (under every redis-py command) can drop a cancellation that arrives as its reply
    does, and the job would then go on with its next pass."""
    running = set(tasks)
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=RECANCEL_S)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
