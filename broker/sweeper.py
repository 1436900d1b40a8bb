"""The sweeper: bounded passes over each shard that expire messages whose TTL passed,
fail those whose phone was lost, and return pool messages whose lease ran out.

Each background process sweeps the shards it holds (:mod:`broker.leases`), so every
shard has one sweeper at a time, and more processes share the work. A sweep call needs
no fencing token: it is one atomic script that acts only on what is due at the time it
is given, so one from a process that paused past its lease does what the new holder's
would have done, and never twice."""

from __future__ import annotations

from collections.abc import Iterable

from broker import keys
from broker.context import Context
from broker.leases import ShardLeases
from broker.locks import Locks
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
                shard.waiting,
                shard.pool_high,
            ],
            [
                self.ctx.now(),
                settings.sweep_batch,
                settings.max_leases,
                settings.presence_ttl_seconds * 1000,
                self.ctx.wake_command,
                shard.wake_channel,
            ],
        )
        return SweepReport(int(reply[0]), int(reply[1]), int(reply[2]), bool(int(reply[3])))

    async def sweep_all(self, *, max_passes: int = MAX_PASSES, shards: Iterable[str] | None = None) -> SweepReport:
        """Sweep each of ``shards`` (every shard when None) until none has more due work
        (at most ``max_passes`` each)."""
        tags = (
            list(shards) if shards is not None else [text(tag) async for tag in self.ctx.redis.sscan_iter(keys.SHARDS)]
        )
        total = SweepReport()
        for tag in tags:
            for _ in range(max_passes):
                report = await self.sweep(tag)
                total = SweepReport(
                    total.expired + report.expired,
                    total.lost + report.lost,
                    total.returned + report.returned,
                    total.more or report.more,
                )
                if not report.more:
                    break
        return total

    async def sweep_held(self, leases: ShardLeases) -> SweepReport | None:
        """Sweep the shards ``leases`` holds; None when it holds none."""
        held = leases.tokens()
        if not held:
            return None
        return await self.sweep_all(shards=sorted(held))
