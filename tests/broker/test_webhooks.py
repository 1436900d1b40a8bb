"""Webhooks below the HTTP layer: endpoint records, the URL policy and resolver (SSRF),
signatures, backoff, the fan-out from the shard streams into lanes, and stream entries
kept until both readers have acknowledged them. Redis parts run on fakeredis and every
real Redis; HTTP parts against a real local receiver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from broker import Broker, errors, keys, streams
from broker.leases import ShardLeases
from broker.records import OutgoingMessage
from broker.snapshotter import Snapshotter
from broker.webhooks import events
from broker.webhooks.addresses import SafeResolver, WebhookUrlRefused, address_allowed, check_url
from broker.webhooks.courier import Courier
from broker.webhooks.dispatcher import FanOutReport, WebhookDispatcher, backoff_ms
from tests.support.backends import roomy_settings
from tests.support.fleet import TO, lane_events, self_managed
from tests.support.webhook_receiver import Receiver

URL = "https://hooks.example.com/connecfy"


def with_settings(broker: Broker, **values: object) -> Broker:
    fresh = Broker(broker.redis, roomy_settings(**values), broker.scripts, clock=broker.clock)
    return fresh


# URL policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("fe80::1%eth0", False),
        ("not an ip", False),
    ],
)
def test_only_public_addresses_are_reachable(address: str, allowed: bool) -> None:
    assert address_allowed(address, allow_loopback=False) is allowed


def test_loopback_only_with_the_setting() -> None:
    assert not address_allowed("127.0.0.1", False) and address_allowed("127.0.0.1", True)
    assert address_allowed("::1", True) and not address_allowed("10.0.0.1", True)
    for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "https://[::1]/x", "http://a.localhost/"):
        with pytest.raises(WebhookUrlRefused):
            check_url(url, allow_loopback=False)
        assert check_url(url, allow_loopback=True) == url
    with pytest.raises(WebhookUrlRefused, match="https"):
        check_url("http://example.com/", allow_loopback=True)  # the setting opens loopback only


async def test_the_resolver_drops_refused_addresses() -> None:
    with pytest.raises(OSError, match="no public address"):
        await SafeResolver(allow_loopback=False).resolve("localhost", 443)
    found = await SafeResolver(allow_loopback=True).resolve("localhost", 443)
    assert found and all(address_allowed(r["host"], True) for r in found)


async def test_the_courier_never_reaches_a_refused_address() -> None:
    receiver = Receiver()
    port = receiver.url.split(":")[2].split("/")[0]
    courier = Courier(timeout_s=2, max_in_flight=4, allow_loopback=False)
    event = events.QueuedEvent("evt_x", "message.sent", "M1", "d", 1, "", 1)
    try:
        by_name = await courier.post(f"http://localhost:{port}/hooks", ["s"], event)
        by_address = await courier.post(receiver.url, ["s"], event)
        by_number = await courier.post(f"http://2130706433:{port}/hooks", ["s"], event)  # 127.0.0.1 in disguise
        assert not by_number.ok and "address refused" in by_number.error  # read as 127.0.0.1 before anything connects
        assert not by_name.ok and "no public address" in by_name.error
        assert not by_address.ok and "address refused" in by_address.error
        assert receiver.received == []
    finally:
        await courier.close()
        receiver.close()


async def test_the_courier_does_not_follow_redirects_and_times_out() -> None:
    redirecting, hanging = Receiver(status=302), Receiver(hang=True)
    courier = Courier(timeout_s=1, max_in_flight=4, allow_loopback=True)
    event = events.QueuedEvent("evt_x", "message.sent", "M1", "d", 1, "", 1)
    try:
        redirected = await courier.post(redirecting.url, ["s"], event)
        assert not redirected.ok and redirected.status_code == 302 and "redirect" in redirected.error
        hung = await courier.post(hanging.url, ["s"], event)
        assert not hung.ok and hung.status_code is None and "timed out" in hung.error
    finally:
        await courier.close()
        redirecting.close()
        hanging.close()


# Signatures and backoff ------------------------------------------------------------------


def test_signatures_verify_and_refuse_tampering_other_secrets_and_replays() -> None:
    event = events.QueuedEvent("evt_a", "message.delivered", "M1", "dev", 1_800_000_000_000, "", 1)
    body = events.body(event)
    now = int(time.time())
    header = events.signature_header(["new", "old"], now, body)
    assert events.verify("new", header, body, now) and events.verify("old", header, body, now)
    assert not events.verify("other", header, body, now)
    assert not events.verify("new", header, body.replace(b"delivered", b"failed"), now)
    assert not events.verify("new", header.replace(f"t={now}", f"t={now + 1}"), body, now)
    assert not events.verify("new", header, body, now + events.TOLERANCE_SECONDS + 1)
    assert not events.verify("new", "v1=" + events.sign("new", now, body), body, now)  # no timestamp
    assert msgspec.json.decode(body) == {
        "id": "evt_a",
        "type": "message.delivered",
        "created_at": "2027-01-15T08:00:00.000Z",
        "data": {"message_id": "M1", "status": "delivered", "device_id": "dev", "error": None},
    }


def test_event_ids_are_stable_per_stream_entry() -> None:
    first = events.event_id("a:x", "1800000000000-0")
    assert first == events.event_id("a:x", "1800000000000-0") and first.startswith("evt_") and len(first) == 30
    assert len({first, events.event_id("a:x", "1800000000000-1"), events.event_id("a:y", "1800000000000-0")}) == 3


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    import random

    rng = random.Random(7)
    for attempts, ceiling in [(1, 1_000), (2, 2_000), (3, 4_000), (10, 512_000), (13, 3_600_000), (60, 3_600_000)]:
        waits = [backoff_ms(attempts, 1_000, 3_600_000, rng) for _ in range(200)]
        assert ceiling // 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling // 4  # jittered, not one fixed value


# Endpoints ----------------------------------------------------------------------------------


async def test_endpoint_records(broker: Broker) -> None:
    account, _ = await self_managed(broker, devices=0)
    hooks = broker.webhooks
    made = await hooks.create(account, URL, ["message.failed", "message.sent"])
    assert made.events == ["message.sent", "message.failed"] and made.secret.startswith("whsec_")
    listed = await hooks.list_for(account)
    assert [e.id for e in listed] == [made.id] and listed[0].secret == made.secret
    rotated = await hooks.rotate_secret(account, made.id)
    assert rotated.secrets(broker.clock()) == [rotated.secret, made.secret]
    assert rotated.secrets(broker.clock() + 86_400_001) == [rotated.secret]
    other = await broker.accounts.create("other@example.com", "self_managed")
    for call in (hooks.get(other, made.id), hooks.delete(other, made.id), hooks.get(account, "../x")):
        with pytest.raises(errors.WebhookNotFound):
            await call
    await hooks.delete(account, made.id)
    assert await hooks.list_for(account) == []
    assert await broker.redis.smembers(keys.WEBHOOK_ENDPOINTS) == set()
    assert not [k async for k in broker.redis.scan_iter("*webhook:*")]


async def test_refused_registrations_write_nothing(broker: Broker) -> None:
    account, _ = await self_managed(broker, devices=0)
    before = sorted([k async for k in broker.redis.scan_iter("*")])
    for url, types in [
        ("https://10.0.0.1/", None),
        ("http://127.0.0.1:1/", None),
        ("https://localhost/", None),
        # Numbers that spell loopback: read as 127.0.0.1 and refused as written.
        ("https://2130706433/", None),
        ("https://0x7f.1/", None),
        ("https://127.1/", None),
        (URL, ["message.nope"]),
        (URL, []),
        (URL, "message.sent"),
        (None, None),
        ("x" * 3000, None),
    ]:
        with pytest.raises(errors.InvalidInput):
            await broker.webhooks.create(account, url, types)
    assert sorted([k async for k in broker.redis.scan_iter("*")]) == before


# Fan-out and the streams -----------------------------------------------------------------


async def queue_and_finish(broker: Broker, account, device, count: int) -> list[str]:
    ids = (await broker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}") for i in range(count)])).ids
    await broker.messages.claim(device.ref, limit=count)
    for message_id in ids:
        await broker.messages.report_status(device.ref, message_id, "sent")
    return ids


async def fan_out_once(broker: Broker, leases: ShardLeases | None = None) -> FanOutReport:
    """One fan-out pass of a fresh dispatcher, its lanes stopped before they deliver much:
    under ``leases`` (shared with a snapshotter, as in one background process), or under
    leases of its own on every shard, given up at the end."""
    dispatcher = WebhookDispatcher(broker, leases=leases)
    try:
        await dispatcher.leases.beat()
        return await dispatcher.fan_out()
    finally:
        await dispatcher.stop()
        if leases is None:
            await dispatcher.leases.leave()


async def test_fan_out_queues_each_wanted_change_once_in_message_order(broker: Broker) -> None:
    account, (device,) = await self_managed(broker)
    before = await queue_and_finish(broker, account, device, 2)  # before the endpoint: not sent
    broker.clock.advance(1)
    endpoint = await broker.webhooks.create(account, URL, ["message.claimed", "message.sent"])
    ids = await queue_and_finish(broker, account, device, 5)
    dispatcher = WebhookDispatcher(broker)
    try:
        await dispatcher.leases.beat()
        shard = keys.account_shard(account.id)
        entries = (
            await streams.read(
                broker.redis,
                streams.WEBHOOKS_GROUP,
                "dispatcher",
                [broker.shard(shard).events],
                pending=False,
                count=1000,
            )
        )[0]
        report = await dispatcher.fan_out()
        # The same entries again (as after a crash before the acknowledgement, or from a
        # holder that paused past its lease): nothing new.
        await dispatcher._fan_out_shard(shard, entries, report)
    finally:
        await dispatcher.stop()
    queued = await lane_events(broker, account.id, endpoint)
    assert sorted((e.message_id, e.type) for e in queued) == sorted(
        (i, t) for i in ids for t in ("message.claimed", "message.sent")
    )
    assert not {e.message_id for e in queued} & set(before)
    for message_id in ids:  # one lane per message, its events in order
        mine = [e for e in queued if e.message_id == message_id]
        assert [e.type for e in mine] == ["message.claimed", "message.sent"]
        assert len({endpoint.lane_of(e.message_id) for e in mine}) == 1
    assert (await broker.webhooks.get(account, endpoint.id)).queued == 10


async def test_a_full_backlog_drops_new_events_and_counts_them(broker: Broker) -> None:
    small = with_settings(broker, webhook_backlog_max=3)
    account, (device,) = await self_managed(small)
    endpoint = await small.webhooks.create(account, URL, ["message.sent"])
    await queue_and_finish(small, account, device, 5)
    report = await fan_out_once(small)
    assert (report.queued, report.dropped) == (3, 2)
    stored = await small.webhooks.get(account, endpoint.id)
    assert (stored.queued, stored.dropped) == (3, 2)
    assert len(await lane_events(small, account.id, endpoint)) == 3


async def test_stream_entries_stay_until_both_readers_acknowledged_them(broker: Broker, tmp_path) -> None:
    from broker.history import HistoryStore

    account, (device,) = await self_managed(broker)
    stream = broker.shard(keys.account_shard(account.id)).events
    store = HistoryStore(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    await store.start()
    try:
        snapshotter = Snapshotter(broker, store)  # its leases, which the dispatcher shares
        # No endpoint anywhere: the snapshotter alone decides, and deletes what it stored.
        await queue_and_finish(broker, account, device, 2)
        assert await snapshotter.run_once() is not None
        assert await broker.redis.xlen(stream) == 0
        # With an endpoint, the dispatcher's group exists: stored entries wait for it.
        await broker.webhooks.create(account, URL)
        await queue_and_finish(broker, account, device, 2)
        assert await snapshotter.run_once() is not None
        assert await broker.redis.xlen(stream) == 6
        await fan_out_once(broker, snapshotter.leases)
        assert await broker.redis.xlen(stream) == 0
        # And the other way round: fanned out first, the snapshotter still gets them.
        await queue_and_finish(broker, account, device, 1)
        await fan_out_once(broker, snapshotter.leases)
        assert await broker.redis.xlen(stream) == 3
        report = await snapshotter.run_once()
        assert report is not None and report.events == 3 and await broker.redis.xlen(stream) == 0
    finally:
        await store.close()


async def test_entries_the_dispatcher_read_first_still_reach_history(broker: Broker, tmp_path) -> None:
    from broker.history import HistoryStore

    account, (device,) = await self_managed(broker)
    stream = broker.shard(keys.account_shard(account.id)).events
    await broker.webhooks.create(account, URL)
    ids = await queue_and_finish(broker, account, device, 3)
    await fan_out_once(broker)  # before the snapshotter ever read this stream (its leases given up after)
    assert await broker.redis.xlen(stream) == 9
    store = HistoryStore(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    await store.start()
    try:
        report = await Snapshotter(broker, store).run_once()
        assert report is not None and report.events == 9 and report.stored == 3
        assert await broker.redis.xlen(stream) == 0
        assert sorted(r.id for _, r in await store.message_rows()) == sorted(ids)
    finally:
        await store.close()


async def test_pool_routed_messages_reach_their_senders_endpoints(broker: Broker) -> None:
    from tests.support.fleet import pair

    sender = await broker.accounts.create("api@example.com", "api_only")
    endpoint = await broker.webhooks.create(sender, URL, ["message.queued", "message.sent"])
    pool_phone = await pair(broker, None, "pool phone")
    ids = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, f"p{i}") for i in range(3)])).ids
    assert sorted(m.id for m in await broker.messages.claim(pool_phone.ref, limit=10)) == sorted(ids)
    for message_id in ids:
        await broker.messages.report_status(pool_phone.ref, message_id, "sent")
    await fan_out_once(broker)
    queued = await lane_events(broker, sender.id, endpoint)
    assert sorted((e.message_id, e.type) for e in queued) == sorted(
        (i, t) for i in ids for t in ("message.queued", "message.sent")
    )
    assert all(e.device == pool_phone.device_id for e in queued if e.type == "message.sent")


# Stopping lanes ------------------------------------------------------------------------


class LosesACancel:
    """Stands in for the redis client, forwarding everything to ``real``, except that
    once :meth:`arm`-ed the next call of the script ``name`` waits (up to 10 s) for a
    cancel and loses it: the script then runs and returns its reply as if nothing had
    happened. Python 3.11's ``asyncio.wait_for``, which redis-py wraps around a command's
    socket I/O, does this when a reply and a cancel arrive together; here it is made
    certain instead of a race."""

    def __init__(self, real: Any, sha: str) -> None:
        self.real = real
        self.sha = sha
        self.armed = False
        self.waiting = asyncio.Event()
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def arm(self) -> None:
        self.armed = True

    async def evalsha(self, sha: str, *args: Any) -> Any:
        if sha == self.sha and self.armed:
            self.armed = False
            self.waiting.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.lost += 1
        return await self.real.evalsha(sha, *args)


@pytest.mark.parametrize("status", [500, 204], ids=["failing receiver", "answering receiver"])
async def test_a_lane_whose_cancel_a_redis_call_lost_stops_at_once(real_broker: Broker, status: int) -> None:
    """Stopping the lanes (the shard lost, or shutting down) ends each at once even when the
    cancel reached it inside a Redis call that lost it: after a failed POST (the
    lane would wait for the next try) or a delivered one (it would POST the next event,
    though another process may hold the lanes by now)."""
    receiver = Receiver(status=status)
    redis = LosesACancel(real_broker.redis, real_broker.scripts.scripts["webhook-lane"].sha)
    settings = roomy_settings(webhook_allow_loopback_http=True)
    lenient = Broker(redis, settings, real_broker.scripts, clock=real_broker.clock)  # type: ignore[arg-type]
    dispatcher = WebhookDispatcher(lenient)
    try:
        account, (device,) = await self_managed(lenient)
        endpoint = await lenient.webhooks.create(account, receiver.url, ["message.claimed", "message.sent"])
        await queue_and_finish(lenient, account, device, 1)  # two events, in one lane
        await dispatcher.leases.beat()
        redis.arm()
        assert (await dispatcher.fan_out()).queued == 2
        await asyncio.wait_for(redis.waiting.wait(), 10)  # the lane's first POST is answered
        lanes = list(dispatcher.lanes.values())
        assert len(lanes) == 1
        started = time.monotonic()
        await dispatcher.stop_lanes()
        assert time.monotonic() - started < 1, "stop_lanes waited for a lane that went on"
        assert redis.lost == 1 and all(lane.done() for lane in lanes)
        await asyncio.sleep(0.2)
        assert len(receiver.received) == 1, "a stopped lane went on delivering"
        left = await lane_events(lenient, account.id, endpoint)
        assert [e.type for e in left] == (["message.claimed", "message.sent"] if status == 500 else ["message.sent"])
    finally:
        await dispatcher.stop()
        receiver.close()
