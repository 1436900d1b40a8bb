"""The sweeper: bounded passes over each shard that expire messages whose TTL passed,
fail those whose phone was lost, and return pool messages whose lease ran out. One
sweeper at a time across all processes, under the ``{sweeper}`` lock."""

from __future__ import annotations

from broker import keys
from broker.context import Context
from broker.locks import Lease, Locks
from broker.records import SweepReport
from broker.redis_client import text

MAX_PASSES = 100
"""The most passes one sweep makes over one shard."""


class Sweeper:
    def __init__(self, ctx: Context, locks: Locks) -> None:
        self.ctx = ctx
        self.locks = locks

    async def sweep(self, shard_tag: str) -> SweepReport:
        """One bounded pass over a shard: expire, fail lost, return pool messages."""
        shard = self.ctx.shard(shard_tag)
        settings = self.ctx.settings
        reply = await self.ctx.call(
            "sweep",
            [
                shard.messages,
                shard.counters,
                shard.queue,
                shard.leased,
                shard.lease_checks,
                shard.expiry,
                shard.pool,
                shard.pool_state,
                shard.last_seen,
                shard.events,
                shard.pool_visitors,
            ],
            [self.ctx.now(), settings.sweep_batch, settings.max_leases, settings.presence_ttl_seconds * 1000],
        )
        return SweepReport(int(reply[0]), int(reply[1]), int(reply[2]), bool(int(reply[3])))

    async def sweep_all(self, *, max_passes: int = MAX_PASSES) -> SweepReport:
        """Sweep every shard until none has more due work (at most ``max_passes`` each)."""
        total = SweepReport()
        async for tag in self.ctx.redis.sscan_iter(keys.SHARDS):
            for _ in range(max_passes):
                report = await self.sweep(text(tag))
                total = SweepReport(
                    total.expired + report.expired,
                    total.lost + report.lost,
                    total.returned + report.returned,
                    total.more or report.more,
                )
                if not report.more:
                    break
        return total

    def lease(self, holder: str, lease_ms: int) -> Lease:
        """``holder``'s hold on the sweeper lock, for :meth:`sweep_if_leader`."""
        return Lease(self.locks, keys.SWEEPER_LOCK, holder, lease_ms)

    async def sweep_if_leader(self, lease: Lease) -> SweepReport | None:
        """Sweep every shard if ``lease`` holds (or takes) the sweeper lock: one sweeper at
        a time across workers; a dead holder's lock expires after its lease."""
        if not await lease.hold():
            return None
        return await self.sweep_all()
