"""A sender's message history from Redis: newest first, pages, filters; stats."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker, errors
from broker.leases import ShardLeases
from broker.records import OutgoingMessage
from tests.support.fleet import TO, self_managed


async def test_pages_newest_first_with_a_cursor(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    sent = []
    for i in range(7):
        sent += (await broker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id)])).ids
        clock.advance(1)
    page = await broker.message_log.page(account, limit=3)
    assert [m.id for m in page.items] == sent[::-1][:3] and page.next_cursor == sent[4]
    page2 = await broker.message_log.page(account, limit=3, cursor=page.next_cursor)
    assert [m.id for m in page2.items] == sent[::-1][3:6]
    page3 = await broker.message_log.page(account, limit=3, cursor=page2.next_cursor)
    assert [m.id for m in page3.items] == [sent[0]] and page3.next_cursor is None


async def test_filters_by_status_and_device(broker: Broker, clock) -> None:
    account, [one, two] = await self_managed(broker, devices=2)
    for i in range(6):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", (one, two)[i % 2].device_id)])
        clock.advance(1)
    [first, *_] = await broker.messages.claim(one.ref, 1)
    await broker.messages.report_status(one.ref, first.id, "sent")
    sent = await broker.message_log.page(account, status="sent")
    assert [m.id for m in sent.items] == [first.id] and sent.next_cursor is None
    mine = await broker.message_log.page(account, device_id=two.device_id, limit=2)
    assert [m.message for m in mine.items] == ["m5", "m3"]
    rest = await broker.message_log.page(account, device_id=two.device_id, limit=2, cursor=mine.next_cursor)
    assert [m.message for m in rest.items] == ["m1"] and rest.next_cursor is None


async def test_sparse_filter_pages_on_past_what_it_read(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 30)
    page = await broker.message_log.page(account, status="delivered", scan_limit=10)
    assert page.items == [] and page.next_cursor is not None
    pages = 1
    while page.next_cursor is not None:
        page = await broker.message_log.page(account, status="delivered", scan_limit=10, cursor=page.next_cursor)
        pages += 1
    assert pages == 4  # three full reads, then an empty page that ends it


async def test_api_only_history_is_per_sender_in_the_pool(broker: Broker) -> None:
    one = await broker.accounts.create("one@example.com", "api_only")
    two = await broker.accounts.create("two@example.com", "api_only")
    await broker.messages.enqueue(one, [OutgoingMessage(TO, "one's")])
    await broker.messages.enqueue(two, [OutgoingMessage(TO, "two's")])
    assert [m.message for m in (await broker.message_log.page(one)).items] == ["one's"]


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 501}, {"status": "lost"}, {"cursor": "../x"}])
async def test_bad_queries(broker: Broker, kwargs) -> None:
    account, _ = await self_managed(broker)
    with pytest.raises(errors.InvalidInput):
        await broker.message_log.page(account, **kwargs)


async def test_stats(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 3)
    [a, b, _] = await broker.messages.claim(device.ref)
    await broker.messages.report_status(device.ref, a.id, "delivered")
    await broker.messages.report_status(device.ref, b.id, "failed", "no signal")
    stats = await broker.message_log.stats(account)
    assert stats.counts["delivered"] == 1 and stats.counts["failed"] == 1
    assert stats.counts["claimed"] == 1 and stats.counts["total"] == 3
    [info] = stats.devices
    assert (info.device_id, info.online, info.counts["delivered"]) == (device.device_id, True, 1)


async def test_each_shard_has_one_sweeper_and_a_dead_ones_shards_move(broker: Broker, clock) -> None:
    one = ShardLeases(broker.ctx, holder="worker-1", lease_ms=1000, beat_ms=100)
    two = ShardLeases(broker.ctx, holder="worker-2", lease_ms=1000, beat_ms=100)
    await one.beat()
    assert await broker.sweeper.sweep_held(one) is not None
    await two.beat()
    assert await broker.sweeper.sweep_held(two) is None  # the one shard is worker-1's
    assert await broker.sweeper.sweep_held(one) is not None
    await asyncio.sleep(1.05)  # worker-1 stops renewing (it died): its lease runs out
    clock.advance(1050)
    await two.beat()
    assert await broker.sweeper.sweep_held(two) is not None
    assert await broker.sweeper.sweep_held(one) is None  # by its own reckoning, its lease ran out
