"""Test fixtures: the broker on fakeredis and on every real ``redis-server`` found
(``tests/support/backends.py``), the history stores, and hypothesis's CI profile."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import fakeredis
import hypothesis
import pytest
import redis.asyncio as aioredis

from broker import Broker, Settings
from broker.redis_client import connect
from broker.scripts import ScriptRegistry
from connecfy.redis_server import RedisServer
from tests.support.backends import BACKENDS, NEWEST_REAL, REAL_REDIS, Clock, roomy_settings

# CI explores the same examples every run (a red CI is then a real, repeatable finding);
# a developer's runs explore new ones and keep failures in .hypothesis/.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "default")


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
                    os.path.join(root, version), binary=binary, appendonly=False
                ).start()
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


@pytest.fixture
def settings() -> Settings:
    return roomy_settings()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def broker(redis_client: aioredis.Redis, settings: Settings, scripts: ScriptRegistry, clock: Clock) -> Broker:
    b = Broker(redis_client, settings, scripts, clock=clock)
    await b.start()
    return b


@pytest.fixture
async def real_broker(real_redis: aioredis.Redis, settings: Settings, scripts: ScriptRegistry, clock: Clock) -> Broker:
    b = Broker(real_redis, settings, scripts, clock=clock)
    await b.start()
    return b


# History store: a SQLite file per test, and the session's private PostgreSQL server.

STORES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    from tests.support.postgres_server import PostgresServer, postgres_bin

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


@pytest.fixture
async def history_store(store_url: str) -> AsyncIterator[object]:
    from broker.history import HistoryStore, metadata

    store = HistoryStore(store_url)
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await store.start()
    yield store
    await store.close()
