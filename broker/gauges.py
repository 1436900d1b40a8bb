"""Queue depths and presence for ``GET /metrics``, read from Redis at scrape time.

One scrape costs two round trips, and a third when a pool has messages: ``SMEMBERS
{shards}``, then one pipeline of five O(1)/O(log n) commands per shard (``ZCARD`` of the
device queue and of the pool, ``SCARD`` of the devices, ``ZCOUNT`` of the last-seen set
above the presence horizon, ``ZRANGE 0 0`` of the pool: the message next in line), then
``HGET`` of the records of the oldest of those heads by id (ids begin with their creation
time), a few at a time, until the next head by id is younger than the oldest found
(a scheduled message waits from its ``send_at``, later than its id says): one batch
unless scheduled messages lead the pools. So the cost is O(shards): one shard per
self-managed account plus one per platform pool shard. Nothing here scans messages. The pipeline is not a transaction, so on Redis
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
_HEADS_PER_READ = 8
# Crockford's base32 digits (broker.ids) -> the digits int(..., 32) reads.
_TO_BASE32 = str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")


def _created_ms(message_id: str) -> int:
    """When a message id (a ULID, :func:`broker.ids.message_id`) was made: its first 10 digits."""
    try:
        return int(message_id[:10].translate(_TO_BASE32), 32)
    except ValueError:
        return 0  # not a ULID: its record is read first


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
    heads: dict[str, list[tuple[int, str, str]]] = {"account": [], "platform": []}  # (id time, shard, id)
    for i, tag in enumerate(tags):
        kind = "platform" if keys.is_pool_shard(tag) else "account"
        totals = platform if kind == "platform" else account
        queued, pooled, devices, online, head = replies[5 * i : 5 * i + 5]
        totals.shards += 1
        totals.device_queued += int(queued)
        totals.pool_queued += int(pooled)
        totals.devices += int(devices)
        totals.devices_online += int(online)
        if head:
            message_id = _text(head[0])
            heads[kind].append((_created_ms(message_id), tag, message_id))
    await _read_pool_heads(ctx, [(account, sorted(heads["account"])), (platform, sorted(heads["platform"]))])
    return Gauges(account=account, platform=platform, read_ms=now)


async def _read_pool_heads(ctx: Context, kinds: list[tuple[ShardKindGauges, list[tuple[int, str, str]]]]) -> None:
    """Set each kind's ``pool_head_since_ms`` from its pools' heads (sorted by id time):
    read records, oldest id first, until no later head can have waited longer."""
    start = [0 for _ in kinds]
    while True:
        batch: list[ShardKindGauges] = []
        pipe = ctx.redis.pipeline(transaction=False)
        for k, (totals, candidates) in enumerate(kinds):
            best = totals.pool_head_since_ms
            chosen = [c for c in candidates[start[k] : start[k] + _HEADS_PER_READ] if not best or c[0] < best]
            start[k] = start[k] + len(chosen) if len(chosen) == _HEADS_PER_READ else len(candidates)
            for _, tag, message_id in chosen:
                pipe.hget(ctx.shard(tag).messages, message_id)
                batch.append(totals)
        if not batch:
            return
        for totals, record in zip(batch, await pipe.execute(), strict=True):
            if record is None:
                continue  # claimed or cancelled since the heads were read
            message = _queued.decode(record)
            since = max(message.created, message.send_at or 0)
            if not totals.pool_head_since_ms or since < totals.pool_head_since_ms:
                totals.pool_head_since_ms = since
