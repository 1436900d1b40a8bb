"""Queue depths and presence for ``GET /metrics``, read from Redis at scrape time.

One scrape costs two round trips: ``SMEMBERS {shards}``, then one pipeline of four
O(1)/O(log n) commands per shard (``ZCARD`` of the device queue and of the pool,
``SCARD`` of the devices, ``ZCOUNT`` of the last-seen set above the presence horizon).
So the cost is O(shards): one shard per self-managed account plus one per platform
pool shard. Nothing here scans messages. The pipeline is not a transaction, so on Redis
Cluster it fans out per node; the figures of different shards are each exact but not
one snapshot.
"""

from __future__ import annotations

import msgspec

from broker import keys
from broker.context import Context
from broker.redis_client import text as _text


class ShardKindGauges(msgspec.Struct, kw_only=True):
    """Totals over the shards of one kind (account shards, or platform pools)."""

    shards: int = 0
    device_queued: int = 0  # queued messages waiting for one named device
    pool_queued: int = 0  # queued messages waiting in a pool for any online device
    devices: int = 0  # paired devices
    devices_online: int = 0  # devices whose last heartbeat is within the presence TTL


class Gauges(msgspec.Struct, kw_only=True):
    account: ShardKindGauges
    platform: ShardKindGauges


async def read_gauges(ctx: Context) -> Gauges:
    """Totals per kind of shard.

    A device counts as online when its last heartbeat is newer than the presence TTL,
    the rule :mod:`broker.devices` applies to each device.
    """
    redis = ctx.redis
    tags = sorted(_text(tag) for tag in await redis.smembers(keys.SHARDS))
    account = ShardKindGauges()
    platform = ShardKindGauges()
    if not tags:
        return Gauges(account=account, platform=platform)
    horizon = f"({ctx.now() - ctx.settings.presence_ttl_seconds * 1000}"
    pipe = redis.pipeline(transaction=False)
    for tag in tags:
        shard = ctx.shard(tag)
        pipe.zcard(shard.queue)
        pipe.zcard(shard.pool)
        pipe.scard(shard.devices)
        pipe.zcount(shard.last_seen, horizon, "+inf")
    replies = await pipe.execute()
    for i, tag in enumerate(tags):
        totals = platform if keys.is_pool_shard(tag) else account
        queued, pooled, devices, online = replies[4 * i : 4 * i + 4]
        totals.shards += 1
        totals.device_queued += int(queued)
        totals.pool_queued += int(pooled)
        totals.devices += int(devices)
        totals.devices_online += int(online)
    return Gauges(account=account, platform=platform)
