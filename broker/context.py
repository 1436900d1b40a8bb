"""What every broker service stands on: the Redis client, the script registry, the
settings, the one clock, and the shard key maps.

Each service (accounts, devices, messages, ...) takes one :class:`Context`; none makes
its own client, reads the time itself or spells a key outside :mod:`broker.keys`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from broker import keys
from broker.redis_client import RedisClient
from broker.scripts import ScriptRegistry
from broker.settings import Settings

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the clock every process uses unless a test moves one by hand."""
    return time.time_ns() // 1_000_000


class Context:
    """The client, scripts, settings and clock shared by the services of one broker."""

    __slots__ = ("_shards", "clock", "redis", "scripts", "settings")

    def __init__(self, redis: RedisClient, settings: Settings, scripts: ScriptRegistry, clock: Clock) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.clock = clock
        self._shards: dict[str, keys.ShardKeys] = {}

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
        """Run the script ``name`` (see :mod:`broker.scripts`)."""
        return await self.scripts.call(self.redis, name, key_list, args)
