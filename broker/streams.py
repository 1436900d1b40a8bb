"""The shard event streams' consumer groups, and when an entry may go.

Two readers consume every shard's stream, each through its own consumer group: the
snapshotter (``snapshotter``) and the webhook dispatcher (``webhooks``). Each
acknowledges what it has handled; an entry is deleted only once every group of the
stream has acknowledged it (:func:`release`), so neither reader can lose an event to
the other's pace.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from broker.redis_client import RedisClient, text

SNAPSHOTTER_GROUP = "snapshotter"
WEBHOOKS_GROUP = "webhooks"


def entry_id(value: Any) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as numbers, to compare in stream order."""
    ms, _, seq = text(value).partition("-")
    return int(ms), int(seq or 0)


async def ensure_group(redis: RedisClient, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) reading from its first entry."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read(
    redis: RedisClient, group: str, consumer: str, streams: list[str], *, pending: bool, count: int
) -> list[list[Any] | None]:
    """One read of each stream for ``group`` in one round trip: its entries read before
    and not yet acknowledged (``pending``), else new ones. None for a stream whose group
    is missing (Redis lost it; the caller makes it again)."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xreadgroup(group, consumer, {stream: "0" if pending else ">"}, count=count)
        replies = await pipe.execute(raise_on_error=False)
    found: list[list[Any] | None] = []
    for reply in replies:
        if isinstance(reply, ResponseError):
            if "NOGROUP" not in str(reply):
                raise reply
            found.append(None)
        else:
            found.append(reply[0][1] if reply else [])
    return found


async def release(redis: RedisClient, stream: str) -> None:
    """Delete the entries of ``stream`` that every consumer group has acknowledged.

    A group's unacknowledged entries start at its oldest pending one; with none pending,
    it has handled everything up to its last delivered id. The stream is trimmed below
    the lowest of those marks; group positions only move forward, so a mark read a
    moment ago is still safe. Until the snapshotter's group exists on the stream nothing
    goes at all: history must see every entry, even one the dispatcher read first.

    The groups are read first and their pending entries a moment later, so a group may
    acknowledge in between (the other reader runs in another process or on another
    host): it then has nothing pending, and everything up to the last delivered id read
    earlier is handled, which is the mark a group with nothing pending gets anyway."""
    groups = [{text(k): v for k, v in info.items()} for info in await redis.xinfo_groups(stream)]
    if SNAPSHOTTER_GROUP not in {text(g["name"]) for g in groups}:
        return
    marks: list[tuple[int, int]] = []
    for fields in groups:
        ms, seq = entry_id(fields["last-delivered-id"])
        handled = (ms, seq + 1)
        if int(fields["pending"]):
            oldest = (await redis.xpending(stream, text(fields["name"])))["min"]
            marks.append(handled if oldest is None else min(handled, entry_id(oldest)))
        else:
            marks.append(handled)
    if marks:
        ms, seq = min(marks)
        await redis.xtrim(stream, minid=f"{ms}-{seq}", approximate=False)
