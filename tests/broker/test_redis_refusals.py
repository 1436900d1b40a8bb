"""Redis refusing is told apart from Redis failing, on each real Redis version.

An out-of-memory refusal met inside the enqueue script is ``store_full`` whichever
exception redis-py raised for it (Redis 6.2 wraps it in a generic "Error running
script" reply, 7.0 passes the OOM code on); a read-only replica is ``store_read_only``;
a refused call leaves Redis exactly as it was. A frozen Redis costs a command its time
limit, and the command is never sent twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis._parsers import BaseParser
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broker import Broker, Settings
from broker.records import Account, OutgoingMessage, RegisteredDevice
from broker.redis_client import (
    StoreBusy,
    StoreDown,
    StoreFull,
    StoreLoading,
    StoreReadOnly,
    StoreRefused,
    connect,
    redis_for,
    refusal,
)
from connecfy.redis_server import RedisServer
from tests.support.backends import REAL_REDIS, Clock, roomy_settings
from tests.support.fleet import TO, redis_snapshot, self_managed

VERSIONS = sorted(REAL_REDIS)


def major(version: str) -> int:
    return int(version.split(".")[0])


@pytest.fixture(params=VERSIONS, ids=[f"redis-{v}" for v in VERSIONS])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(version: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of that version of this test's own: the tests change its configuration."""
    with RedisServer(tmp_path / "primary", binary=REAL_REDIS[version], appendonly=False) as started:
        yield started  # stopped afterwards even when a test left it stopped (SIGSTOP)


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """redis-py's own client: to configure Redis and to read it as it is."""
    client = aioredis.from_url(server.url)
    yield client
    await client.aclose()


async def started_broker(url: str) -> tuple[Broker, Account, RegisteredDevice]:
    """A broker on a client made as the server makes its own, an account and its phone."""
    broker = Broker(connect(url), roomy_settings(), clock=Clock())
    await broker.start()
    account, [device] = await self_managed(broker)
    return broker, account, device


async def test_out_of_memory_in_the_enqueue_script_is_store_full_and_writes_nothing(
    server: RedisServer, raw: aioredis.Redis, version: str
) -> None:
    broker, account, device = await started_broker(server.url)
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", (await raw.info("memory"))["used_memory"] + 256 * 1024)
    batch = [OutgoingMessage(TO, "x" * 600, device.device_id)] * 5
    refused: StoreFull | None = None
    for _ in range(1_000):  # 256 KiB is about 60 batches
        before = await redis_snapshot(raw)
        try:
            await broker.messages.enqueue(account, batch)
        except StoreFull as exc:
            refused = exc
            break
    assert refused is not None, "Redis never ran out of memory"
    assert await redis_snapshot(raw) == before  # nothing of the refused batch was written
    assert (refused.code, refused.retry_after) == ("store_full", 30)
    # What redis-py itself raised differs by version; both are recognised.
    raised = refused.__cause__
    if major(version) < 7:
        assert type(raised) is ResponseError and str(raised).startswith("Error running script"), raised
        assert "-OOM command not allowed when used memory > 'maxmemory'" in str(raised)
    else:
        assert type(raised) is OutOfMemoryError, raised
    assert isinstance(refusal(raised), StoreFull)

    # Held full (maxmemory under what Redis holds, as a Redis that kept filling would
    # be): sends and readiness say store_full; room again, both work.
    await raw.config_set("maxmemory", (await raw.info("memory"))["used_memory"] // 2)
    with pytest.raises(StoreFull):
        await broker.messages.enqueue(account, batch[:1])
    with pytest.raises(StoreFull):
        await broker.ready()
    restarted = Broker(connect(server.url), roomy_settings(), clock=Clock())
    await restarted.start()  # a worker starting now starts, to answer its 503s
    await restarted.redis.aclose()
    await raw.config_set("maxmemory", 0)
    await broker.ready()
    assert len((await broker.messages.enqueue(account, batch[:1])).ids) == 1


async def test_a_read_only_replica_is_store_read_only_and_writes_nothing(
    server: RedisServer, raw: aioredis.Redis, version: str, tmp_path: Path
) -> None:
    primary, account, device = await started_broker(server.url)
    replica = RedisServer(tmp_path / "replica", binary=REAL_REDIS[version], appendonly=False).start()
    replica_raw = aioredis.from_url(replica.url)
    try:
        await raw.config_set("repl-diskless-sync-delay", 0)
        await replica_raw.replicaof("127.0.0.1", server.port)
        deadline = time.monotonic() + 10
        while (await replica_raw.info("replication")).get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never caught up"
            await asyncio.sleep(0.02)
        on_replica = Broker(connect(replica.url), roomy_settings(), primary.scripts, clock=Clock())
        await primary.scripts.load(on_replica.redis)  # scripts are not replicated
        before = await redis_snapshot(replica_raw)
        assert before == await redis_snapshot(raw)  # the account and its phone are there

        with pytest.raises(StoreReadOnly) as refused:
            await on_replica.messages.enqueue(account, [OutgoingMessage(TO, "hello", device.device_id)])
        assert await redis_snapshot(replica_raw) == before
        assert refused.value.code == "store_read_only"
        raised = refused.value.__cause__
        if major(version) < 7:
            assert type(raised) is ResponseError and "-READONLY You can't write" in str(raised), raised
        else:
            assert type(raised) is ReadOnlyError, raised
        with pytest.raises(StoreReadOnly):
            await on_replica.ready()
        await on_replica.redis.aclose()
    finally:
        await replica_raw.aclose()
        replica.stop()
    await primary.ready()


async def test_too_few_replicas_and_a_busy_script_are_refusals(server: RedisServer, raw: aioredis.Redis) -> None:
    broker, account, device = await started_broker(server.url)
    message = [OutgoingMessage(TO, "hello", device.device_id)]

    await raw.config_set("min-replicas-to-write", 1)  # and it has none
    before = await redis_snapshot(raw)
    with pytest.raises(StoreReadOnly):
        await broker.messages.enqueue(account, message)
    with pytest.raises(StoreReadOnly):
        await broker.ready()
    assert await redis_snapshot(raw) == before
    await raw.config_set("min-replicas-to-write", 0)

    # A script that runs past the busy threshold: every other command is refused BUSY.
    info = await raw.info("server")
    await raw.config_set("busy-reply-threshold" if major(info["redis_version"]) >= 7 else "lua-time-limit", 50)
    spinner = aioredis.from_url(server.url)
    spinning = asyncio.create_task(spinner.eval("while true do end", 0))
    try:
        await asyncio.sleep(0.2)
        with pytest.raises(StoreBusy) as busy:
            await broker.messages.enqueue(account, message)
        assert (busy.value.code, busy.value.retry_after) == ("store_busy", 2)
    finally:
        await raw.script_kill()
        with pytest.raises(ResponseError):
            await spinning
        await spinner.aclose()
    assert len((await broker.messages.enqueue(account, message)).ids) == 1


# Each reply as redis-py parses it off the wire, and what it is to us.
REPLIES: list[tuple[str, type[StoreRefused] | None]] = [
    ("OOM command not allowed when used memory > 'maxmemory'.", StoreFull),
    (
        "ERR Error running script (call to f_8cde): @user_script:438: @user_script: 438: "
        "-OOM command not allowed when used memory > 'maxmemory'.",
        StoreFull,
    ),
    ("READONLY You can't write against a read only replica.", StoreReadOnly),
    (
        "ERR Error running script (call to f_8cde): @user_script:438: @user_script: 438: "
        "-READONLY You can't write against a read only replica.",
        StoreReadOnly,
    ),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", StoreReadOnly),
    ("NOREPLICAS Not enough good replicas to write.", StoreReadOnly),
    ("LOADING Redis is loading the dataset in memory", StoreLoading),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", StoreBusy),
    ("TRYAGAIN Multiple keys request during rehashing of slot", StoreBusy),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", StoreDown),
    ("CLUSTERDOWN The cluster is down", StoreDown),
    # Not refusals: a script's own error replies, a wrong type, a killed script...
    ("MESSAGE_NOT_FOUND 01HZX", None),
    ("BAD_REQUEST -OOM is not a code here", None),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
    ("BUSYKEY Target key name already exists.", None),
    ("NOSCRIPT No matching script. Please use EVAL.", None),
    ("ERR Error running script (call to f_1): @user_script:1: Script killed by user with SCRIPT KILL...", None),
]


@pytest.mark.parametrize(("reply", "expected"), REPLIES, ids=[r.split(" ")[0] for r, _ in REPLIES])
def test_each_refusal_is_recognised_by_its_reply(reply: str, expected: type[StoreRefused] | None) -> None:
    found = refusal(BaseParser.parse_error(reply))
    assert type(found) is expected if expected else found is None
    if found is not None:
        assert found.detail and "Redis" not in found.detail  # clients read no Redis error text


async def test_a_frozen_redis_costs_a_command_its_time_limit_and_the_command_is_sent_once(
    server: RedisServer,
) -> None:
    """SIGSTOP: the enqueue fails after 0.5 s. Redis wakes 0.2 s later and runs the
    command it had already received; had the client sent it again on a fresh connection
    (as redis-py's retries did), the message would be queued twice."""
    broker, account, device = await started_broker(server.url)
    settings = Settings(redis_url=server.url, redis_timeout_ms=500)
    frozen = Broker(await redis_for(settings), roomy_settings(), broker.scripts, clock=Clock())
    await frozen.ready()  # its connection is open before Redis stops
    assert server.process is not None

    async def refused_after() -> float:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await frozen.messages.enqueue(account, [OutgoingMessage(TO, "once", device.device_id)])
        return time.monotonic() - started

    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        sending = asyncio.create_task(refused_after())
        await asyncio.sleep(0.7)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert 0.5 <= await sending < 0.7  # failed at its limit, while Redis was still stopped
    deadline = time.monotonic() + 5
    while (await broker.message_log.counters(account.shard)).get(f"a:{account.id}:total", 0) == 0:
        assert time.monotonic() < deadline, "Redis never ran the command it had received"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert (await broker.message_log.counters(account.shard))[f"a:{account.id}:total"] == 1
    await frozen.redis.aclose()


async def test_a_frozen_redis_bounds_pipelines_too_and_a_cancellation_stays_one(server: RedisServer) -> None:
    client = await redis_for(Settings(redis_url=server.url, redis_timeout_ms=300))
    await client.ping()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            async with client.pipeline(transaction=True) as pipe:
                pipe.get("a").get("b")
                await pipe.execute()
        assert 0.3 <= time.monotonic() - started < 0.5
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the limit's cancellations are undone

        # Cancelled from elsewhere (a server shutting down) before the limit: that is
        # what the caller sees, not a Redis timeout.
        waiting = asyncio.create_task(client.get("a"))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert await client.get("a") is None  # and the client works on
    await client.aclose()
