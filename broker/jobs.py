"""The background jobs: the sweeper (expiry, lost devices, pool returns; after each sweep,
the devices' changes of presence), the release of scheduled messages when due, the
history snapshotter, the webhook dispatcher and the campaigns' queueing, as tasks of the running event loop, with
the task that keeps their shard leases.

``connecfy serve`` runs them in a process of their own (``connecfy background``), so this
work never competes with a request on a worker's event loop; an ASGI server other than
``connecfy serve`` runs them inside its workers instead (``CONNECFY_BACKGROUND_IN_WORKERS``,
on by default). The work is shared out by shard among every process running them, on
every host (:mod:`broker.leases`): each job of a process works on the shards that
process holds, so any number of processes is safe, and more of them share the work.
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
from broker.leases import Host, ShardLeases
from broker.records import SweepReport
from broker.redis_client import REDIS_AWAY, PassLog
from broker.schedule import RELEASE_INTERVAL_SECONDS
from broker.snapshotter import Snapshotter
from broker.webhooks.dispatcher import WebhookDispatcher
from broker.webhooks.endpoints import Attempt

log = logging.getLogger("connecfy.background")

SWEEP_INTERVAL_SECONDS = 1.0


async def sweep_forever(
    broker: Broker, leases: ShardLeases, on_sweep: Callable[[SweepReport], None] | None = None
) -> None:
    pass_log = PassLog(log, "sweeps")
    while True:
        try:
            report = await broker.sweeper.sweep_held(leases)
            await broker.presence.watch_held(leases)
            pass_log.ok()
            if report is not None and on_sweep is not None:
                on_sweep(report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed pass is retried on the next tick
            pass_log.failed(exc)
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


async def release_forever(broker: Broker) -> None:
    """Queue scheduled messages when due (:mod:`broker.schedule`): every process running
    the jobs does, whatever shards it holds (a release is one script call per shard)."""
    pass_log = PassLog(log, "scheduled releases")
    while True:
        more = False
        try:
            _, more = await broker.schedule.release_due()
            pass_log.ok()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed pass is retried on the next tick
            pass_log.failed(exc)
        if not more:
            await asyncio.sleep(RELEASE_INTERVAL_SECONDS)


CAMPAIGN_INTERVAL_SECONDS = 0.2


async def campaigns_forever(broker: Broker, leases: ShardLeases) -> None:
    """Queue the rows of the sending campaigns, and cancel the messages of the cancelled
    ones, of the shards this process holds (:mod:`broker.campaigns`); at once again
    while some campaign has more to do now."""
    pass_log = PassLog(log, "campaigns")
    while True:
        more = False
        try:
            for tag in list(leases.tokens()):
                more |= await broker.campaigns.work(tag)
            pass_log.ok()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed pass is retried on the next tick
            pass_log.failed(exc)
        await asyncio.sleep(0 if more else CAMPAIGN_INTERVAL_SECONDS)


class Observers(msgspec.Struct, frozen=True):
    """What the jobs report to (the API's metrics): each sweep pass, each webhook POST."""

    on_sweep: Callable[[SweepReport], None] | None = None
    on_webhook: Callable[[Attempt], None] | None = None


NO_OBSERVERS = Observers()


class Jobs(msgspec.Struct):
    """The running jobs of one process, and the leases they work under."""

    leases: ShardLeases
    tasks: list[asyncio.Task[None]]


def start_jobs(
    broker: Broker, history: HistoryStore, observers: Observers = NO_OBSERVERS, *, host: Host | None = None
) -> Jobs:
    """The five jobs, and the task renewing their leases, as tasks of the running loop;
    :func:`stop_jobs` stops them. ``host``: where this process runs (by default the
    machine and the data directory of the settings)."""
    leases = ShardLeases(broker.ctx, holder=uuid.uuid4().hex, host=host, local_store=history.is_local)
    return Jobs(
        leases,
        [
            asyncio.create_task(leases.run_forever(), name="shard-leases"),
            asyncio.create_task(sweep_forever(broker, leases, observers.on_sweep), name="sweeper"),
            asyncio.create_task(release_forever(broker), name="scheduled-releases"),
            asyncio.create_task(campaigns_forever(broker, leases), name="campaigns"),
            asyncio.create_task(Snapshotter(broker, history, leases=leases).run_forever(), name="snapshotter"),
            asyncio.create_task(
                WebhookDispatcher(broker, on_attempt=observers.on_webhook, leases=leases).run_forever(),
                name="webhooks",
            ),
        ],
    )


RECANCEL_S = 0.1


async def stop_jobs(jobs: Jobs | list[asyncio.Task[None]], *, leave_within_s: float = 5.0) -> None:
    """Cancel the jobs and wait until each has ended, cancelling again every
    :data:`RECANCEL_S` one that is still running: Python 3.11's ``asyncio.wait_for``
    (under every redis-py command) can drop a cancellation that arrives as its reply
    does, and the job would then go on with its next pass. Then give the shards up, so
    the other processes take them at their next beat instead of when the leases run out
    (within ``leave_within_s``; past it, or with Redis away, the leases run out)."""
    tasks = jobs.tasks if isinstance(jobs, Jobs) else jobs
    running = set(tasks)
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=RECANCEL_S)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if isinstance(jobs, Jobs):
        try:
            await asyncio.wait_for(jobs.leases.leave(), leave_within_s)
        except (TimeoutError, *REDIS_AWAY) as exc:
            log.warning("could not give the shards up while stopping (%s); their leases run out instead", exc)
