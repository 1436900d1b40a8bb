"""Wake-ups across a Redis Cluster failover: the primary serving a waiting phone's shard
is killed; once its replica has taken over, the worker's subscriber follows the slot to
the new primary and a message queued there still wakes a waiting phone at once.

A cluster of its own (a primary dies), and a broker on it as a worker makes one."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time

import pytest

from broker import Broker
from broker.records import OutgoingMessage
from broker.redis_client import RedisError, connect_cluster
from broker.settings import Settings
from tests.support.backends import CLUSTER_MIN_VERSION, NEWEST_VERSION, REAL_REDIS, version_key
from tests.support.cluster import RedisClusterProcess
from tests.support.fleet import TO, self_managed

WOKEN = 5.0


async def _until_accepted(call, seconds: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_a_waiting_phone_is_woken_through_the_new_primary_after_a_failover() -> None:
    if version_key(NEWEST_VERSION) < CLUSTER_MIN_VERSION:
        pytest.fail(f"a Redis Cluster needs redis-server 7 or later; the newest here is {NEWEST_VERSION}")
    with (
        tempfile.TemporaryDirectory(prefix="connecfy-failover-wake-") as root,
        RedisClusterProcess(REAL_REDIS[NEWEST_VERSION], root) as cluster,
    ):
        asyncio.run(_scenario(cluster))


async def _scenario(cluster: RedisClusterProcess) -> None:
    broker = Broker(connect_cluster(cluster.url), Settings(redis_url=cluster.url))
    await broker.start()
    try:
        account, [device] = await self_managed(broker)
        owner = cluster.owner_port(broker.shard(account.shard).wake_channel)
        # A wait now, so the worker subscribes on the primary that is about to die.
        first = asyncio.create_task(broker.long_poll.claim(device.ref, None, 5))
        await asyncio.sleep(0.5)
        cluster.kill_primary(owner)
        with contextlib.suppress(RedisError):  # its wait ran out while the shard changed hands (a 503)
            assert (await first).messages == []
        cluster.wait_ok(replicas=False)
        await _until_accepted(lambda: broker.presence.heartbeat(device.ref))
        waiting = asyncio.create_task(_until_accepted(lambda: broker.long_poll.claim(device.ref, None, 30)))
        await asyncio.sleep(3.0)  # the subscriber has found the new primary by now
        assert not waiting.done()
        message = OutgoingMessage(TO, "after the failover", device.device_id)
        ids = (await _until_accepted(lambda: broker.messages.enqueue(account, [message]))).ids
        sent = time.monotonic()
        result = await asyncio.wait_for(waiting, 40)
        assert [m.id for m in result.messages] == ids
        assert time.monotonic() - sent < WOKEN
    finally:
        await broker.close()
