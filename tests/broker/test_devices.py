"""Device list, settings and removal."""

from __future__ import annotations

import pytest

from broker import Broker, errors
from broker.records import OutgoingMessage
from tests.support.backends import roomy_settings
from tests.support.fleet import TO, pair, redis_snapshot, self_managed


async def test_list_shows_presence_fields_limits_and_counts(broker: Broker, clock, settings) -> None:
    account, [one, two] = await self_managed(broker, devices=2)
    await broker.presence.heartbeat(one.ref, battery=77, android_version="14", app_version="1.2.0")
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", one.device_id)] * 2)
    [m, _] = await broker.messages.claim(one.ref)
    await broker.messages.report_status(one.ref, m.id, "sent")
    clock.advance(settings.presence_ttl_seconds * 1000 - 1)
    await broker.presence.heartbeat(one.ref)
    clock.advance(1)
    listed = {d.device_id: d for d in await broker.devices.list_for(account)}
    assert set(listed) == {one.device_id, two.device_id}
    first, second = listed[one.device_id], listed[two.device_id]
    assert (first.online, second.online) == (True, False)
    assert (first.battery, first.android_version, first.app_version) == (77, "14", "1.2.0")
    assert (second.battery, second.last_seen_ms is not None) == (None, True)
    assert (first.segments_per_minute, first.segments_per_day) == (30, 1000)
    assert (first.counts["sent"], first.counts["claimed"], second.counts["sent"]) == (1, 1, 0)


async def test_pool_phones_are_listed_for_the_pool_only(broker: Broker) -> None:
    account, [own] = await self_managed(broker)
    phone = await pair(broker, None)
    assert [d.device_id for d in await broker.devices.list_for(None)] == [phone.device_id]
    assert [d.device_id for d in await broker.devices.list_for(account)] == [own.device_id]
    other = await broker.accounts.create("other@example.com", "self_managed")
    assert await broker.devices.list_for(other) == []


async def test_update_name_and_budget(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    await broker.devices.update(device.ref, segments_per_minute=2)
    await broker.devices.update(device.ref, name=" Office phone ")
    [info] = await broker.devices.list_for(account)
    assert (info.device_name, info.segments_per_minute, info.segments_per_day) == ("Office phone", 2, 1000)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 3)
    assert len(await broker.messages.claim(device.ref)) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "x" * 65},
        {"segments_per_minute": 0},
        {"segments_per_day": -5},
        {"segments_per_day": True},
        {"segments_per_minute": "30"},
    ],
)
async def test_bad_updates_change_nothing(broker: Broker, kwargs) -> None:
    _account, [device] = await self_managed(broker)
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.InvalidInput):
        await broker.devices.update(device.ref, **kwargs)
    assert await redis_snapshot(broker.redis) == before


async def test_removed_device_is_gone_with_its_token(broker: Broker) -> None:
    account, [device, other] = await self_managed(broker, devices=2)
    [held_own] = (
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "for it, claimed", device.device_id)])
    ).ids
    [held_pool] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "pool, claimed")])).ids
    assert [m.id for m in await broker.messages.claim(device.ref)] == [held_own, held_pool]
    [waiting] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "for it, queued", device.device_id)])).ids

    report = await broker.devices.remove(device.ref)
    assert (report.lost, report.returned) == (2, 1)
    assert await broker.devices.find_by_token(device.device_token) is None
    for call in (broker.messages.claim, broker.presence.heartbeat, broker.devices.remove):
        with pytest.raises(errors.DeviceNotFound):
            await call(device.ref)
    assert [d.device_id for d in await broker.devices.list_for(account)] == [other.device_id]
    for mid in (held_own, waiting):
        record = await broker.message_log.get(account.shard, mid)
        assert (record.status, record.error) == ("failed", "device_removed")
    assert [m.id for m in await broker.messages.claim(other.ref)] == [held_pool]
    counts = await broker.message_log.account_counts(account)
    assert (counts["failed"], counts["claimed"], counts["queued"]) == (2, 1, 0)
    assert await broker.redis.zcard(broker.shard(account.shard).leased) == 1


async def test_removal_moves_large_backlogs_in_bounded_steps(redis_client, scripts, clock) -> None:

    broker = Broker(redis_client, roomy_settings(sweep_batch=7), scripts, clock=clock)
    await broker.start()
    account, [device] = await self_managed(broker)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 30)
    assert (await broker.devices.remove(device.ref)).lost == 30
    assert (await broker.message_log.account_counts(account))["failed"] == 30
    assert await broker.redis.zcard(broker.shard(account.shard).queue) == 0
