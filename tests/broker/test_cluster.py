"""Redis Cluster readiness: each script call stays inside one hash slot, and the broker runs
unchanged on a real Redis Cluster of three primaries.

1. The slot test wraps the client given to a Broker in :class:`RecordingRedis`, a test
   double of the redis client that forwards everything to the real client and records the
   keys of each ``EVALSHA``. It drives every broker operation (on fakeredis and every real
   ``redis-server``, and the cluster) and checks that every recorded call's keys share one hash tag and one
   slot (``redis.crc.key_slot``), and that every script in ``lua/`` ran at least once.
2. The cluster tests take the session's Redis Cluster (``tests/support/cluster.py``: three
   primaries with a replica each, of the newest real Redis) and run the same flow through
   ``redis.asyncio.cluster.RedisCluster``, with accounts on all three primaries and every
   script loaded on each. A cross-slot EVAL/EVALSHA must fail with CROSSSLOT there: this
   shows that the cluster really checks slots, so the flow passing there means something.

A missing binary (redis-cli beside a redis-server) is a failure, never a skip.
"""

from __future__ import annotations

import bisect
import io
import socket
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from broker import Broker, Settings, errors, keys
from broker.campaigns import CampaignRequest
from broker.records import Account, OutgoingMessage, PresenceReport, RegisteredDevice, SendWindow, SweepReport
from broker.redis_client import text
from broker.scripts import ScriptRegistry
from broker.webhooks.dispatcher import LaneLost, WebhookDispatcher
from broker.webhooks.endpoints import Attempt
from broker.webhooks.events import QueuedEvent
from tests.support.cluster import RedisClusterProcess

TO = "+15551234567"

# How ``redis-cli --cluster create`` splits the slots over three primaries.
THIRDS = [5461, 10923]  # [0, 5460], [5461, 10922], [10923, 16383]


# The recording proxy ------------------------------------------------------------------


class RecordingRedis:
    """Stands in for the redis client: forwards every attribute to ``real`` and records the
    script name and keys of each ``evalsha`` (and ``eval``, which the broker must not use)."""

    def __init__(self, real: Any, scripts: ScriptRegistry) -> None:
        self.real = real
        self.names = {script.sha: script.name for script in scripts.scripts.values()}
        self.calls: list[tuple[str, list[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _record(self, name: str, numkeys: int, keys_and_args: Sequence[Any]) -> None:
        self.calls.append((name, [_text(k) for k in keys_and_args[: int(numkeys)]]))

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self._record(self.names.get(sha, f"unknown script {sha}"), numkeys, keys_and_args)
        return await self.real.evalsha(sha, numkeys, *keys_and_args)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        """The real pipeline, its ``evalsha`` recorded too (the shard leases and the
        webhook fan-out call scripts in pipelines)."""
        pipe = self.real.pipeline(*args, **kwargs)
        queue = pipe.evalsha

        def evalsha(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
            self._record(self.names.get(sha, f"unknown script {sha}"), numkeys, keys_and_args)
            return queue(sha, numkeys, *keys_and_args)

        pipe.evalsha = evalsha
        return pipe

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        self._record("EVAL (not a registered script)", numkeys, keys_and_args)
        return await self.real.eval(script, numkeys, *keys_and_args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_tag(key: str) -> str | None:
    """The hash tag Redis Cluster hashes for ``key``, or None when the whole key is hashed."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


def slot(key: str) -> int:
    return key_slot(key.encode())


def assert_one_slot_per_call(calls: Sequence[tuple[str, Sequence[str]]]) -> None:
    assert calls, "no script call was recorded"
    for name, call_keys in calls:
        slots = {slot(k) for k in call_keys}
        assert len(slots) == 1, f"{name} spans slots {sorted(slots)}: {list(call_keys)}"
        tags = {hash_tag(k) for k in call_keys}
        assert len(tags) == 1 and None not in tags, f"{name} keys do not share one hash tag: {list(call_keys)}"


def assert_every_script_ran(calls: Sequence[tuple[str, Sequence[str]]], scripts: ScriptRegistry) -> None:
    ran = {name for name, _ in calls}
    missing = set(scripts.scripts) - ran
    assert not missing, f"the flow never ran {sorted(missing)}: drive them in run_every_operation"
    assert ran == set(scripts.scripts), f"calls to something other than a registered script: {ran}"


def test_the_slot_check_catches_a_cross_slot_call() -> None:
    """The checker itself can fail: two shards' keys in one call are refused."""
    one, other = keys.ShardKeys(keys.account_shard("aaaa")), keys.ShardKeys(keys.account_shard("bbbb"))
    assert slot(one.messages) != slot(other.messages)
    assert_one_slot_per_call([("cancel", [one.messages, one.counters])])
    with pytest.raises(AssertionError, match="spans slots"):
        assert_one_slot_per_call([("cancel", [one.messages, other.counters])])
    with pytest.raises(AssertionError, match="one hash tag"):
        assert_one_slot_per_call([("rate-limit", ["no-tag-here"])])


# The flow: every broker operation, with its results checked ---------------------------


async def _register(broker: Broker, owner: Account | None, name: str, phone_number: str = "") -> RegisteredDevice:
    code = await broker.devices.create_pairing_code(owner)
    device = await broker.devices.register(code.code, name, phone_number)
    assert device.shard == (keys.pool_shard() if owner is None else owner.shard)
    assert device.account_id == ("" if owner is None else owner.id)
    assert await broker.devices.find_by_token(device.device_token) == device.ref
    with pytest.raises(errors.PairingCodeInvalid):  # one code pairs one phone
        await broker.devices.register(code.code, "again")
    return device


async def _status(broker: Broker, shard: str, message_id: str) -> str:
    return (await broker.message_log.get(shard, message_id)).status


async def run_every_operation(broker: Broker, clock: Any) -> list[Account]:
    """Drive every broker operation with exact expectations; returns the self-managed
    accounts used, one in each third of the slot space (one per node on the cluster)."""
    settings: Settings = broker.settings
    owners: dict[int, Account] = {}
    for i in range(500):
        account = await broker.accounts.create(f"owner{i}@example.com", "self_managed")
        owners.setdefault(bisect.bisect(THIRDS, slot(broker.shard(account.shard).messages)), account)
        if len(owners) == 3:
            break
    assert len(owners) == 3, "could not place an account in every third of the slot space"
    accounts = [owners[third] for third in range(3)]

    # Platform pool: a pool phone, an API-only sender.
    pool_phone = await _register(broker, None, "Pool phone")
    assert await broker.presence.heartbeat(pool_phone.ref) == clock.now_ms
    api = await broker.accounts.create("api@example.com", "api_only")

    per_account: dict[str, dict[str, Any]] = {}
    for account in accounts:
        a = await _register(broker, account, "Pixel A", "+15550001111")
        b = await _register(broker, account, "Pixel B")
        assert (
            await broker.presence.heartbeat(a.ref, battery=80, android_version="14", app_version="1.0") == clock.now_ms
        )
        assert (await broker.devices.get(a.ref))["battery"] == "80"
        await broker.presence.heartbeat(b.ref)

        single = await broker.messages.enqueue(account, [OutgoingMessage(TO, "single", a.device_id)])
        assert not single.duplicate and single.shard == account.shard == keys.account_shard(account.id)
        clock.advance(1)
        batch_messages = [
            OutgoingMessage(TO, "batch a", a.device_id),
            OutgoingMessage(TO, "batch b", b.device_id),
            OutgoingMessage(TO, "own pool 1"),
            OutgoingMessage(TO, "own pool 2"),
        ]
        batch = await broker.messages.enqueue(account, batch_messages, idempotency_key="batch")
        again = await broker.messages.enqueue(account, batch_messages, idempotency_key="batch")
        assert not batch.duplicate and len(batch.ids) == 4
        assert again.duplicate and again.ids == batch.ids
        clock.advance(1)
        doomed = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "cancel me")])).ids[0]
        change = await broker.messages.cancel(account, doomed)
        assert (change.id, change.status, change.changed) == (doomed, "cancelled", True)
        assert not (await broker.messages.cancel(account, doomed)).changed

        # A: its own queue first, then the account's own pool (it is online).
        claimed = await broker.messages.claim(a.ref)
        assert [m.id for m in claimed] == [single.ids[0], batch.ids[0], batch.ids[2], batch.ids[3]]
        assert [m.message for m in claimed] == ["single", "batch a", "own pool 1", "own pool 2"]
        assert [m.id for m in await broker.messages.claim(b.ref)] == [batch.ids[1]]
        # As after a claim answered store_not_replicated: its leases end (lease-end), and
        # the next claim hands the message again, its count of leases as it was.
        await broker.messages.end_leases(b.device_id, [(account.shard, batch.ids[1])])
        assert [m.id for m in await broker.messages.claim(b.ref)] == [batch.ids[1]]
        assert (await broker.message_log.get(account.shard, batch.ids[1])).leases == 1
        late = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "expire me", b.device_id)])).ids[0]

        assert (await broker.messages.report_status(a.ref, single.ids[0], "sent")).changed
        assert (await broker.messages.report_status(a.ref, single.ids[0], "delivered")).status == "delivered"
        assert not (await broker.messages.report_status(a.ref, single.ids[0], "delivered")).changed
        failed = await broker.messages.report_status(a.ref, batch.ids[0], "failed", "RESULT_ERROR_GENERIC_FAILURE")
        assert (failed.status, failed.changed) == ("failed", True)
        assert (await broker.message_log.get(account.shard, batch.ids[0])).error == "RESULT_ERROR_GENERIC_FAILURE"
        await broker.messages.report_status(a.ref, batch.ids[2], "sent")
        await broker.messages.report_status(b.ref, batch.ids[1], "delivered")
        with pytest.raises(errors.MessageNotFound):  # B does not hold A's message
            await broker.messages.report_status(b.ref, batch.ids[3], "sent")
        with pytest.raises(errors.InvalidTransition):
            await broker.messages.cancel(account, batch.ids[3])
        # batch.ids[3] stays claimed by A, which goes quiet.
        per_account[account.id] = {"a": a, "held": batch.ids[3], "late": late, "done": single.ids[0]}

    first = await broker.messages.enqueue(api, [OutgoingMessage(TO, "api 1")], idempotency_key="api-1")
    assert first.shard == keys.pool_shard() and not first.duplicate
    assert (
        await broker.messages.enqueue(api, [OutgoingMessage(TO, "api 1")], idempotency_key="api-1")
    ).ids == first.ids
    clock.advance(1)
    second = await broker.messages.enqueue(api, [OutgoingMessage(TO, "api 2"), OutgoingMessage(TO, "api 3")])
    assert (await broker.messages.cancel(api, second.ids[1])).changed
    await broker.presence.heartbeat(pool_phone.ref)
    assert [m.id for m in await broker.messages.claim(pool_phone.ref)] == [first.ids[0], second.ids[0]]
    await broker.messages.report_status(pool_phone.ref, first.ids[0], "delivered")
    # second.ids[0] stays claimed by the pool phone, which goes quiet too.

    # Leases run out while every phone is offline: pool messages go back to their pools.
    clock.advance(settings.lease_seconds * 1000 + 1)
    assert await broker.sweeper.sweep(keys.pool_shard()) == SweepReport(returned=1)
    assert await broker.sweeper.sweep_all() == SweepReport(returned=3)
    assert await _status(broker, keys.pool_shard(), second.ids[0]) == "queued"
    await broker.presence.heartbeat(pool_phone.ref)
    assert [m.id for m in await broker.messages.claim(pool_phone.ref)] == [second.ids[0]]
    await broker.messages.report_status(pool_phone.ref, second.ids[0], "sent")
    for account in accounts:
        mine = per_account[account.id]
        assert await _status(broker, account.shard, mine["held"]) == "queued"
        await broker.presence.heartbeat(mine["a"].ref)
        assert [m.id for m in await broker.messages.claim(mine["a"].ref)] == [mine["held"]]
        await broker.messages.report_status(mine["a"].ref, mine["held"], "sent")
        assert (await broker.message_log.get(account.shard, mine["held"])).leases == 2

    # A day later the message B never fetched has expired.
    clock.advance(settings.message_ttl_seconds * 1000)
    assert await broker.sweeper.sweep_all() == SweepReport(expired=3)
    for account in accounts:
        assert await _status(broker, account.shard, per_account[account.id]["late"]) == "expired"
        counts = await broker.message_log.account_counts(account)
        assert counts == {
            "scheduled": 0,
            "queued": 0,
            "claimed": 0,
            "sent": 2,
            "delivered": 2,
            "failed": 1,
            "expired": 1,
            "cancelled": 1,
            "received": 0,
            "total": 7,
        }
    counts = await broker.message_log.account_counts(api)
    assert (counts["delivered"], counts["sent"], counts["cancelled"], counts["total"]) == (1, 1, 1, 3)

    # Scheduled: waits, then is released into the pool when due, and can be cancelled.
    later = clock.now_ms + 5_000
    scheduled = (await broker.messages.enqueue(api, [OutgoingMessage(TO, "later", send_at=later)])).ids[0]
    assert await _status(broker, keys.pool_shard(), scheduled) == "scheduled"
    assert await broker.schedule.release_due() == (0, False)
    clock.advance(5_000)
    assert await broker.schedule.release_due() == (1, False)
    assert await _status(broker, keys.pool_shard(), scheduled) == "queued"
    assert await broker.redis.zcard(keys.SCHEDULED) == 0
    assert (await broker.messages.cancel(api, scheduled)).changed

    # The snapshotter's trim, by the holder of the shard's background lease (checked in
    # the same script, the lease being in the shard's slot): a finished message leaves
    # Redis only at the version stored (queued, claimed, sent, delivered: 4); counters stay.
    async def lease_of(shard: str) -> str:
        return f"trimmer|{await broker.locks.acquire(keys.shard_lease(shard), 'trimmer', 10_000)}"

    for account in accounts:
        done = per_account[account.id]["done"]
        counts = await broker.message_log.account_counts(account)
        lease = await lease_of(account.shard)
        with pytest.raises(errors.LockLost):
            await broker.message_log.trim(account.shard, account.id, clock.now_ms, [done, "4"], lease="other|1")
        assert await broker.message_log.trim(account.shard, account.id, clock.now_ms, [done, "3"], lease=lease) == 0
        assert await broker.message_log.trim(account.shard, account.id, clock.now_ms, [done, "4"], lease=lease) == 1
        with pytest.raises(errors.MessageNotFound):
            await broker.message_log.get(account.shard, done)
        assert await broker.message_log.account_counts(account) == counts
    pool_lease = await lease_of(keys.pool_shard())
    assert (
        await broker.message_log.trim(keys.pool_shard(), api.id, clock.now_ms, [first.ids[0], "3"], lease=pool_lease)
        == 1
    )

    for tag in (keys.pool_shard(), *(a.shard for a in accounts)):  # the trimmer is done with them
        await broker.redis.delete(keys.shard_lease(tag))

    # A shard's background lease, each step its own single-slot script.
    lock = keys.shard_lease(accounts[0].shard)
    token = await broker.locks.acquire(lock, "host-a", 1_000)
    assert token is not None and await broker.locks.acquire(lock, "host-b", 1_000) is None
    assert await broker.locks.renew(lock, "host-a", token, 1_000)
    assert await broker.locks.release(lock, "host-a", token)

    # Webhooks: the shard leases (the registry of background processes, then each
    # shard's lease in its own slot), the fan-out of a shard's stream into an account's
    # lane, and each change of the lane's first event, fenced by the account shard's token.
    hooks = Broker(
        broker.redis,
        msgspec.structs.replace(settings, webhook_allow_loopback_http=True),
        broker.scripts,
        clock=broker.clock,
    )
    hooked = accounts[0]
    b = await _register(broker, hooked, "Pixel C")
    await broker.presence.heartbeat(b.ref)
    endpoint = await hooks.webhooks.create(hooked, "http://127.0.0.1:9/hooks", ["message.sent"])
    clock.advance(1)
    [hook_mid] = (await broker.messages.enqueue(hooked, [OutgoingMessage(TO, "hooked", b.device_id)])).ids
    assert [m.id for m in await broker.messages.claim(b.ref)] == [hook_mid]
    await broker.messages.report_status(b.ref, hook_mid, "sent")
    dispatcher = WebhookDispatcher(hooks)
    try:
        await dispatcher.leases.beat()
        every = {text(tag) for tag in await broker.redis.smembers(keys.SHARDS)}
        assert set(dispatcher.leases.tokens()) == every and len(every) > 4  # alone, it holds them all
        assert (await dispatcher.fan_out()).queued == 1
    finally:
        await dispatcher.stop()  # its lanes, and its courier: the lane is driven by hand below
    lane = endpoint.lane_of(hook_mid)
    lane_key = broker.shard(hooked.shard).webhook_lane(endpoint.id, lane)
    [first] = await broker.redis.lrange(lane_key, 0, -1)
    token = dispatcher.leases.token(hooked.shard)
    assert token is not None
    event = msgspec.json.decode(first, type=QueuedEvent)
    attempt = Attempt(event=event, attempt=1, outcome="failed", status_code=500, latency_ms=1, error="", at_ms=1)
    with pytest.raises(LaneLost):  # a stale token is refused
        await dispatcher._lane_write(hooked.id, endpoint.id, lane, token - 1, "retry", first, attempt, "1|0")
    assert await dispatcher._lane_write(hooked.id, endpoint.id, lane, token, "retry", first, attempt, "1|0") == 1
    assert await dispatcher._lane_write(hooked.id, endpoint.id, lane, token, "delivered", first, attempt) == 1
    assert await broker.redis.llen(lane_key) == 0
    await dispatcher._disable(endpoint, token, attempt, clock.now_ms)
    assert not (await broker.webhooks.get(hooked, endpoint.id)).enabled
    # Devices' changes of presence, each shard's look fenced by its token too: the first
    # look starts the watch; Pixel C, silent for a TTL, goes offline, then comes back.
    await dispatcher.leases.beat()
    assert await broker.presence.watch_held(dispatcher.leases) == PresenceReport()
    clock.advance(settings.presence_ttl_seconds * 1000)
    assert await broker.presence.watch_held(dispatcher.leases) == PresenceReport(offline=1)
    await broker.presence.heartbeat(b.ref)
    assert await broker.presence.watch_held(dispatcher.leases) == PresenceReport(online=1)
    await dispatcher.leases.leave()
    assert await broker.redis.zcard(keys.BACKGROUND) == 0

    # Device settings and removal, in every shard.
    for account in accounts:
        a = per_account[account.id]["a"]
        await broker.devices.update(a.ref, name="Renamed", segments_per_minute=20, segments_per_day=500)
        assert (await broker.devices.get(a.ref))["per_minute"] == "20"
        await broker.send_windows.set(a.ref, SendWindow("08:00", "21:00", "Europe/Berlin"))
        assert (await broker.devices.info(a.ref)).send_window == SendWindow("08:00", "21:00", "Europe/Berlin")
        await broker.send_windows.set(a.ref, None)
        assert (await broker.devices.info(a.ref)).send_window is None
        waiting = (
            await broker.messages.enqueue(account, [OutgoingMessage(TO, "for a removed phone", a.device_id)])
        ).ids[0]
        assert await broker.devices.remove(a.ref) == SweepReport(lost=1)
        assert await _status(broker, account.shard, waiting) == "failed"
    await broker.devices.remove(pool_phone.ref)

    await run_split_pool(broker, clock)

    # A suppression list, checked by the enqueue script in the sender's own shard.
    for account in accounts:
        assert await broker.suppressions.add(account, TO, "replied STOP")
        with pytest.raises(errors.RecipientOptedOut):
            await broker.messages.enqueue(account, [OutgoingMessage(TO, "no")])
        await broker.suppressions.remove(account, TO)
        # An SMS its phone received: stored in the account's shard, its ref in the phone's.
        phone = await _register(broker, account, "Receiver")
        received = await broker.inbound.receive(phone.ref, TO, "STOP", clock.now_ms, "ref-1")
        assert received.new and received.suppression == "added" and received.account == account.id
        assert not (await broker.inbound.receive(phone.ref, TO, "STOP", clock.now_ms, "ref-1")).new
        # The inbox's threads, read from the account's shard; one whose message is gone
        # (past the history's retention: there is no store here, so deleted by hand) goes.
        clock.advance(1)
        stray = await broker.inbound.receive(phone.ref, "+15550002222", "wrong number", clock.now_ms, "ref-2")
        threads = broker.message_log.conversations
        assert [m.id for m in (await threads(account)).items] == [stray.id, received.id]
        await broker.redis.hdel(broker.shard(account.shard).messages, stray.id)
        assert [m.id for m in (await threads(account)).items] == [received.id]

    # A campaign in each account's shard: stored, started, queued by the job, cancelled.
    for account in accounts:
        upload = io.BytesIO(b"phone,name\n+15550003333,Ann\n+15550004444,Bo\n")
        campaign = await broker.campaigns.create(account, CampaignRequest(name="c", template="Hi {name}"), upload)
        await broker.campaigns.start(account, campaign.id)
        assert not await broker.campaigns.work(account.shard)
        assert (await broker.campaigns.get(account, campaign.id)).counts.queued == 2
        await broker.campaigns.cancel(account, campaign.id)
        assert not await broker.campaigns.work(account.shard)
        assert (await broker.campaigns.get(account, campaign.id)).counts.cancelled == 2

    # Rate limits: one per client address (its own slot), one inside an account's shard.
    for limiter in (keys.client_rate("login", "127.0.0.1"), broker.shard(accounts[0].shard).send_rate(accounts[0].id)):
        assert (await broker.limits.rate_limit(limiter, rate=1, period_ms=60_000, burst=2)).remaining == 1
        assert (await broker.limits.rate_limit(limiter, rate=1, period_ms=60_000, burst=2)).remaining == 0
        with pytest.raises(errors.RateLimited):
            await broker.limits.rate_limit(limiter, rate=1, period_ms=60_000, burst=2)
    return accounts


async def run_split_pool(broker: Broker, clock: Any) -> None:
    """The platform pool split into three shards (one per node on the cluster): senders
    homed in different shards, one pool phone whose claim takes from each, charges its
    home shard's budget once, and reports each message in the shard holding it."""
    split = Broker(broker.redis, msgspec.structs.replace(broker.settings, pool_shards=3), broker.scripts, clock=clock)
    await split.start()
    tags = split.pool_shards.configured
    assert tags == (keys.pool_shard(), keys.pool_shard(index=1), keys.pool_shard(index=2))
    assert len({slot("{" + tag + "}") for tag in tags}) == 3
    senders: dict[str, Account] = {}
    for i in range(200):
        sender = await split.accounts.create(f"split{i}@example.com", "api_only")
        senders.setdefault(sender.shard, sender)
        if len(senders) == 3:
            break
    assert set(senders) == set(tags), "could not home a sender in every pool shard"
    assert (await split.accounts.get(senders[tags[2]].id)).shard == tags[2]  # the home is kept
    phone = await _register(split, None, "Split pool phone")
    assert phone.shard in tags
    await split.presence.heartbeat(phone.ref)
    sent = {tag: (await split.messages.enqueue(senders[tag], [OutgoingMessage(TO, tag)])).ids[0] for tag in tags}
    claimed = await split.messages.claim(phone.ref)
    assert sorted(m.id for m in claimed) == sorted(sent.values())
    device = await split.devices.get(phone.ref)
    assert (device["window_used"], device["day_used"]) == ("3", "3")  # charged once, in its home shard
    for tag, message_id in sent.items():
        assert (await split.messages.report_status(phone.ref, message_id, "sent")).changed
        assert await _status(split, tag, message_id) == "sent"
    (info,) = [d for d in await split.devices.list_for(None) if d.device_id == phone.device_id]
    assert info.counts["sent"] == 3
    # Leases that run out: a shard the phone's claims still visit keeps its message for
    # it (as its home shard does while it heartbeats); one it stopped visiting returns it.
    held = {tag: (await split.messages.enqueue(senders[tag], [OutgoingMessage(TO, "held")])).ids[0] for tag in tags}
    clock.advance(60_001)
    await split.presence.heartbeat(phone.ref)
    assert len(await split.messages.claim(phone.ref)) == 3
    lease_ms = split.settings.lease_seconds * 1000
    clock.advance(lease_ms - 10_000)
    assert await split.messages.claim(phone.ref) == []  # a visit to every shard
    await split.presence.heartbeat(phone.ref)
    clock.advance(10_001)
    for tag in tags:
        assert await split.sweeper.sweep(tag) == SweepReport()
    clock.advance(split.settings.presence_ttl_seconds * 1000)
    await split.presence.heartbeat(phone.ref)
    for tag in tags:
        assert await split.sweeper.sweep(tag) == SweepReport(returned=0 if tag == phone.shard else 1)
    again = await split.messages.claim(phone.ref)
    assert sorted(m.id for m in again) == sorted(held.values())
    # Held messages of every shard go back to their pools when the phone is removed.
    assert await split.devices.remove(phone.ref) == SweepReport(returned=3)
    for tag, message_id in held.items():
        assert await _status(split, tag, message_id) == "queued"


async def test_every_script_call_stays_in_one_slot(redis_client, settings, scripts, clock) -> None:
    recorder = RecordingRedis(redis_client, scripts)
    broker = Broker(recorder, settings, scripts, clock=clock)
    await broker.start()
    await run_every_operation(broker, clock)
    assert_one_slot_per_call(recorder.calls)
    assert_every_script_ran(recorder.calls, scripts)


# A real Redis Cluster -----------------------------------------------------------------


def _raw_reply(port: int, *args: str) -> bytes:
    """Send one command over a bare socket and return the first line of the reply, so the
    server's own error text is seen (redis-py strips the CROSSSLOT code)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


async def test_the_broker_runs_unchanged_on_a_redis_cluster(
    redis_cluster: RedisClusterProcess, settings, scripts, clock
) -> None:
    redis_cluster.flush()
    cluster = redis_cluster.client()
    try:
        await cluster.initialize()
        primaries = cluster.get_primaries()
        assert len(primaries) == 3
        assert len(cluster.get_replicas()) == 3, "the client does not see a replica of each primary"
        recorder = RecordingRedis(cluster, scripts)
        broker = Broker(recorder, settings, scripts, clock=clock)
        await broker.start()
        for node in primaries:  # SCRIPT LOAD reached every primary, not just one
            loaded = await cluster.execute_command(
                "SCRIPT EXISTS", *(s.sha for s in scripts.scripts.values()), target_nodes=node
            )
            assert all(loaded), f"scripts missing on {node.name}"

        accounts = await run_every_operation(broker, clock)

        assert_one_slot_per_call(recorder.calls)
        assert_every_script_ran(recorder.calls, scripts)
        account_nodes = {cluster.get_node_from_key(broker.shard(a.shard).messages).name for a in accounts}
        assert account_nodes == {node.name for node in primaries}, "accounts did not land on every node"
        script_nodes = {cluster.get_node_from_key(call_keys[0]).name for _, call_keys in recorder.calls}
        assert script_nodes == {node.name for node in primaries}, "scripts did not run on every node"
        for node in primaries:
            assert await cluster.execute_command("DBSIZE", target_nodes=node) > 0
    finally:
        await cluster.aclose()


async def test_the_cluster_refuses_cross_slot_script_calls(redis_cluster: RedisClusterProcess, scripts) -> None:
    """Keys of two shards in one script call are refused with CROSSSLOT, on every node."""
    one = keys.ShardKeys(keys.account_shard("one"))
    other = keys.ShardKeys(keys.account_shard("other"))
    assert slot(one.messages) != slot(other.messages)
    heartbeat = scripts.scripts["heartbeat"]
    same = [one.device("d"), one.device_presence("d"), one.last_seen]
    crossed = [one.device("d"), one.device_presence("d"), other.last_seen]
    args = ["d", "1800000000000", "45000", "", "", ""]

    cluster = redis_cluster.client()
    try:
        await scripts.load(cluster)
        # Control: the same call within one slot reaches the script, which finds no device.
        with pytest.raises(errors.DeviceNotFound):
            await scripts.call(cluster, "heartbeat", same, args)
        # redis-py's cluster client refuses before sending...
        with pytest.raises(RedisClusterException, match="same key slot"):
            await cluster.evalsha(heartbeat.sha, 3, *crossed, *args)
        # ...and each node refuses when the call is sent to it anyway.
        for node in cluster.get_primaries():
            for command in (["EVALSHA", heartbeat.sha], ["EVAL", "return 1"]):
                call_keys = crossed if command[0] == "EVALSHA" else [one.messages, other.messages]
                call_args = args if command[0] == "EVALSHA" else []
                with pytest.raises(ClusterCrossSlotError):
                    await cluster.execute_command(*command, len(call_keys), *call_keys, *call_args, target_nodes=node)
                reply = _raw_reply(node.port, *command, str(len(call_keys)), *call_keys, *call_args)
                assert reply.startswith(b"-CROSSSLOT"), reply
    finally:
        await cluster.aclose()
