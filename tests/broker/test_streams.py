"""Releasing a shard stream's entries: only what every consumer group has acknowledged
goes, even when a group acknowledges while the release is reading the groups."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from broker import streams

STREAM = "{a:streams-test}:events"


async def _two_groups_with_pending(redis: aioredis.Redis, entries: int) -> list[bytes]:
    ids = [await redis.xadd(STREAM, {"n": str(n)}) for n in range(entries)]
    for group in (streams.SNAPSHOTTER_GROUP, streams.WEBHOOKS_GROUP):
        await streams.ensure_group(redis, STREAM, group)
        await redis.xreadgroup(group, "reader", {STREAM: ">"}, count=entries)
    return ids


class AcksBetweenReads:
    """The Redis client as release sees it when the other reader acknowledges everything
    it holds right after release has read the groups (another process, another host)."""

    def __init__(self, redis: aioredis.Redis, group: str, ids: list[bytes]) -> None:
        self.redis = redis
        self.group = group
        self.ids = ids

    async def xinfo_groups(self, stream: str) -> Any:
        groups = await self.redis.xinfo_groups(stream)
        await self.redis.xack(stream, self.group, *self.ids)
        return groups

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)


async def test_entries_go_only_once_every_group_has_acknowledged_them(redis_client: aioredis.Redis) -> None:
    ids = await _two_groups_with_pending(redis_client, 5)
    await redis_client.xack(STREAM, streams.SNAPSHOTTER_GROUP, *ids[:3])
    await streams.release(redis_client, STREAM)
    assert await redis_client.xlen(STREAM) == 5  # the dispatcher still holds all five

    await redis_client.xack(STREAM, streams.WEBHOOKS_GROUP, *ids)
    await streams.release(redis_client, STREAM)
    assert [entry for entry, _ in await redis_client.xrange(STREAM)] == ids[3:]

    await redis_client.xack(STREAM, streams.SNAPSHOTTER_GROUP, *ids[3:])
    await streams.release(redis_client, STREAM)
    assert await redis_client.xlen(STREAM) == 0


async def test_a_group_acknowledging_during_the_release_neither_breaks_it_nor_loses_entries(
    redis_client: aioredis.Redis,
) -> None:
    ids = await _two_groups_with_pending(redis_client, 4)
    await redis_client.xack(STREAM, streams.SNAPSHOTTER_GROUP, *ids[:2])

    # The webhooks group had four pending when the groups were read and none a moment
    # later, when its oldest pending entry is asked for.
    await streams.release(AcksBetweenReads(redis_client, streams.WEBHOOKS_GROUP, ids), STREAM)  # type: ignore[arg-type]
    assert [entry for entry, _ in await redis_client.xrange(STREAM)] == ids[2:]


async def test_nothing_goes_before_the_snapshotter_reads_the_stream(redis_client: aioredis.Redis) -> None:
    ids = [await redis_client.xadd(STREAM, {"n": str(n)}) for n in range(3)]
    await streams.ensure_group(redis_client, STREAM, streams.WEBHOOKS_GROUP)
    await redis_client.xreadgroup(streams.WEBHOOKS_GROUP, "reader", {STREAM: ">"})
    await redis_client.xack(STREAM, streams.WEBHOOKS_GROUP, *ids)
    await streams.release(redis_client, STREAM)
    assert await redis_client.xlen(STREAM) == 3
