"""Heartbeats: presence key, last seen, device fields."""

from __future__ import annotations

import pytest

from broker import Broker, errors
from broker.records import DeviceRef
from tests.support.fleet import pair, self_managed


async def test_heartbeat_sets_presence_and_fields(broker: Broker, clock, settings) -> None:
    _account, [device] = await self_managed(broker)
    clock.advance(1234)
    assert (
        await broker.presence.heartbeat(device.ref, battery=81, android_version="14", app_version="1.0.0")
        == clock.now_ms
    )
    fields = await broker.devices.get(device.ref)
    assert (fields["battery"], fields["android_version"], fields["app_version"]) == ("81", "14", "1.0.0")
    assert int(fields["last_seen"]) == clock.now_ms
    assert await broker.presence.is_online(device.ref)
    shard = broker.shard(device.shard)
    ttl = await broker.redis.pttl(shard.device_presence(device.device_id))
    assert 0 < ttl <= settings.presence_ttl_seconds * 1000
    clock.advance(settings.presence_ttl_seconds * 1000)
    assert not await broker.presence.is_online(device.ref)


async def test_fields_are_optional_and_kept(broker: Broker) -> None:
    _account, [device] = await self_managed(broker)
    await broker.presence.heartbeat(device.ref, battery=50, app_version="2.0")
    await broker.presence.heartbeat(device.ref)
    fields = await broker.devices.get(device.ref)
    assert (fields["battery"], fields["app_version"]) == ("50", "2.0")
    assert "android_version" not in fields


@pytest.mark.parametrize(
    "kwargs",
    [
        {"battery": 101},
        {"battery": -1},
        {"battery": True},
        {"battery": "80"},
        {"android_version": "x" * 33},
        {"app_version": 14},
    ],
)
async def test_bad_fields_are_refused_and_change_nothing(broker: Broker, kwargs) -> None:
    _account, [device] = await self_managed(broker, devices=1)
    before = await broker.devices.get(device.ref)
    with pytest.raises(errors.InvalidInput):
        await broker.presence.heartbeat(device.ref, **kwargs)
    assert await broker.devices.get(device.ref) == before


async def test_unknown_device(broker: Broker) -> None:
    ref = DeviceRef("p:default", "nosuchdevice")
    with pytest.raises(errors.DeviceNotFound):
        await broker.presence.heartbeat(ref)
    assert not await broker.redis.exists(broker.shard("p:default").device_presence("nosuchdevice"))
    assert not await broker.presence.is_online(ref)


async def test_pool_phone_presence(broker: Broker) -> None:
    phone = await pair(broker, None)
    assert await broker.presence.is_online(phone.ref)
