"""Test fixtures: the broker on fakeredis, on every real ``redis-server`` found and on a
Redis Cluster (``tests/support/backends.py``), the history stores, and hypothesis's CI
profile."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import fakeredis
import hypothesis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from broker import Broker, Settings
from broker.redis_client import connect, connect_cluster
from broker.scripts import ScriptRegistry
from connecfy.redis_server import RedisServer
from tests.support.backends import (
    BACKENDS,
    CLUSTER,
    CLUSTER_MIN_VERSION,
    NEWEST_REAL,
    NEWEST_VERSION,
    REAL_REDIS,
    Clock,
    roomy_settings,
    version_key,
)
from tests.support.cluster import RedisClusterProcess

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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    """One Redis Cluster for the session (three primaries, a replica each) of the newest
    real Redis; each test that uses it starts from it flushed (:func:`_client`)."""
    if version_key(NEWEST_VERSION) < CLUSTER_MIN_VERSION:
        pytest.fail(
            f"the cluster backend needs redis-server 7 or later; the newest here is {NEWEST_VERSION}"
            " (apt-get install redis-server)",
            pytrace=False,
        )
    with (
        tempfile.TemporaryDirectory(prefix="connecfy-test-cluster-") as root,
        RedisClusterProcess(REAL_REDIS[NEWEST_VERSION], root) as cluster,
    ):
        yield cluster


async def _client(backend: str, request: pytest.FixtureRequest) -> aioredis.Redis | RedisCluster:
    """A client of ``backend`` holding nothing: the session's servers are flushed first
    (scripts stay loaded)."""
    if backend == "fakeredis":
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    if backend == CLUSTER:
        cluster: RedisClusterProcess = request.getfixturevalue("redis_cluster")
        cluster.flush()  # every primary, and their replicas follow
        return connect_cluster(cluster.url)  # as a server given the URL of one node makes its client
    real_servers: dict[str, RedisServer] = request.getfixturevalue("real_servers")
    client = connect(real_servers[backend].url)  # as the server makes its client (hiredis packing)
    await client.flushall()
    return client


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def redis_client(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis | RedisCluster]:
    client = await _client(backend, request)
    yield client
    await client.aclose()


@pytest.fixture
async def real_redis(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """The newest real Redis only: for concurrency and volume tests."""
    client = await _client(NEWEST_REAL, request)
    assert isinstance(client, aioredis.Redis)
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
