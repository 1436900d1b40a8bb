"""The Redis client every process of ours uses: redis-py's asyncio client whose
commands are packed by hiredis's C ``pack_command``.

redis-py's asyncio connections pack each command in Python, one ``encode`` per
argument; a claim is a 25-argument EVALSHA, so packing alone was about a sixth of a
poll's CPU in the API worker. hiredis (already installed for its reply parser, through
``redis[hiredis]``) packs the same bytes in C. An argument hiredis does not take
(a memoryview, say) falls back to redis-py's own packing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from broker.settings import Settings

RedisClient = aioredis.Redis | RedisCluster
"""What the broker talks to: one Redis (or fakeredis) or a Redis Cluster."""
RedisPipeline = Pipeline | ClusterPipeline
"""A pipeline of either."""


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


def with_hiredis_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client`` with its pool's connection class packing through hiredis."""
    pool = client.connection_pool
    base: type[AbstractConnection] = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(base.__name__, (_HiredisPacking, base), {})
    return client


def connect(
    url: str, *, max_connections: int | None = None, pool_timeout: float = 5.0, **options: Any
) -> aioredis.Redis:
    """``redis.asyncio.from_url(url, **options)``, packing with hiredis.

    With ``max_connections`` the pool is a blocking one: a request that finds all of
    them busy waits up to ``pool_timeout`` seconds for one instead of failing at once.
    (redis-py's default pool holds 100 and refuses the 101st concurrent command with
    "Too many connections": under load that was a burst of 503s from a healthy Redis.)"""
    if max_connections is None:
        return with_hiredis_packing(aioredis.from_url(url, **options))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, **options
    )
    return with_hiredis_packing(aioredis.Redis.from_pool(pool))


def text(value: Any) -> str:
    """A Redis reply value (bytes, or already text) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_mapping(values: Mapping[str, EncodableT]) -> dict[FieldT, EncodableT]:
    """``values`` as redis-py's ``HSET ... mapping=`` is typed to take them."""
    return {name: value for name, value in values.items()}


def fields(raw: dict[Any, Any]) -> dict[str, str]:
    """A Redis hash reply as text."""
    return {text(k): text(v) for k, v in raw.items()}


def redis_for(settings: Settings) -> aioredis.Redis:
    """The Redis client of a server process: fail fast while Redis is away, retry once on
    a dropped connection (a restarted Redis), reconnect by itself afterwards."""
    if not settings.redis_url:
        raise ValueError("no REDIS_URL to connect to")
    return connect(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        pool_timeout=5,
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )


REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)


class PassLog:
    """How a background loop (sweeper, snapshotter, webhook dispatcher) reports its
    failed passes: Redis being away is one warning when it goes and one line when it is
    back, not a traceback every pass; any other failure is logged with its traceback."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.away = False

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, REDIS_AWAY):
            if not self.away:
                self.log.warning("%s paused: Redis is unreachable (%s)", self.what, exc)
            self.away = True
        else:
            self.log.error("%s failed", self.what, exc_info=exc)

    def ok(self) -> None:
        if self.away:
            self.log.warning("%s resumed: Redis is back", self.what)
            self.away = False
