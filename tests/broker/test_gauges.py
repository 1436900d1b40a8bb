"""The scrape-time gauges, on every backend: how long the message next in line in the pools
has waited (from its send_at when it was scheduled), by kind of shard, and 0 once the
pools are empty."""

from __future__ import annotations

from broker import Broker
from broker.records import OutgoingMessage
from tests.support.fleet import TO, drain, pair, self_managed

SECOND = 1000


async def test_pool_wait_is_the_age_of_the_longest_waiting_head(broker: Broker, clock) -> None:
    gauges = await broker.gauges()
    assert (gauges.pool_wait_seconds(gauges.platform), gauges.pool_wait_seconds(gauges.account)) == (0, 0)

    sender = await broker.accounts.create("api@example.com", "api_only")
    await broker.messages.enqueue(sender, [OutgoingMessage(TO, "first")])
    clock.advance(30 * SECOND)
    await broker.messages.enqueue(sender, [OutgoingMessage(TO, "second")])
    owner, _ = await self_managed(broker, devices=0)
    await broker.messages.enqueue(owner, [OutgoingMessage(TO, "own pool")])
    clock.advance(12 * SECOND)

    gauges = await broker.gauges()
    assert gauges.platform.pool_queued == 2
    assert gauges.pool_wait_seconds(gauges.platform) == 42
    assert gauges.pool_wait_seconds(gauges.account) == 12

    phone = await pair(broker, None)
    assert len(await broker.messages.claim(phone.ref, 1)) == 1
    gauges = await broker.gauges()
    assert gauges.pool_wait_seconds(gauges.platform) == 12  # "second" is next in line now

    assert len(await drain(broker, phone, 10)) == 1
    gauges = await broker.gauges()
    assert gauges.pool_wait_seconds(gauges.platform) == 0
    assert gauges.pool_wait_seconds(gauges.account) == 12


async def test_a_scheduled_pool_message_waits_from_its_send_at(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    await broker.messages.enqueue(sender, [OutgoingMessage(TO, "at nine", send_at=clock() + 3600 * SECOND)])
    gauges = await broker.gauges()
    assert (gauges.platform.pool_queued, gauges.pool_wait_seconds(gauges.platform)) == (0, 0)
    clock.advance(3605 * SECOND)
    assert (await broker.schedule.release_due())[0] == 1
    gauges = await broker.gauges()
    assert gauges.platform.pool_queued == 1
    assert gauges.pool_wait_seconds(gauges.platform) == 5


async def test_scheduled_heads_ahead_by_id_do_not_hide_an_older_wait(broker: Broker, clock) -> None:
    """Pools are read oldest id first, a few at a time: nine scheduled messages (older
    ids, released late) come before the message that has really waited longest."""
    at = clock() + 100 * SECOND
    for i in range(9):
        owner, _ = await self_managed(broker, f"scheduled-{i}@example.com", devices=0)
        await broker.messages.enqueue(owner, [OutgoingMessage(TO, "later", send_at=at)])
    clock.advance(10 * SECOND)
    waiting, _ = await self_managed(broker, "waiting@example.com", devices=0)
    await broker.messages.enqueue(waiting, [OutgoingMessage(TO, "now")])
    clock.advance(95 * SECOND)
    while (await broker.schedule.release_due())[0]:
        pass
    gauges = await broker.gauges()
    assert gauges.account.pool_queued == 10
    assert gauges.pool_wait_seconds(gauges.account) == 95
