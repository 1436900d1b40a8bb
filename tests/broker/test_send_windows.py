"""Device send windows, on every backend: outside its window a phone is handed nothing
new, neither from its queue nor from the pool, and its long poll is not a phone to wake;
inside, it is; windows over midnight and across a daylight-saving change open at the
zone's local times; the claim writes the next intervals when few are left; bad windows
are refused naming the field, changing nothing; null takes the window away."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from broker import Broker, errors
from broker.records import OutgoingMessage, SendWindow
from broker.send_windows import DAY_MS, HORIZON_DAYS, REFRESH_DAYS, open_intervals
from tests.support.fleet import TO, pair, self_managed

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
MINUTE = 60_000


def local_ms(clock_ms: int, hour: int, minute: int = 0, zone: zoneinfo.ZoneInfo = BERLIN) -> int:
    """The next moment at or after ``clock_ms`` when it is hour:minute in ``zone``."""
    now = dt.datetime.fromtimestamp(clock_ms / 1000, tz=zone)
    at = dt.datetime.combine(now.date(), dt.time(hour, minute), tzinfo=zone)
    if at < now:
        at = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(hour, minute), tzinfo=zone)
    return int(at.timestamp() * 1000)


async def test_outside_its_window_a_phone_gets_nothing_new_inside_it_does(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    clock.now_ms = local_ms(clock(), 6)  # 06:00 in Berlin
    await broker.send_windows.set(device.ref, SendWindow("08:00", "21:00", "Europe/Berlin"))
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "at eight", device.device_id)])).ids
    await broker.presence.heartbeat(device.ref)
    assert await broker.messages.claim(device.ref) == []
    clock.advance(2 * 60 * MINUTE - 1)  # 07:59:59.999
    assert await broker.messages.claim(device.ref) == []
    clock.advance(1)
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]
    await broker.messages.report_status(device.ref, mid, "sent")
    info = await broker.devices.info(device.ref)
    assert info.send_window == SendWindow("08:00", "21:00", "Europe/Berlin")
    # 21:00 closes it again; null takes the window away.
    [later] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "late", device.device_id)])).ids
    clock.now_ms = local_ms(clock(), 21)
    assert await broker.messages.claim(device.ref) == []
    await broker.send_windows.set(device.ref, None)
    assert [m.id for m in await broker.messages.claim(device.ref)] == [later]
    assert (await broker.devices.info(device.ref)).send_window is None


async def test_a_pool_phone_outside_its_window_leaves_the_pool_to_others(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    sleeping = await pair(broker, None, "sleeping")
    clock.now_ms = local_ms(clock(), 3)
    await broker.send_windows.set(sleeping.ref, SendWindow("08:00", "21:00", "Europe/Berlin"))
    await broker.presence.heartbeat(sleeping.ref)
    [mid] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "night")])).ids
    assert await broker.messages.claim(sleeping.ref) == []
    awake = await pair(broker, None, "awake")
    assert [m.id for m in await broker.messages.claim(awake.ref)] == [mid]


async def test_a_window_over_midnight_is_open_at_night_and_closed_by_day(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    clock.now_ms = local_ms(clock(), 12)
    await broker.send_windows.set(device.ref, SendWindow("22:00", "06:00", "Europe/Berlin"))
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "night", device.device_id)])).ids
    assert await broker.messages.claim(device.ref) == []
    clock.now_ms = local_ms(clock(), 2)  # 02:00 the next night
    await broker.presence.heartbeat(device.ref)
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]


def test_intervals_follow_the_zones_daylight_saving_change() -> None:
    # Europe/Berlin moves from UTC+1 to UTC+2 on 2027-03-28.
    before = int(dt.datetime(2027, 3, 27, 0, 0, tzinfo=dt.UTC).timestamp() * 1000)
    spans = [
        tuple(int(x) for x in s.split("-"))
        for s in open_intervals(SendWindow("08:00", "09:00", "Europe/Berlin"), before, 2).split(",")
    ]
    utc = [(dt.datetime.fromtimestamp(s / 1000, tz=dt.UTC).strftime("%d %H:%M"), (e - s) // MINUTE) for s, e in spans]
    assert utc == [("27 07:00", 60), ("28 06:00", 60), ("29 06:00", 60)]


async def test_the_claim_writes_the_next_intervals_when_few_are_left(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    await broker.send_windows.set(device.ref, SendWindow("00:00", "23:59", "UTC"))
    ends = lambda raw: int(raw.decode().rsplit("-", 1)[1])  # noqa: E731
    key = broker.shard(account.shard).device(device.device_id)
    first_end = ends(await broker.redis.hget(key, "send_open"))
    assert first_end > clock() + (HORIZON_DAYS - 1) * DAY_MS
    clock.advance((HORIZON_DAYS - REFRESH_DAYS - 1) * DAY_MS)
    await broker.presence.heartbeat(device.ref)
    await broker.messages.claim(device.ref)
    assert ends(await broker.redis.hget(key, "send_open")) == first_end  # not yet
    clock.advance(2 * DAY_MS)
    await broker.presence.heartbeat(device.ref)
    await broker.messages.claim(device.ref)
    assert ends(await broker.redis.hget(key, "send_open")) > clock() + (HORIZON_DAYS - 1) * DAY_MS


async def test_a_long_poll_outside_its_window_is_not_listed_as_waiting(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    clock.now_ms = local_ms(clock(), 23)
    await broker.send_windows.set(device.ref, SendWindow("08:00", "21:00", "Europe/Berlin"))
    await broker.messages.claim_tasks(device.ref, waiting_until=clock() + 30_000)
    assert await broker.redis.zscore(broker.shard(account.shard).waiting, device.device_id) is None
    await broker.send_windows.set(device.ref, None)
    await broker.messages.claim_tasks(device.ref, waiting_until=clock() + 30_000)
    assert await broker.redis.zscore(broker.shard(account.shard).waiting, device.device_id) is not None


@pytest.mark.parametrize(
    ("window", "field"),
    [
        (SendWindow("8:00", "21:00", "UTC"), "send_window.start"),
        (SendWindow("08:00", "24:00", "UTC"), "send_window.end"),
        (SendWindow("08:00", "08:00", "UTC"), "send_window.end"),
        (SendWindow("08:00", "21:00", "Mars/Olympus"), "send_window.timezone"),
        (SendWindow("08:00", "21:00", "../../etc/passwd"), "send_window.timezone"),
        (SendWindow("08:00", "21:00", ""), "send_window.timezone"),
    ],
)
async def test_a_bad_window_is_refused_naming_the_field_and_changes_nothing(
    broker: Broker, window: SendWindow, field: str
) -> None:
    account, [device] = await self_managed(broker)
    await broker.send_windows.set(device.ref, SendWindow("08:00", "21:00", "Europe/Berlin"))
    before = await broker.redis.hgetall(broker.shard(account.shard).device(device.device_id))
    with pytest.raises(errors.InvalidInput) as refused:
        await broker.send_windows.set(device.ref, window)
    assert refused.value.field == field
    assert await broker.redis.hgetall(broker.shard(account.shard).device(device.device_id)) == before


async def test_a_window_for_a_removed_device_is_not_found(broker: Broker) -> None:
    _, [device] = await self_managed(broker)
    await broker.devices.remove(device.ref)
    with pytest.raises(errors.DeviceNotFound):
        await broker.send_windows.set(device.ref, SendWindow("08:00", "21:00", "UTC"))
