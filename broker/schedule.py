"""Scheduled messages: a message sent with a ``send_at`` later than now waits, scheduled,
in its shard's ``{S}:scheduled`` set (the enqueue script puts it there), and is queued
within a second of its time by :meth:`Schedule.release_due`, which the background
process runs every :data:`RELEASE_INTERVAL_SECONDS`.

So that a pass does not visit every shard, ``{scheduled}`` indexes the shards that
hold scheduled messages by their earliest ``send_at`` (:func:`note` after each enqueue
that scheduled one; ``ZADD LT`` only ever moves an entry earlier). A pass takes the
shards whose entry is due, releases their due messages (``release-due``), and moves
each entry to the shard's next ``send_at`` or out (``schedule-index``, only if no
enqueue moved it meanwhile). Every background process runs the passes: a release is
one script call per shard, so two processes at once release each message once.
"""

from __future__ import annotations

from typing import Any

from broker import keys
from broker.context import Context
from broker.redis_client import text

RELEASE_INTERVAL_SECONDS = 0.25
MAX_AHEAD_MS = 30 * 86_400_000
"""How far ahead a message may be scheduled."""
SHARDS_PER_PASS = 100
RELEASE_BATCH = 500


async def note(ctx: Context, tag: str, due_ms: int) -> None:
    """Shard ``tag`` holds a message scheduled for ``due_ms``: the index finds it then."""
    await ctx.redis.zadd(keys.SCHEDULED, {tag: due_ms}, lt=True)


class Schedule:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def release_due(self) -> tuple[int, bool]:
        """One pass: queue the messages whose time has come, in every shard that has
        some. Returns how many, and whether more are due already (call again at once)."""
        ctx = self.ctx
        now = ctx.now()
        due: list[Any] = await ctx.redis.zrangebyscore(
            keys.SCHEDULED, "-inf", now, start=0, num=SHARDS_PER_PASS, withscores=True
        )
        released, more = 0, len(due) == SHARDS_PER_PASS
        for raw_tag, seen in due:
            tag = text(raw_tag)
            shard = ctx.shard(tag)
            reply = await ctx.call(
                "release-due",
                [
                    shard.scheduled,
                    shard.messages,
                    shard.counters,
                    shard.events,
                    shard.expiry,
                    shard.queue,
                    shard.pool,
                    shard.pool_state,
                    shard.waiting,
                    shard.pool_high,
                ],
                [now, RELEASE_BATCH, ctx.wake_command, shard.wake_channel],
            )
            released += int(reply[0])
            next_due = int(reply[1])
            more = more or 0 < next_due <= now
            await ctx.call("schedule-index", [keys.SCHEDULED], [tag, int(seen), next_due])
        return released, more
