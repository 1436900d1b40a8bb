"""What every broker service stands on: the Redis client, the script registry, the
settings, the one clock, and the shard key maps.

Each service (accounts, devices, messages, ...) takes one :class:`Context`; none makes
its own client, reads the time itself or spells a key outside :mod:`broker.keys`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster

from broker import keys
from broker.redis_client import RedisClient, replicated
from broker.scripts import MARK_TTL_MS, ScriptRegistry
from broker.settings import Settings

Clock = Callable[[], int]

WAITED_SCRIPTS = frozenset(
    {
        "enqueue",  # a send's 202
        "claim",  # the tasks a phone is handed
        "report-status",  # a phone's status report
        "register-device",  # a phone's pairing
        "pool-take",  # a platform pool claim, shard by shard
        "pool-charge",
        "inbound",  # a received SMS the phone is told is stored
    }
)
"""The scripts whose writes a client is answered about: with
``CONNECFY_REDIS_WAIT_REPLICAS`` = N above 0, each call is answered only once N replicas
hold what it wrote (``WAIT``), so a primary failover neither loses an accepted message
nor lets a second phone take one a phone was handed. A name with no script in ``lua/``
(yet) is no error: it is waited for once it has one."""


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the clock every process uses unless a test moves one by hand."""
    return time.time_ns() // 1_000_000


class Context:
    """The client, scripts, settings and clock shared by the services of one broker."""

    __slots__ = ("_shards", "clock", "redis", "scripts", "settings", "wake_command")

    def __init__(self, redis: RedisClient, settings: Settings, scripts: ScriptRegistry, clock: Clock) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.clock = clock
        self._shards: dict[str, keys.ShardKeys] = {}
        # How scripts publish wake-ups on a shard's channel (lua/includes/wakeups.lua):
        # sharded pub/sub on a Cluster (the channel stays on its slot's node), plain
        # pub/sub on one Redis (6.2 has no sharded pub/sub).
        self.wake_command = "SPUBLISH" if isinstance(redis, RedisCluster) else "PUBLISH"

    def now(self) -> int:
        """The time (ms) that every script call of this broker is given."""
        return self.clock()

    def shard(self, tag: str) -> keys.ShardKeys:
        """The key map of one shard (kept: a poll builds a dozen keys from it)."""
        shard = self._shards.get(tag)
        if shard is None:
            shard = self._shards[tag] = keys.ShardKeys(tag)
        return shard

    def account_shard(self, account_id: str) -> keys.ShardKeys:
        return self.shard(keys.account_shard(account_id))

    async def call(self, name: str, key_list: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script ``name`` (see :mod:`broker.scripts`); one of
        :data:`WAITED_SCRIPTS` waits for the replicas when there are any to wait for."""
        replicas = self.settings.redis_wait_replicas
        if replicas and name in WAITED_SCRIPTS:
            limit = self.settings.redis_timeout_ms / 1000
            return await self.scripts.call_waited(self.redis, name, key_list, args, replicas, limit)
        return await self.scripts.call(self.redis, name, key_list, args)

    async def set_waited(self, key: str, value: str) -> None:
        """``SET key value`` for a write outside a script that a client is answered about
        (a paired phone's token index: on a cluster, in a slot of its own), waited for
        like :data:`WAITED_SCRIPTS`."""
        replicas = self.settings.redis_wait_replicas
        if replicas:
            await replicated(self.redis, key, [("SET", key, value)], replicas, self.settings.redis_timeout_ms / 1000)
        else:
            await self.redis.set(key, value)

    async def take_waited(self, key: str, value: str, ttl_ms: int) -> bytes | None:
        """``SET key value NX PX ttl_ms`` and what ``key`` holds then: ``value`` when this
        call took it, else what an earlier one left (None if that expired in between);
        one round trip. A write outside a script that a client is answered about (a
        received SMS's ref: in the phone's shard, perhaps not the script's), waited for
        like :data:`WAITED_SCRIPTS`, with the slot's replication mark written after it so
        that the ``WAIT`` also covers an earlier call's take of the key."""
        take = ("SET", key, value, "NX", "PX", ttl_ms)
        replicas = self.settings.redis_wait_replicas
        if replicas:
            mark = ("SET", keys.replication_mark(key), "1", "PX", MARK_TTL_MS)
            limit = self.settings.redis_timeout_ms / 1000
            _, held, _ = await replicated(self.redis, key, [take, ("GET", key), mark], replicas, limit)
            return cast("bytes | None", held)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, value, nx=True, px=ttl_ms)
            pipe.get(key)
            _, held = await pipe.execute()
        return cast("bytes | None", held)
