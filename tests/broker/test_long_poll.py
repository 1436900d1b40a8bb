"""Long polls in the broker, on every backend: a wait is woken by the script that queues
its work (its device queue, its account's pool, the platform pool, a pool message the
sweep gives back), a pool message wakes one waiting phone rather than all of them, a
waiting phone is online, a wait that ends claims once more and is charged as one
empty poll, a hang-up or a stopping worker ends waits without claiming, and a
subscriber that lost its connection wakes its waits once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from broker import Broker
from broker.long_poll import Hangup
from broker.records import ClaimResult, OutgoingMessage
from tests.support.fleet import TO, pair, self_managed

SETTLE = 0.3  # long enough for a wait to start (subscribed, first claim made)
WOKEN = 5.0  # a woken wait answers far sooner; one that was not, only at its end


@pytest.fixture
async def waits(broker: Broker) -> AsyncIterator[Broker]:
    try:
        yield broker
    finally:
        await broker.wakeups.close()


async def broker_with(broker: Broker, **settings: int) -> Broker:
    """Another broker (another worker) on the same Redis and clock, with these settings."""
    other = Broker(broker.redis, msgspec.structs.replace(broker.settings, **settings), broker.scripts, broker.clock)
    await other.start()
    return other


def start(broker: Broker, device, seconds: int = 30, hangup: Hangup | None = None) -> asyncio.Task[ClaimResult]:
    return asyncio.create_task(broker.long_poll.claim(device.ref, None, seconds, hangup))


async def test_a_wait_is_woken_by_a_message_queued_for_its_device(waits: Broker) -> None:
    account, [device] = await self_managed(waits)
    task = start(waits, device)
    await asyncio.sleep(SETTLE)
    assert not task.done()
    ids = (await waits.messages.enqueue(account, [OutgoingMessage(TO, "now", device.device_id)])).ids
    assert [m.id for m in (await asyncio.wait_for(task, WOKEN)).messages] == ids


async def test_a_wait_is_woken_by_its_accounts_pool_and_makes_the_phone_online(waits: Broker) -> None:
    account, [] = await self_managed(waits, devices=0)
    device = await pair(waits, account, online=False)
    assert not await waits.presence.is_online(device.ref)
    task = start(waits, device)
    await asyncio.sleep(SETTLE)
    assert await waits.presence.is_online(device.ref)
    ids = (await waits.messages.enqueue(account, [OutgoingMessage(TO, "pool")])).ids
    assert [m.id for m in (await asyncio.wait_for(task, WOKEN)).messages] == ids


async def test_a_platform_pool_message_wakes_one_waiting_pool_phone_not_all(waits: Broker) -> None:
    sender = await waits.accounts.create("api@example.com", "api_only")
    phones = [await pair(waits, None, f"pool {i}", online=False) for i in range(4)]
    tasks = [start(waits, phone) for phone in phones]
    await asyncio.sleep(SETTLE)
    ids = (await waits.messages.enqueue(sender, [OutgoingMessage(TO, "one")])).ids
    done, _ = await asyncio.wait(tasks, timeout=WOKEN, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(SETTLE)  # a herd would have answered by now
    assert [[m.id for m in t.result().messages] for t in tasks if t.done()] == [ids]
    assert sum(t.done() for t in tasks) == 1
    waits.wakeups.end_all()
    assert [(await t).messages for t in tasks if t not in done] == [[], [], []]


async def test_a_pool_message_the_sweep_gives_back_wakes_a_waiting_phone(waits: Broker, clock, settings) -> None:
    account, [] = await self_managed(waits, devices=0)
    gone = await pair(waits, account, "gone")
    ids = (await waits.messages.enqueue(account, [OutgoingMessage(TO, "pool")])).ids
    assert [m.id for m in await waits.messages.claim(gone.ref)] == ids
    clock.advance(settings.lease_seconds * 1000)  # the lease runs out while "gone" is offline
    waiting = await pair(waits, account, "waiting")
    task = start(waits, waiting)
    await asyncio.sleep(SETTLE)
    assert (await waits.sweeper.sweep_all()).returned == 1
    assert [m.id for m in (await asyncio.wait_for(task, WOKEN)).messages] == ids


async def test_an_empty_wait_claims_at_its_end_and_is_charged_once(broker: Broker) -> None:
    limited = await broker_with(broker, tasks_per_minute=6, tasks_burst=10)
    try:
        _, [device] = await self_managed(limited)
        assert (await limited.messages.claim_tasks(device.ref, charge_empty=False)).rate.remaining == 10
        result = await asyncio.wait_for(start(limited, device, seconds=1), WOKEN)
        assert result.messages == [] and result.rate.remaining == 9
        assert await limited.redis.zscore(limited.shard(device.ref.shard).waiting, device.device_id) is None
    finally:
        await limited.wakeups.close()


async def test_a_hangup_ends_a_wait_and_nothing_is_claimed_for_it(waits: Broker) -> None:
    account, [device] = await self_managed(waits)
    hangup = Hangup()
    task = start(waits, device, hangup=hangup)
    await asyncio.sleep(SETTLE)
    hangup()
    assert (await asyncio.wait_for(task, WOKEN)).messages == []
    ids = (await waits.messages.enqueue(account, [OutgoingMessage(TO, "later", device.device_id)])).ids
    assert (await waits.message_log.get(account.shard, ids[0])).status == "queued"


async def test_a_stopping_worker_ends_every_wait_and_answers_new_ones_at_once(waits: Broker) -> None:
    _, devices = await self_managed(waits, devices=3)
    tasks = [start(waits, d) for d in devices]
    await asyncio.sleep(SETTLE)
    waits.wakeups.end_all()
    assert [(await asyncio.wait_for(t, WOKEN)).messages for t in tasks] == [[], [], []]
    assert (await asyncio.wait_for(start(waits, devices[0]), 1.0)).messages == []


async def test_a_worker_holding_its_most_waits_answers_one_more_as_a_plain_poll(broker: Broker) -> None:
    capped = await broker_with(broker, long_poll_max_waits=1)
    try:
        _, [one, two] = await self_managed(capped, devices=2)
        held = start(capped, one)
        await asyncio.sleep(SETTLE)
        assert (await asyncio.wait_for(start(capped, two), 1.0)).messages == []
        assert not held.done()
    finally:
        await capped.wakeups.close()


async def test_a_subscriber_that_lost_its_connection_wakes_its_waits_when_back(real_broker: Broker) -> None:
    broker = real_broker
    account, [device] = await self_managed(broker)
    task = start(broker, device)
    await asyncio.sleep(SETTLE)
    try:
        await broker.redis.execute_command("CLIENT KILL TYPE pubsub")
        # Queued while the subscriber connects again: its wake may be lost; the
        # subscriber, back, wakes the wait, which claims.
        ids = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "meanwhile", device.device_id)])).ids
        assert [m.id for m in (await asyncio.wait_for(task, WOKEN)).messages] == ids
    finally:
        await broker.wakeups.close()


async def test_a_wait_that_ended_without_its_last_claim_leaves_the_waiting_set_once_over(waits: Broker, clock) -> None:
    _, [gone, other] = await self_managed(waits, devices=2)
    hangup = Hangup()
    task = start(waits, gone, seconds=5, hangup=hangup)
    await asyncio.sleep(SETTLE)
    hangup()  # ends without a claim: its entry stays until its wait is over
    await asyncio.wait_for(task, WOKEN)
    waiting = waits.shard(gone.ref.shard).waiting
    assert await waits.redis.zscore(waiting, gone.device_id) is not None
    clock.advance(5_001)
    waits.wakeups.end_all()
    await waits.messages.claim_tasks(other.ref, waiting_until=clock() + 1_000)  # any long poll's claim prunes
    assert await waits.redis.zrange(waiting, 0, -1) == [other.device_id.encode()]
