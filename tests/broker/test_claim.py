"""Claim: order, leases, redelivery, budgets, presence and pools."""

from __future__ import annotations

import pytest

from broker import Broker, errors
from broker.records import DeviceRef, OutgoingMessage
from tests.support.backends import roomy_settings
from tests.support.fleet import TO, pair, self_managed


async def test_claim_hands_out_the_devices_queue_oldest_first_and_only_once(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    ids = []
    for i in range(3):
        ids += (await broker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id)])).ids
        clock.advance(1)
    claimed = await broker.messages.claim(device.ref)
    assert [m.id for m in claimed] == ids
    assert [m.message for m in claimed] == ["m0", "m1", "m2"]
    assert claimed[0].to == TO and claimed[0].segments == 1
    assert await broker.messages.claim(device.ref) == []
    record = await broker.message_log.get(account.shard, ids[0])
    assert (record.status, record.device, record.leases) == ("claimed", device.device_id, 1)
    counters = await broker.message_log.counters(account.shard)
    assert counters[f"a:{account.id}:claimed"] == 3 and counters[f"a:{account.id}:queued"] == 0
    assert counters[f"d:{device.device_id}:claimed"] == 3


async def test_limit_caps_a_claim(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 5)
    assert len(await broker.messages.claim(device.ref, 2)) == 2
    assert len(await broker.messages.claim(device.ref, 10)) == 3
    for bad in (0, -1, 101, "5"):
        with pytest.raises(errors.InvalidInput):
            await broker.messages.claim(device.ref, bad)


async def test_a_device_never_gets_another_devices_messages(broker: Broker) -> None:
    account, [one, two] = await self_managed(broker, devices=2)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "for one", one.device_id)])
    assert await broker.messages.claim(two.ref) == []
    assert [m.message for m in await broker.messages.claim(one.ref)] == ["for one"]


async def test_expired_lease_is_redelivered_to_the_same_device_first(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    first = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "old", device.device_id)])).ids[0]
    await broker.messages.claim(device.ref)
    second = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "new", device.device_id)])).ids[0]
    clock.advance(settings.lease_seconds * 1000 - 1)
    assert [m.id for m in await broker.messages.claim(device.ref, 1)] == [second]
    clock.advance(1)
    assert [m.id for m in await broker.messages.claim(device.ref)] == [first]
    record = await broker.message_log.get(account.shard, first)
    assert (record.status, record.leases) == ("claimed", 2)


async def test_after_the_last_lease_a_message_fails_device_lost(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    for _ in range(settings.max_leases):
        assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]
        clock.advance(settings.lease_seconds * 1000)
    assert await broker.messages.claim(device.ref) == []
    record = await broker.message_log.get(account.shard, mid)
    assert (record.status, record.error, record.leases) == ("failed", "device_lost", settings.max_leases)


async def test_per_minute_budget_counts_segments(redis_client, scripts, clock) -> None:
    broker = Broker(redis_client, roomy_settings(device_segments_per_minute=5), scripts, clock=clock)
    await broker.start()
    account, [device] = await self_managed(broker)
    two_segments = "y" * 200
    await broker.messages.enqueue(account, [OutgoingMessage(TO, two_segments, device.device_id)] * 4)
    assert [m.segments for m in await broker.messages.claim(device.ref)] == [2, 2]
    clock.advance(59_999)
    assert await broker.messages.claim(device.ref) == []
    clock.advance(1)
    assert len(await broker.messages.claim(device.ref)) == 2


async def test_message_longer_than_the_minute_budget_goes_out_when_the_budget_is_unused(
    redis_client, scripts, clock
) -> None:
    broker = Broker(redis_client, roomy_settings(device_segments_per_minute=2), scripts, clock=clock)
    await broker.start()
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(
        account, [OutgoingMessage(TO, "short", device.device_id), OutgoingMessage(TO, "z" * 400, device.device_id)]
    )
    assert [m.segments for m in await broker.messages.claim(device.ref)] == [1]
    clock.advance(60_000)
    assert [m.segments for m in await broker.messages.claim(device.ref)] == [3]


async def test_per_day_budget(redis_client, scripts, clock) -> None:
    broker = Broker(redis_client, roomy_settings(device_segments_per_day=3), scripts, clock=clock)
    await broker.start()
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 5)
    for message in await broker.messages.claim(device.ref):
        await broker.messages.report_status(device.ref, message.id, "sent")
    clock.advance(3_600_000)
    assert await broker.messages.claim(device.ref) == []
    await broker.presence.heartbeat(device.ref)
    clock.now_ms = (clock.now_ms // 86_400_000 + 1) * 86_400_000
    assert len(await broker.messages.claim(device.ref)) == 2


async def test_budget_stops_the_claim_in_order(redis_client, scripts, clock) -> None:
    """A message that does not fit blocks the ones behind it: order is kept."""
    broker = Broker(redis_client, roomy_settings(device_segments_per_minute=3), scripts, clock=clock)
    await broker.start()
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(
        account,
        [
            OutgoingMessage(TO, "x" * 200, device.device_id),
            OutgoingMessage(TO, "y" * 200, device.device_id),
            OutgoingMessage(TO, "z", device.device_id),
        ],
    )
    assert [m.message[0] for m in await broker.messages.claim(device.ref)] == ["x"]


async def test_a_claim_and_a_status_report_count_as_presence(broker: Broker, clock, settings) -> None:
    """Presence comes from a heartbeat, a claim or a status report: a phone that polls is
    online (and offered its account's pool) without heartbeats, and one silent for the
    presence TTL is offline."""
    account, [] = await self_managed(broker, devices=0)
    device = await pair(broker, account, online=False)
    assert not await broker.presence.is_online(device.ref)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "to the pool")])).ids[0]
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]
    assert await broker.presence.is_online(device.ref)
    clock.advance(settings.presence_ttl_seconds * 1000)
    assert not await broker.presence.is_online(device.ref)
    await broker.messages.report_status(device.ref, mid, "sent")
    assert await broker.presence.is_online(device.ref)
    seen = await broker.redis.hget(broker.shard(device.shard).device(device.device_id), "last_seen")
    assert int(seen) == clock()


async def test_own_queue_comes_before_the_pool(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    pooled = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "pool")])).ids
    clock.advance(5)
    own = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "own", device.device_id)])).ids
    assert [m.id for m in await broker.messages.claim(device.ref)] == own + pooled


async def test_platform_pool_serves_api_only_accounts_through_pool_phones(broker: Broker) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None)
    assert phone.shard == "p:default" and phone.account_id == ""
    mid = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "via pool")])).ids[0]
    _owner, [own_phone] = await self_managed(broker)
    assert await broker.messages.claim(own_phone.ref) == []
    assert [m.id for m in await broker.messages.claim(phone.ref)] == [mid]
    counters = await broker.message_log.counters("p:default")
    assert counters[f"a:{sender.id}:claimed"] == 1
    assert counters[f"d:{phone.device_id}:claimed"] == 1


async def test_unknown_device_cannot_claim(broker: Broker) -> None:
    with pytest.raises(errors.DeviceNotFound):
        await broker.messages.claim(DeviceRef("p:default", "nosuchdevice"))
    assert await broker.message_log.counters("p:default") == {}


async def test_a_message_claimed_twice_within_a_minute_is_counted_twice_then_forgotten(
    redis_client, scripts, clock
) -> None:
    """With a lease under a minute a pool message can come back to the same phone inside
    one send window: both claims are charged, and both leave the window after 60 s."""
    broker = Broker(redis_client, roomy_settings(lease_seconds=30, device_segments_per_minute=10), scripts, clock=clock)
    await broker.start()
    account, [device] = await self_managed(broker)
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "z" * 400)])).ids  # 3 segments
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]
    clock.advance(46_000)  # lease over, phone silent past its presence: back to the pool
    assert (await broker.sweeper.sweep_all()).returned == 1
    await broker.presence.heartbeat(device.ref)
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]
    assert int((await broker.devices.get(device.ref))["window_used"]) == 6
    clock.advance(61_000)
    await broker.presence.heartbeat(device.ref)
    await broker.messages.claim(device.ref)
    assert int((await broker.devices.get(device.ref))["window_used"]) == 0
    assert await broker.redis.zcard(broker.shard(account.shard).device_window(device.device_id)) == 0


async def test_a_queued_message_past_its_ttl_expires_instead_of_going_out(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    [old] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "too late", device.device_id)])).ids
    [pooled] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "too late, pool")])).ids
    clock.advance(settings.message_ttl_seconds * 1000)
    await broker.presence.heartbeat(device.ref)
    [fresh] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "fresh", device.device_id)])).ids
    assert [m.id for m in await broker.messages.claim(device.ref)] == [fresh]
    for mid in (old, pooled):
        assert (await broker.message_log.get(account.shard, mid)).status == "expired"
    counts = await broker.message_log.account_counts(account)
    assert (counts["expired"], counts["claimed"], counts["queued"]) == (2, 1, 0)
