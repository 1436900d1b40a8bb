"""``CONNECFY_REDIS_WAIT_REPLICAS``: every write a client is answered about waits until
that many replicas hold it, on one real Redis with a replica of its own (each real
version) and on the session's Redis Cluster (a replica per primary).

- A waited send returns only once the replica holds it: read from the replica right
  after the call returns, and a send made while the replica is stopped (SIGSTOP) is not
  answered until it is resumed, where the same send without waiting is answered at once.
- While no replica acknowledges, each waited write (send, claim, status report,
  registration) raises ``StoreNotReplicated`` within about the command's time limit; the
  write was made on the primary, and a send retried with its ``Idempotency-Key`` is
  refused the same way until the replica holds the first one, then gets its ids.
- With 0 no ``WAIT`` is sent at all (``INFO commandstats``); with 1, exactly one per
  waited call and none for anything else.
- A received SMS waits for its ref (a key of the phone's shard, taken outside the
  script) as well as for the script: while no replica holds the ref the report is
  refused before anything is stored, and its retry stores it under the id the ref took.
- A script Redis lost (NOSCRIPT) is loaded, and the call sent again with its ``WAIT``.
- On the cluster the ``WAIT`` goes to the primary of the script's slot (and a received
  SMS's also to that of its ref), and a stale slot map (MOVED) or a slot being migrated
  (ASK) is followed to the node that runs it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from broker import Broker, Settings
from broker.context import WAITED_SCRIPTS
from broker.records import OutgoingMessage
from broker.redis_client import StoreNotReplicated, connect_cluster, redis_for, replicated, text
from broker.scripts import ScriptRegistry
from tests.support.backends import REAL_REDIS, Clock, roomy_settings
from tests.support.cluster import HOST, Node, RedisClusterProcess
from tests.support.fleet import TO, pair, self_managed
from tests.support.replicas import PrimaryWithReplica, stopped, wait_calls

VERSIONS = sorted(REAL_REDIS)
SHORT_MS = 500  # the time limit of the tests that wait for a stopped replica
# WAIT gets the limit less 200 ms, and Redis answers a WAIT up to a clock tick (100 ms) late.
REFUSED_WITHIN = (0.25, 0.6)  # (past 0.5 s it would be a timeout, not this refusal)
WHEN = 1_800_000_000_000  # when a phone says it received an SMS


def settings_for(replicas: int, timeout_ms: int = 2_000, **values: Any) -> Settings:
    return roomy_settings(redis_wait_replicas=replicas, redis_timeout_ms=timeout_ms, **values)


async def broker_on(url: str, replicas: int, timeout_ms: int = 2_000) -> Broker:
    """A started broker whose client is made as a server makes its own (time limit, no retries)."""
    settings = settings_for(replicas, timeout_ms, redis_url=url)
    broker = Broker(await redis_for(settings), settings, clock=Clock())
    await broker.start()
    return broker


def message(text: str, device_id: str) -> list[OutgoingMessage]:
    return [OutgoingMessage(TO, text, device_id)]


def test_the_waited_scripts_are_the_answered_writes() -> None:
    """One list names them; names of scripts still to come are allowed in it."""
    assert {
        "enqueue",
        "claim",
        "report-status",
        "register-device",
        "pool-take",
        "pool-charge",
        "inbound",
    } <= WAITED_SCRIPTS
    assert set(ScriptRegistry().scripts) >= WAITED_SCRIPTS  # every one of them is a script now
    assert not {"heartbeat", "cancel", "sweep", "rate-limit", "lock-acquire"} & WAITED_SCRIPTS


# One Redis and its replica -----------------------------------------------------------------


@pytest.fixture(params=VERSIONS, ids=[f"redis-{v}" for v in VERSIONS])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrimaryWithReplica]:
    with PrimaryWithReplica(REAL_REDIS[request.param], tmp_path) as started:
        yield started


@pytest.fixture
async def on_replica(servers: PrimaryWithReplica) -> AsyncIterator[aioredis.Redis]:
    assert servers.replica is not None
    client = aioredis.from_url(servers.replica.url)
    yield client
    await client.aclose()


async def test_a_waited_send_is_answered_only_once_the_replica_holds_it(
    servers: PrimaryWithReplica, on_replica: aioredis.Redis
) -> None:
    assert servers.replica is not None
    waiting = await broker_on(servers.primary.url, replicas=1)
    plain = await broker_on(servers.primary.url, replicas=0)
    try:
        account, [device] = await self_managed(waiting)
        messages = waiting.shard(account.shard).messages
        first = await waiting.messages.enqueue(account, message("one", device.device_id))
        assert await on_replica.hexists(messages, first.ids[0])  # read right after the answer

        with stopped(servers.replica):
            started = time.monotonic()
            second = asyncio.create_task(waiting.messages.enqueue(account, message("two", device.device_id)))
            # Without waiting, the same send is answered at once, the replica stopped or not.
            await plain.messages.enqueue(account, message("unwaited", device.device_id))
            assert time.monotonic() - started < 0.3
            await asyncio.sleep(0.4)
            assert not second.done(), "a waited send was answered while its replica was stopped"
        sent = await second
        assert 0.4 <= time.monotonic() - started < 2.0
        assert await on_replica.hexists(messages, sent.ids[0])
    finally:
        await waiting.close()
        await plain.close()


async def test_while_no_replica_acknowledges_each_waited_write_is_store_not_replicated(
    servers: PrimaryWithReplica, on_replica: aioredis.Redis
) -> None:
    assert servers.replica is not None
    broker = await broker_on(servers.primary.url, replicas=1, timeout_ms=SHORT_MS)
    try:
        account, [device] = await self_managed(broker)
        shard = broker.shard(account.shard)
        held = (await broker.messages.enqueue(account, message("held", device.device_id))).ids[0]
        assert [m.id for m in await broker.messages.claim(device.ref)] == [held]
        waiting = (await broker.messages.enqueue(account, message("waiting", device.device_id))).ids[0]
        code = await broker.devices.create_pairing_code(account)
        retried = message("retried", device.device_id)
        calls = {
            "send": lambda: broker.messages.enqueue(account, retried, idempotency_key="once"),
            "claim": lambda: broker.messages.claim(device.ref),
            "status report": lambda: broker.messages.report_status(device.ref, held, "sent"),
            "registration": lambda: broker.devices.register(code.code, "Pixel 8"),
        }
        with stopped(servers.replica):
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(StoreNotReplicated) as refused:
                    await call()
                took = time.monotonic() - started
                assert REFUSED_WITHIN[0] <= took < REFUSED_WITHIN[1], f"{name}: {took:.3f} s"
                assert (refused.value.code, refused.value.retry_after) == ("store_not_replicated", 5)
            # Each write was made, on the primary alone.
            on_primary = [await broker.message_log.get(account.shard, i) for i in (held, waiting)]
            assert [m.status for m in on_primary] == ["sent", "claimed"]
            sends = await broker.redis.hget(shard.counters, f"a:{account.id}:total")
            assert int(sends) == 3
            # The send retried while its first copy is still on the primary alone is
            # refused the same way: it must not be answered as a success either.
            with pytest.raises(StoreNotReplicated):
                await calls["send"]()
        again = await broker.messages.enqueue(account, retried, idempotency_key="once")
        assert again.duplicate and await on_replica.hexists(shard.messages, again.ids[0])
        assert int(await broker.redis.hget(shard.counters, f"a:{account.id}:total")) == 3  # queued once
    finally:
        await broker.close()


@pytest.mark.parametrize("route", ["device", "pool"])
async def test_a_claim_refused_for_its_replica_hands_the_same_messages_again_at_the_next_claim(
    servers: PrimaryWithReplica, route: str
) -> None:
    """Its leases end at once (lease-end), given back to the messages' count: the phone's
    next claim gets them again, not a whole lease (120 s) later, and no other phone does."""
    assert servers.replica is not None
    broker = await broker_on(servers.primary.url, replicas=1, timeout_ms=SHORT_MS)
    try:
        account, [device, other] = await self_managed(broker, devices=2)
        target = device.device_id if route == "device" else None
        queued = (await broker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", target) for i in range(3)])).ids
        for phone in (device, other):
            await broker.presence.heartbeat(phone.ref)
        with stopped(servers.replica), pytest.raises(StoreNotReplicated):
            await broker.messages.claim(device.ref, 2)
        # The other phone gets none of the two (the pool's third message is free to take).
        taken = [m.id for m in await broker.messages.claim(other.ref, 5)]
        assert taken == ([] if route == "device" else [queued[2]])
        again = await broker.messages.claim(device.ref, 2)
        assert [m.id for m in again] == queued[:2]
        for message_id in queued[:2]:
            record = await broker.message_log.get(account.shard, message_id)
            assert (record.status, record.device, record.leases) == ("claimed", device.device_id, 1)
        rest = [m.id for m in await broker.messages.claim(device.ref, 5)]
        assert rest == ([queued[2]] if route == "device" else [])
    finally:
        await broker.close()


async def test_with_no_replicas_to_wait_for_no_wait_is_sent(servers: PrimaryWithReplica) -> None:
    raw = redis.Redis(port=servers.primary.port)
    try:
        for replicas, waits in ((0, 0), (1, 7)):
            broker = await broker_on(servers.primary.url, replicas)
            try:
                before = wait_calls(raw)
                # The registration waits twice (its token index, then its script), and so
                # does a received SMS (its ref, then its script); the heartbeat
                # self_managed sends, and the pairing code, not at all.
                account, [device] = await self_managed(broker, f"owner{replicas}@example.com")
                sent = await broker.messages.enqueue(account, message("hello", device.device_id))
                assert [m.id for m in await broker.messages.claim(device.ref)] == sent.ids
                await broker.messages.report_status(device.ref, sent.ids[0], "delivered")
                await broker.presence.heartbeat(device.ref)
                await broker.inbound.receive(device.ref, TO, "thanks", WHEN, "ref-1")
                assert wait_calls(raw) - before == waits, f"replicas={replicas}"
                marks = list(raw.scan_iter("*:replicated"))
                assert bool(marks) == bool(replicas), marks
            finally:
                await broker.close()
    finally:
        raw.close()


async def test_a_received_sms_is_stored_only_once_a_replica_holds_its_ref(
    servers: PrimaryWithReplica, on_replica: aioredis.Redis
) -> None:
    """The ref is taken outside the script (in the phone's shard, perhaps not the one the
    SMS is stored in): a failover that lost it would let the phone's retry store the SMS
    twice, so it is waited for before the script runs."""
    assert servers.replica is not None
    broker = await broker_on(servers.primary.url, replicas=1, timeout_ms=SHORT_MS)
    raw = redis.Redis(port=servers.primary.port)
    try:
        account, [device] = await self_managed(broker)
        shard = broker.shard(account.shard)
        ref_key = broker.shard(device.shard).inbound_ref(device.device_id, "ref-1")
        with stopped(servers.replica):
            started = time.monotonic()
            with pytest.raises(StoreNotReplicated):
                await broker.inbound.receive(device.ref, TO, "Is it open today?", WHEN, "ref-1")
            assert REFUSED_WITHIN[0] <= time.monotonic() - started < REFUSED_WITHIN[1]
            # Refused at its ref: the id is taken on the primary alone, nothing is stored.
            taken = await broker.redis.get(ref_key)
            assert taken is not None
            assert await broker.redis.hlen(shard.messages) == 0
            assert await broker.redis.hget(shard.counters, f"a:{account.id}:received") is None
        waits = wait_calls(raw)
        stored = await broker.inbound.receive(device.ref, TO, "Is it open today?", WHEN, "ref-1")
        assert stored.new and stored.id == text(taken).split("|")[1]
        assert await on_replica.get(ref_key) == taken and await on_replica.hexists(shard.messages, stored.id)
        assert wait_calls(raw) - waits == 2  # its ref, then its script
        again = await broker.inbound.receive(device.ref, TO, "Is it open today?", WHEN, "ref-1")
        assert (again.new, again.id) == (False, stored.id)
        assert int(await broker.redis.hget(shard.counters, f"a:{account.id}:received")) == 1
    finally:
        raw.close()
        await broker.close()


async def test_a_waited_call_loads_a_script_redis_lost_and_waits_again(
    servers: PrimaryWithReplica, on_replica: aioredis.Redis
) -> None:
    """NOSCRIPT (Redis restarted or flushed, a promoted replica): the script is loaded
    and the call with its WAIT sent again, on the same rules."""
    broker = await broker_on(servers.primary.url, replicas=1)
    try:
        account, [device] = await self_managed(broker)
        await broker.redis.script_flush()
        sent = await broker.messages.enqueue(account, message("after a flush", device.device_id))
        assert await on_replica.hexists(broker.shard(account.shard).messages, sent.ids[0])
    finally:
        await broker.close()


# The Redis Cluster ------------------------------------------------------------------------------


def slot_owner(cluster: RedisClusterProcess, key: str) -> tuple[Node, Node]:
    """The primary serving ``key``'s slot now, and its replica."""
    slot = key_slot(key.encode())
    view: dict[str, dict[str, Any]] = cluster.live_nodes()[0].client.execute_command("CLUSTER NODES")
    for name, entry in view.items():
        if any(int(r[0]) <= slot <= int(r[-1]) for r in entry["slots"]):
            primary = cluster.node_at(int(name.rsplit(":", 1)[1]))
            replica = next(node for node in cluster.replicas() if int(node.role()[2]) == primary.port)
            return primary, replica
    raise AssertionError(f"no node serves slot {slot}")


def on_replica_node(node: Node) -> redis.Redis:
    """A client of one replica node that reads there (READONLY) instead of being redirected."""
    client = redis.Redis(host=HOST, port=node.port, single_connection_client=True, socket_timeout=5)
    client.execute_command("READONLY")
    return client


async def cluster_broker(cluster: RedisClusterProcess, replicas: int, timeout_ms: int = 2_000) -> Broker:
    client = connect_cluster(cluster.url, command_timeout=timeout_ms / 1000)
    broker = Broker(client, settings_for(replicas, timeout_ms), clock=Clock())
    await broker.start()
    return broker


async def test_on_a_cluster_a_waited_send_is_answered_once_the_slot_replica_holds_it(
    redis_cluster: RedisClusterProcess,
) -> None:
    redis_cluster.flush()
    broker = await cluster_broker(redis_cluster, replicas=1)
    try:
        account, [device] = await self_managed(broker)
        messages = broker.shard(account.shard).messages
        primary, replica = slot_owner(redis_cluster, messages)
        reader = on_replica_node(replica)
        try:
            waits = wait_calls(primary.client)
            first = await broker.messages.enqueue(account, message("one", device.device_id))
            assert reader.hexists(messages, first.ids[0])  # read right after the answer
            assert wait_calls(primary.client) == waits + 1  # the WAIT went to the slot's primary

            with stopped(replica.server):
                started = time.monotonic()
                second = asyncio.create_task(broker.messages.enqueue(account, message("two", device.device_id)))
                await asyncio.sleep(0.3)
                assert not second.done(), "a waited send was answered while its replica was stopped"
            sent = await second
            assert 0.3 <= time.monotonic() - started < 2.0
            assert reader.hexists(messages, sent.ids[0])
        finally:
            reader.close()
    finally:
        await broker.close()


async def test_on_a_cluster_no_replica_is_store_not_replicated_and_zero_sends_no_wait(
    redis_cluster: RedisClusterProcess,
) -> None:
    redis_cluster.flush()
    broker = await cluster_broker(redis_cluster, replicas=1, timeout_ms=SHORT_MS)
    plain = await cluster_broker(redis_cluster, replicas=0)
    try:
        account, [device] = await self_managed(broker)
        _, replica = slot_owner(redis_cluster, broker.shard(account.shard).messages)
        with stopped(replica.server):
            started = time.monotonic()
            with pytest.raises(StoreNotReplicated):
                await broker.messages.enqueue(account, message("alone", device.device_id), idempotency_key="k")
            assert REFUSED_WITHIN[0] <= time.monotonic() - started < REFUSED_WITHIN[1]

        primaries = redis_cluster.primaries()
        before = sum(wait_calls(node.client) for node in primaries)
        other, [phone] = await self_managed(plain, "plain@example.com")
        sent = await plain.messages.enqueue(other, message("hello", phone.device_id))
        assert [m.id for m in await plain.messages.claim(phone.ref)] == sent.ids
        await plain.messages.report_status(phone.ref, sent.ids[0], "sent")
        assert sum(wait_calls(node.client) for node in primaries) == before
    finally:
        await broker.close()
        await plain.close()


async def test_on_a_cluster_a_stale_slot_map_is_followed_to_the_slot_owner(
    redis_cluster: RedisClusterProcess,
) -> None:
    """The client's slot map points the account's slot at another primary: that one
    answers MOVED, nothing ran there, and the script and its WAIT go to the owner."""
    redis_cluster.flush()
    broker = await cluster_broker(redis_cluster, replicas=1)
    try:
        account, [device] = await self_managed(broker)
        messages = broker.shard(account.shard).messages
        owner, replica = slot_owner(redis_cluster, messages)
        cluster = broker.redis
        assert not isinstance(cluster, aioredis.Redis)
        slot = cluster.keyslot(messages)
        elsewhere = next(node for node in cluster.get_primaries() if node.port != owner.port)
        cluster.nodes_manager.slots_cache[slot] = [elsewhere]
        waits = wait_calls(owner.client)
        sent = await broker.messages.enqueue(account, message("redirected", device.device_id))
        assert cluster.nodes_manager.slots_cache[slot][0].port == owner.port
        assert wait_calls(owner.client) == waits + 1
        reader = on_replica_node(replica)
        try:
            assert reader.hexists(messages, sent.ids[0])
        finally:
            reader.close()
    finally:
        await broker.close()


async def test_on_a_cluster_a_slot_being_migrated_is_followed_with_asking(redis_cluster: RedisClusterProcess) -> None:
    """A key absent from a slot its owner is migrating is answered ASK: the command and
    its WAIT are sent again, after ASKING, to the node importing the slot."""
    redis_cluster.flush()
    key = "{wait-replicas-ask}:k"
    source, _ = slot_owner(redis_cluster, key)
    target = next(node for node in redis_cluster.primaries() if node.port != source.port)
    slot = key_slot(key.encode())
    ids = {node.port: node.client.execute_command("CLUSTER MYID").decode() for node in (source, target)}
    client = connect_cluster(redis_cluster.url, command_timeout=2.0)
    asking = redis.Redis(host=HOST, port=target.port, single_connection_client=True, socket_timeout=5)
    try:
        await client.initialize()
        target.client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source.port])
        source.client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target.port])
        waits = wait_calls(target.client)
        assert await replicated(client, key, [("SET", key, "moved in")], 1, 2.0) in ([b"OK"], [True])
        assert wait_calls(target.client) == waits + 1
        asking.execute_command("ASKING")
        assert asking.get(key) == b"moved in"
        asking.execute_command("ASKING")
        asking.delete(key)
    finally:
        for node in (source, target):
            node.client.execute_command("CLUSTER SETSLOT", slot, "STABLE")
        asking.close()
        await client.aclose()


async def test_on_a_cluster_a_received_sms_waits_on_the_primaries_of_its_ref_and_of_its_record(
    redis_cluster: RedisClusterProcess,
) -> None:
    """A pool phone's SMS from a number nobody sent to is the operator's: its ref is in the
    phone's pool shard, its record in the operator's shard, each waited for on its own
    slot's primary."""
    redis_cluster.flush()
    broker = await cluster_broker(redis_cluster, replicas=1)
    try:
        operator = await broker.accounts.create("op@example.com", "self_managed", operator=True)
        phone = await pair(broker, None, "pool phone")
        ref_key = broker.shard(phone.shard).inbound_ref(phone.device_id, "stray-1")
        ref_primary, ref_replica = slot_owner(redis_cluster, ref_key)
        record_primary, _ = slot_owner(redis_cluster, broker.shard(operator.shard).messages)
        primaries = {node.port: node for node in redis_cluster.primaries()}
        before = {port: wait_calls(node.client) for port, node in primaries.items()}
        got = await broker.inbound.receive(phone.ref, "+15559990000", "Who is this?", WHEN, "stray-1")
        assert got.account == operator.id
        expected = Counter([ref_primary.port, record_primary.port])
        assert {port: wait_calls(node.client) - before[port] for port, node in primaries.items()} == {
            port: expected[port] for port in primaries
        }
        reader = on_replica_node(ref_replica)
        try:
            assert reader.get(ref_key) is not None  # read right after the answer
        finally:
            reader.close()
    finally:
        await broker.close()
