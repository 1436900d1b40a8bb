"""Devices going offline and coming back online (``presence-changes-5.lua``), on fakeredis,
every real Redis and the Redis Cluster: each change is one ``device.offline`` or
``device.online`` event, however many background passes look, through a phone flapping
around the presence TTL too; a device paired but never seen has none until it was online;
a removed device has none and leaves nothing behind; a pool phone's events go to the
operator's endpoints; a holder whose lease another took is refused; many lapses at once
are taken in several calls, each once.

The background pass is :meth:`Presence.watch_held` under the leases of one "process"
(a :class:`ShardLeases` beating by hand), with the broker's clock moved by hand."""

from __future__ import annotations

import msgspec
import pytest

from broker import Broker, errors, keys
from broker.history import HistoryStore
from broker.leases import ShardLeases
from broker.records import Account, PresenceReport, RegisteredDevice
from broker.redis_client import fields
from broker.snapshotter import Snapshotter
from broker.webhooks import events
from broker.webhooks.dispatcher import WebhookDispatcher
from tests.support.backends import roomy_settings
from tests.support.fleet import lane_events, pair, self_managed

URL = "https://hooks.example.com/connecfy"
DEVICE_EVENTS = ["device.offline", "device.online"]


class Background:
    """One background process's presence pass and fan-out, run by hand."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.leases = ShardLeases(broker.ctx, holder="background")

    async def look(self) -> PresenceReport:
        """Renew (and take any new shard), then one presence pass over every shard held."""
        await self.leases.beat()
        report = await self.broker.presence.watch_held(self.leases)
        assert report is not None
        return report

    async def fan_out(self) -> None:
        dispatcher = WebhookDispatcher(self.broker, leases=self.leases)
        try:
            await self.leases.beat()
            await dispatcher.fan_out()
        finally:
            await dispatcher.stop()


def ttl_ms(broker: Broker) -> int:
    return broker.settings.presence_ttl_seconds * 1000


async def changes(broker: Broker, shard: str) -> list[tuple[str, str, str, int]]:
    """(event, account, device, at) of each change of presence in the shard's stream."""
    found = []
    for _, raw in await broker.redis.xrange(broker.shard(shard).events):
        entry = fields(raw)
        if "event" in entry:
            found.append((entry["event"], entry["account"], entry["device"], int(entry["at"])))
    return found


async def one_phone(broker: Broker) -> tuple[Account, RegisteredDevice, Background]:
    """An account with one phone seen now, and a background process that has looked once."""
    account, (phone,) = await self_managed(broker)
    background = Background(broker)
    assert await background.look() == PresenceReport()
    return account, phone, background


async def test_a_silent_phone_is_offline_once_and_online_once_when_it_is_back(broker: Broker, clock) -> None:
    account, phone, background = await one_phone(broker)
    endpoint = await broker.webhooks.create(account, URL, DEVICE_EVENTS)
    seen = clock.now_ms
    clock.advance(ttl_ms(broker) - 1)  # still online: its last sighting is one TTL old less 1 ms
    assert await background.look() == PresenceReport()
    clock.advance(1)
    assert not await broker.presence.is_online(phone.ref)
    assert await background.look() == PresenceReport(offline=1)
    for _ in range(5):  # however many passes look, and however long it stays silent
        clock.advance(1_000)
        assert await background.look() == PresenceReport()
    await broker.presence.heartbeat(phone.ref)
    back = clock.now_ms
    clock.advance(300)
    assert await background.look() == PresenceReport(online=1)
    for _ in range(5):
        clock.advance(1_000)
        await broker.presence.heartbeat(phone.ref)
        assert await background.look() == PresenceReport()
    assert await changes(broker, phone.shard) == [
        ("device.offline", account.id, phone.device_id, seen + ttl_ms(broker)),
        ("device.online", account.id, phone.device_id, back),
    ]
    await background.fan_out()
    found = await lane_events(broker, account.id, endpoint)
    assert [(e.type, e.device, e.device_name, e.at) for e in found] == [
        ("device.offline", phone.device_id, "phone 0", seen + ttl_ms(broker)),
        ("device.online", phone.device_id, "phone 0", back),
    ]
    assert msgspec.json.decode(events.body(found[0])) == {
        "id": found[0].id,
        "type": "device.offline",
        "created_at": "2027-01-15T08:00:45.000Z",
        "device_id": phone.device_id,
        "device_name": "phone 0",
        "at": "2027-01-15T08:00:45.000Z",
    }
    # A second fan-out of the same entries (a crash before the acknowledgement) queues nothing.
    await background.fan_out()
    assert len(await lane_events(broker, endpoint.account, endpoint)) == 2


async def test_endpoints_get_the_device_events_they_chose(broker: Broker, clock) -> None:
    account, phone, background = await one_phone(broker)
    offline_only = await broker.webhooks.create(account, URL, ["device.offline"])
    messages_only = await broker.webhooks.create(account, URL, ["message.sent"])
    everything = await broker.webhooks.create(account, URL)  # events left out: all of them
    assert everything.events[-2:] == DEVICE_EVENTS
    clock.advance(ttl_ms(broker))
    await background.look()
    await broker.presence.heartbeat(phone.ref)
    await background.look()
    await background.fan_out()
    assert [e.type for e in await lane_events(broker, offline_only.account, offline_only)] == ["device.offline"]
    assert await lane_events(broker, messages_only.account, messages_only) == []
    assert [e.type for e in await lane_events(broker, everything.account, everything)] == DEVICE_EVENTS


async def test_a_phone_flapping_around_the_ttl_is_announced_once_per_change(broker: Broker, clock) -> None:
    """Heartbeats a little under the TTL apart change nothing; a little over, with the
    background looking every 250 ms around the lapse, is one offline and one online; a
    lapse over before the next look is seen by no look, so it is neither."""
    _account, phone, background = await one_phone(broker)
    ttl = ttl_ms(broker)
    expected = []
    for gap in [ttl - 1, ttl + 600, ttl - 1, ttl - 1, ttl + 1_000, ttl + 600, ttl - 250]:
        seen = clock.now_ms
        clock.advance(gap - 1_000)
        await background.look()
        for _ in range(4):
            clock.advance(250)
            await background.look()
        await broker.presence.heartbeat(phone.ref)
        if gap > ttl:  # a look fell between the lapse and the next heartbeat
            expected += [("device.offline", seen + ttl), ("device.online", None)]
        assert (await background.look()).offline == 0
    found = [(event, at) for event, _, _, at in await changes(broker, phone.shard)]
    assert [e for e, _ in found] == [e for e, _ in expected] == ["device.offline", "device.online"] * 3
    assert [at for (e, at) in found if e == "device.offline"] == [at for (e, at) in expected if at is not None]
    # A lapse of 100 ms that ends before the next look.
    clock.advance(ttl + 100)
    await broker.presence.heartbeat(phone.ref)
    await background.look()
    assert len(await changes(broker, phone.shard)) == 6


async def test_a_return_and_a_second_lapse_while_no_one_looked_are_both_announced(broker: Broker, clock) -> None:
    """The background was away for longer than a TTL: the phone came back and went silent
    again meanwhile. Both changes go out, in order."""
    _account, phone, background = await one_phone(broker)
    ttl = ttl_ms(broker)
    clock.advance(ttl)
    assert await background.look() == PresenceReport(offline=1)
    clock.advance(5_000)
    await broker.presence.heartbeat(phone.ref)
    back = clock.now_ms
    clock.advance(ttl + 5_000)
    assert await background.look() == PresenceReport(offline=1, online=1)
    assert [(e, at) for e, _, _, at in await changes(broker, phone.shard)][1:] == [
        ("device.online", back),
        ("device.offline", back + ttl),
    ]
    assert await background.look() == PresenceReport()


async def test_returns_are_found_from_the_offline_set_or_from_the_phones_online(broker: Broker, clock) -> None:
    """A look reads the smaller of the two: the phones marked offline (most are online)
    or the phones online now (most are offline)."""
    _account, phones = await self_managed(broker, devices=6)
    background = Background(broker)
    await background.look()
    clock.advance(ttl_ms(broker))
    assert await background.look() == PresenceReport(offline=6)
    for phone in phones[:2]:  # six marked offline, two online: the two online are read
        await broker.presence.heartbeat(phone.ref)
    assert await background.look() == PresenceReport(online=2)
    for phone in phones[:5]:  # four marked offline, five online: the four are read
        await broker.presence.heartbeat(phone.ref)
    assert await background.look() == PresenceReport(online=3)
    assert await background.look() == PresenceReport()
    online = [d for event, _, d, _ in await changes(broker, phones[0].shard) if event == "device.online"]
    assert sorted(online) == sorted(p.device_id for p in phones[:5])


async def test_a_phone_paired_but_never_seen_has_no_event_until_it_was_online(broker: Broker, clock) -> None:
    account = await broker.accounts.create("owner@example.com", "self_managed")
    phone = await pair(broker, account, online=False)
    background = Background(broker)
    for _ in range(3):
        assert await background.look() == PresenceReport()
        clock.advance(ttl_ms(broker))
    await broker.presence.heartbeat(phone.ref)  # its first sighting: no event
    assert await background.look() == PresenceReport()
    seen = clock.now_ms
    clock.advance(ttl_ms(broker))
    assert await background.look() == PresenceReport(offline=1)
    assert await changes(broker, phone.shard) == [
        ("device.offline", account.id, phone.device_id, seen + ttl_ms(broker))
    ]


async def test_a_phone_offline_before_the_first_look_is_not_announced_nor_its_return(broker: Broker, clock) -> None:
    """Watching starts at a shard's first look (a new shard, or a server upgraded to one
    that announces presence): what lapsed before it is history."""
    _account, (phone,) = await self_managed(broker)
    clock.advance(ttl_ms(broker) * 10)
    background = Background(broker)
    assert await background.look() == PresenceReport()
    await broker.presence.heartbeat(phone.ref)
    assert await background.look() == PresenceReport()
    clock.advance(ttl_ms(broker))
    assert await background.look() == PresenceReport(offline=1)


async def test_a_removed_phone_has_no_event_and_leaves_no_presence_state(broker: Broker, clock) -> None:
    account, (online, offline, lapsing) = await self_managed(broker, devices=3)
    background = Background(broker)
    await background.look()
    endpoint = await broker.webhooks.create(account, URL, DEVICE_EVENTS)
    shard = broker.shard(keys.account_shard(account.id))
    ttl = ttl_ms(broker)
    clock.advance(ttl)
    await broker.presence.heartbeat(online.ref)
    assert await background.look() == PresenceReport(offline=2)  # offline and lapsing
    assert await broker.redis.smembers(shard.offline) == {offline.device_id.encode(), lapsing.device_id.encode()}
    # Removed while online: it never lapses. Removed while offline: it never comes back.
    await broker.devices.remove(online.ref)
    await broker.devices.remove(offline.ref)
    assert await broker.redis.smembers(shard.offline) == {lapsing.device_id.encode()}
    for _ in range(3):
        clock.advance(ttl)
        await background.look()
    assert {d for _, _, d, _ in await changes(broker, shard.tag)} == {offline.device_id, lapsing.device_id}
    # Removed after its change was announced, before the webhooks read it: not sent either.
    await broker.presence.heartbeat(lapsing.ref)
    assert await background.look() == PresenceReport(online=1)
    await broker.devices.remove(lapsing.ref)
    await background.fan_out()
    assert await lane_events(broker, endpoint.account, endpoint) == []
    assert await broker.redis.scard(shard.offline) == 0
    for device in (online, offline, lapsing):
        assert [k async for k in broker.redis.scan_iter(f"*{device.device_id}*")] == []


async def test_a_pool_phones_changes_go_to_the_operators_endpoints(broker: Broker, clock) -> None:
    pool_phone = await pair(broker, None, "pool phone")
    background = Background(broker)
    await background.look()
    clock.advance(ttl_ms(broker))
    # No operator yet: the change is kept (the return is a change too), with no event.
    assert await background.look() == PresenceReport(offline=1)
    assert await changes(broker, pool_phone.shard) == []
    operator = await broker.accounts.create("operator@example.com", "self_managed", operator=True)
    sender = await broker.accounts.create("api@example.com", "api_only")
    to_operator = await broker.webhooks.create(operator, URL, DEVICE_EVENTS)
    to_sender = await broker.webhooks.create(sender, URL)
    await broker.presence.heartbeat(pool_phone.ref)
    seen = clock.now_ms
    assert await background.look() == PresenceReport(online=1)
    clock.advance(ttl_ms(broker))
    assert await background.look() == PresenceReport(offline=1)
    assert await changes(broker, pool_phone.shard) == [
        ("device.online", operator.id, pool_phone.device_id, seen),
        ("device.offline", operator.id, pool_phone.device_id, seen + ttl_ms(broker)),
    ]
    await background.fan_out()
    assert [(e.type, e.device, e.device_name) for e in await lane_events(broker, to_operator.account, to_operator)] == [
        ("device.online", pool_phone.device_id, "pool phone"),
        ("device.offline", pool_phone.device_id, "pool phone"),
    ]
    assert await lane_events(broker, to_sender.account, to_sender) == []


async def test_a_holder_whose_lease_is_another_processes_is_refused(broker: Broker, clock) -> None:
    account, _phone, background = await one_phone(broker)
    shard = keys.account_shard(account.id)
    token = background.leases.tokens()[shard]
    clock.advance(ttl_ms(broker))
    before = await broker.redis.hgetall(broker.shard(shard).presence_watch)
    with pytest.raises(errors.LockLost):
        await broker.presence.watch(shard, f"background|{token + 1}")
    with pytest.raises(errors.LockLost):
        await broker.presence.watch(shard, f"another|{token}")
    assert await changes(broker, shard) == []
    assert await broker.redis.scard(broker.shard(shard).offline) == 0
    assert await broker.redis.hgetall(broker.shard(shard).presence_watch) == before
    assert await broker.presence.watch(shard, background.leases.lease(token)) == PresenceReport(offline=1)


async def test_time_only_moves_forward(broker: Broker, clock) -> None:
    """A holder whose clock is behind the last one's (another host) announces no return
    of a phone that is still silent."""
    _account, phone, background = await one_phone(broker)
    clock.advance(ttl_ms(broker) + 2_000)
    assert await background.look() == PresenceReport(offline=1)
    clock.advance(-3_000)  # by this clock, the phone's presence has not lapsed yet
    assert await background.look() == PresenceReport()
    clock.advance(10_000)
    assert await background.look() == PresenceReport()
    assert len(await changes(broker, phone.shard)) == 1


async def test_many_lapses_at_once_are_taken_in_several_calls_each_once(broker: Broker, clock) -> None:
    """More lapsed phones than one call looks at, five of them seen at the same
    millisecond (a call stops after all of those): one pass takes them all, each once."""
    small = Broker(broker.redis, roomy_settings(sweep_batch=3), broker.scripts, clock=clock)
    account, phones = await self_managed(small, devices=7)  # all seen at this same ms
    for phone in phones[:2]:
        clock.advance(10)
        await small.presence.heartbeat(phone.ref)
    background = Background(small)
    await background.look()
    clock.advance(ttl_ms(small) + 100)
    assert await background.look() == PresenceReport(offline=7)
    assert sorted(d for _, _, d, _ in await changes(small, keys.account_shard(account.id))) == sorted(
        p.device_id for p in phones
    )
    clock.advance(ttl_ms(small))
    assert await background.look() == PresenceReport()


async def test_changes_of_presence_pass_the_history_store_by(broker: Broker, clock, tmp_path) -> None:
    """The snapshotter reads the same stream: it stores the messages' changes only, and an
    entry goes once it and the webhooks have both read it."""
    account, _phone, background = await one_phone(broker)
    await broker.webhooks.create(account, URL)
    stream = broker.shard(keys.account_shard(account.id)).events
    clock.advance(ttl_ms(broker))
    await background.look()
    assert await broker.redis.xlen(stream) == 1
    store = HistoryStore(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    await store.start()
    try:
        report = await Snapshotter(broker, store, leases=background.leases).run_once()
        assert report is not None and (report.events, report.stored) == (1, 0)
        assert await broker.redis.xlen(stream) == 1  # the webhooks have not read it yet
        await background.fan_out()
        assert await broker.redis.xlen(stream) == 0
        assert await broker.message_log.events(account.shard) == []
    finally:
        await store.close()
