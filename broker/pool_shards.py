"""The platform pool's shards (``CONNECFY_POOL_SHARDS``): each new pool sender's and pool
phone's home shard, and the shards a pool phone's claim visits.

With ``N`` shards the pool is ``{p:default}``, ``{p:default:1}``, ... ``{p:default:N-1}``,
spread over a Redis Cluster's slots by their hash tags. A pool sender (an API-only
account) gets a home shard when it is created, kept in its account record: its
messages, counters, daily quota, idempotency keys and send limiter live there, so a send
stays one single-slot script call. A pool phone gets the shard with the fewest pool
phones when its pairing code is made; its record, budget, presence and poll limiter live
there. A pool phone's claim visits every pool shard (see
:meth:`broker.messages.Messages.claim_tasks`), taking from each a share of what it may
claim in proportion to the senders waiting there (:meth:`PoolShards.split`): senders
take turns across shards much as they do inside one.

Homes are never moved. Changing ``N`` only changes where new senders and phones go; every
shard that was ever a home is kept in ``{pool-shards}`` and visited by every claim, so a
message queued in a shard that is no longer among the first ``N`` is still claimed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from broker import keys
from broker.context import Context
from broker.redis_client import text

REFRESH_SECONDS = 10.0
"""How long a process keeps its list of the pool shards in use before reading it again."""


class PoolShards:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.configured = tuple(keys.pool_shard(index=i) for i in range(ctx.settings.pool_shards))
        self._in_use: tuple[str, ...] = self.configured
        self._read_at = float("-inf")
        self._waiting: dict[str, int] = {}  # shard -> senders with messages there, as last seen

    async def register(self) -> None:
        """Record the configured shards among every shard (for the sweep) and the pool's
        shards (for the claims), unless they are already: a full Redis refuses even a
        write that changes nothing."""
        redis = self.ctx.redis
        for index in (keys.SHARDS, keys.POOL_SHARDS):
            present = await redis.smismember(index, list(self.configured))
            missing = [tag for tag, found in zip(self.configured, present, strict=True) if not found]
            if missing:
                await redis.sadd(index, *missing)
        self._read_at = float("-inf")

    def home_for_sender(self, account_id: str) -> str:
        """The home shard of a new pool sender: its id's hash picks one of the configured shards."""
        if len(self.configured) == 1:
            return self.configured[0]
        digest = hashlib.sha256(account_id.encode()).digest()
        return self.configured[int.from_bytes(digest[:8], "big") % len(self.configured)]

    async def home_for_phone(self) -> str:
        """The home shard of a new pool phone: the configured shard with the fewest pool
        phones (the first of them on a tie)."""
        if len(self.configured) == 1:
            return self.configured[0]
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            for tag in self.configured:
                pipe.scard(self.ctx.shard(tag).devices)
            counts = await pipe.execute()
        return self.configured[min(range(len(counts)), key=lambda i: (int(counts[i]), i))]

    async def in_use(self) -> tuple[str, ...]:
        """Every pool shard a claim visits, shard 0 first: the configured ones and any
        earlier home, re-read from Redis every :data:`REFRESH_SECONDS`."""
        if time.monotonic() - self._read_at >= REFRESH_SECONDS:
            found = {text(tag) for tag in await self.ctx.redis.smembers(keys.POOL_SHARDS)}
            self._in_use = tuple(sorted(found | set(self.configured), key=_shard_order))
            self._read_at = time.monotonic()
        return self._in_use

    def saw(self, tag: str, senders: int) -> None:
        """A claim's visit to ``tag`` found ``senders`` senders with messages waiting there."""
        self._waiting[tag] = senders

    def split(self, room: int, order: Sequence[str]) -> list[int]:
        """How many of ``room`` messages a claim takes from each shard of ``order`` in its
        first pass: in proportion to the senders waiting in each, as this process last saw
        them (a shard not seen yet counts as one), the rounding's remainder one each to the
        first shards of ``order`` with senders (the order turns claim by claim). The claim
        then fills what is left from any shard with more, so nothing waits while it has
        room."""
        waiting = [self._waiting.get(tag, 1) for tag in order]
        total = sum(waiting)
        if total == 0:
            return [0] * len(order)
        shares = [room * w // total for w in waiting]
        left = room - sum(shares)
        for i, w in enumerate(waiting):
            if left == 0:
                break
            if w:
                shares[i] += 1
                left -= 1
        return shares


def _shard_order(tag: str) -> tuple[int, str]:
    """Shard 0, 1, 2, ... in number order (``p:default:10`` after ``p:default:9``)."""
    _, _, index = tag.removeprefix("p:").partition(":")
    return (int(index) if index.isdigit() else 0, tag)
