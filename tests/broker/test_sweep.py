"""The sweep: TTL expiry, lost devices, pool messages back to the pool."""

from __future__ import annotations

from broker import Broker
from broker.records import OutgoingMessage
from tests.support.backends import roomy_settings
from tests.support.fleet import TO, pair, self_managed


async def test_queued_message_past_its_ttl_expires(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    sender = await broker.accounts.create("api@example.com", "api_only")
    own = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    pooled = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "y")])).ids[0]
    clock.advance(settings.message_ttl_seconds * 1000 - 1)
    assert (await broker.sweeper.sweep_all()).expired == 0
    clock.advance(1)
    report = await broker.sweeper.sweep_all()
    assert (report.expired, report.lost, report.returned) == (2, 0, 0)
    assert (await broker.message_log.get(account.shard, own)).status == "expired"
    assert (await broker.message_log.get("p:default", pooled)).status == "expired"
    assert (await broker.message_log.account_counts(sender))["expired"] == 1
    assert await broker.messages.claim(device.ref) == []
    phone = await pair(broker, None)
    assert await broker.messages.claim(phone.ref) == []
    assert await broker.redis.zcard(broker.shard("p:default").pool) == 0


async def test_pool_message_of_an_offline_device_returns_to_the_pool(broker: Broker, clock, settings) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    first, second = await pair(broker, None, "first"), await pair(broker, None, "second")
    mid = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "x")])).ids[0]
    assert [m.id for m in await broker.messages.claim(first.ref)] == [mid]
    clock.advance(settings.lease_seconds * 1000)
    await broker.presence.heartbeat(second.ref)
    report = await broker.sweeper.sweep_all()
    assert report.returned == 1
    record = await broker.message_log.get("p:default", mid)
    assert (record.status, record.device, record.leases) == ("queued", "", 1)
    assert [m.id for m in await broker.messages.claim(second.ref)] == [mid]
    counters = await broker.message_log.counters("p:default")
    assert counters[f"d:{first.device_id}:claimed"] == 0
    assert counters[f"d:{second.device_id}:claimed"] == 1
    events = [(e.status, e.device) for e in await broker.message_log.events("p:default")]
    assert events == [("queued", ""), ("claimed", first.device_id), ("queued", ""), ("claimed", second.device_id)]
    timeline = (await broker.message_log.get("p:default", mid)).timeline
    assert [(status, dev) for status, _, dev, _ in timeline] == events
    # The first phone comes back: it may no longer report on a message it lost.
    await broker.presence.heartbeat(first.ref)
    assert await broker.messages.claim(first.ref) == []


async def test_pool_message_of_an_online_device_stays_with_it(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")])).ids[0]
    await broker.messages.claim(device.ref)
    clock.advance(settings.lease_seconds * 1000)
    await broker.presence.heartbeat(device.ref)
    assert (await broker.sweeper.sweep_all()).returned == 0
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]


async def test_pool_message_moves_a_bounded_number_of_times_then_fails(redis_client, scripts, clock) -> None:
    settings = roomy_settings(max_leases=3)
    broker = Broker(redis_client, settings, scripts, clock=clock)
    await broker.start()
    sender = await broker.accounts.create("api@example.com", "api_only")
    mid = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "x")])).ids[0]
    for attempt in range(3):
        phone = await pair(broker, None, f"phone {attempt}")
        assert [m.id for m in await broker.messages.claim(phone.ref)] == [mid]
        clock.advance(settings.presence_ttl_seconds * 1000 + settings.lease_seconds * 1000)
        await broker.sweeper.sweep_all()
    record = await broker.message_log.get("p:default", mid)
    assert (record.status, record.error, record.leases) == ("failed", "device_lost", 3)


async def test_device_targeted_message_of_a_silent_phone_fails_at_its_ttl(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    await broker.messages.claim(device.ref)
    clock.advance(settings.lease_seconds * 1000)
    assert (await broker.sweeper.sweep_all()).lost == 0
    assert (await broker.message_log.get(account.shard, mid)).status == "claimed"
    clock.advance(settings.message_ttl_seconds * 1000)
    assert (await broker.sweeper.sweep_all()).lost == 1
    record = await broker.message_log.get(account.shard, mid)
    assert (record.status, record.error) == ("failed", "device_lost")
    counts = await broker.message_log.account_counts(account)
    assert (counts["claimed"], counts["failed"]) == (0, 1)


async def test_sweep_is_bounded_per_call(redis_client, scripts, clock) -> None:
    broker = Broker(redis_client, roomy_settings(sweep_batch=10), scripts, clock=clock)
    await broker.start()
    sender = await broker.accounts.create("api@example.com", "api_only")
    await broker.messages.enqueue(sender, [OutgoingMessage(TO, "x")] * 25)
    clock.advance(broker.settings.message_ttl_seconds * 1000)
    first = await broker.sweeper.sweep("p:default")
    assert (first.expired, first.more) == (10, True)
    assert (await broker.sweeper.sweep_all()).expired == 15
    assert (await broker.message_log.account_counts(sender))["expired"] == 25


async def test_nothing_stays_claimed_forever(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id), OutgoingMessage(TO, "y")])
    await broker.messages.enqueue(sender, [OutgoingMessage(TO, "z")])
    await broker.messages.claim(device.ref)
    await broker.messages.claim(phone.ref)
    for _ in range(4):
        clock.advance(settings.message_ttl_seconds * 1000 // 3)
        await broker.presence.heartbeat(device.ref)
        await broker.presence.heartbeat(phone.ref)
        await broker.sweeper.sweep_all()
    for tag in (account.shard, "p:default"):
        counters = await broker.message_log.counters(tag)
        assert all(v == 0 for k, v in counters.items() if k.endswith((":claimed", ":queued")))
