"""Queue depths and presence for ``GET /metrics``, read from Redis at scrape time.

One scrape costs two or three round trips: ``SMEMBERS {shards}``, then one pipeline of
five O(1)/O(log n) commands per shard (``ZCARD`` of the device queue and of the pool,
``SCARD`` of the devices, ``ZCOUNT`` of the last-seen set above the presence horizon,
``ZRANGE 0 0`` of the pool: the message next in line), then, when some pool has a
message, one ``HGET`` per such pool for that message's record (when it was queued).
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
    # when the longest-waiting of the messages next in line in these pools was queued
    # (ms; its send_at for a scheduled one), 0 when every pool is empty
    pool_head_since_ms: int = 0


class Gauges(msgspec.Struct, kw_only=True):
    account: ShardKindGauges
    platform: ShardKindGauges
    read_ms: int = 0  # when they were read (the broker's clock)

    def pool_wait_seconds(self, totals: ShardKindGauges) -> float:
        """How long the longest-waiting message next in line in these pools has waited."""
        if not totals.pool_head_since_ms:
            return 0.0
        return max(0, self.read_ms - totals.pool_head_since_ms) / 1000


class _Queued(msgspec.Struct):
    """The two fields of a message record that say since when it waits."""

    created: int = 0
    send_at: int | None = None


_queued = msgspec.json.Decoder(_Queued)


async def read_gauges(ctx: Context) -> Gauges:
    """Totals per kind of shard.

    A device counts as online when its last heartbeat is newer than the presence TTL,
    the rule :mod:`broker.devices` applies to each device.
    """
    redis = ctx.redis
    tags = sorted(_text(tag) for tag in await redis.smembers(keys.SHARDS))
    account = ShardKindGauges()
    platform = ShardKindGauges()
    now = ctx.now()
    if not tags:
        return Gauges(account=account, platform=platform, read_ms=now)
    horizon = f"({now - ctx.settings.presence_ttl_seconds * 1000}"
    pipe = redis.pipeline(transaction=False)
    for tag in tags:
        shard = ctx.shard(tag)
        pipe.zcard(shard.queue)
        pipe.zcard(shard.pool)
        pipe.scard(shard.devices)
        pipe.zcount(shard.last_seen, horizon, "+inf")
        pipe.zrange(shard.pool, 0, 0)
    replies = await pipe.execute()
    heads: list[tuple[ShardKindGauges, str]] = []
    for i, tag in enumerate(tags):
        totals = platform if keys.is_pool_shard(tag) else account
        queued, pooled, devices, online, head = replies[5 * i : 5 * i + 5]
        totals.shards += 1
        totals.device_queued += int(queued)
        totals.pool_queued += int(pooled)
        totals.devices += int(devices)
        totals.devices_online += int(online)
        if head:
            heads.append((totals, tag))
            pipe.hget(ctx.shard(tag).messages, _text(head[0]))
    if heads:
        for (totals, _), record in zip(heads, await pipe.execute(), strict=True):
            if record is None:
                continue  # claimed or cancelled between the two round trips
            message = _queued.decode(record)
            since = max(message.created, message.send_at or 0)
            if not totals.pool_head_since_ms or since < totals.pool_head_since_ms:
                totals.pool_head_since_ms = since
    return Gauges(account=account, platform=platform, read_ms=now)
