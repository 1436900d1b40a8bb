"""Stateful property test: random interleavings of enqueue, claim, report, cancel,
heartbeat, time passing and sweep, on every backend, with the whole Redis state read back
and checked after every step.

Cast: two self-managed accounts with two phones each, two API-only accounts, two platform
pool phones; small budgets, quotas and lease bound (LIMITS) so that every limit is hit.
The machine keeps a model of what it knows independently of Redis: each message's sender,
target phone and the phone a claim handed it to, every claim's result, each phone's
heartbeats, each account's accepted messages per day. After each step it checks:

- the outcome of the call where the contract determines it, errors included; for claim
  and sweep, exactly which messages move, computed from the state before the call;
- that nothing else changed: every record equals the old one with the expected changes,
  each status change is an allowed move, appends one timeline entry and one event;
- the key map: each message in exactly the sets its status calls for (queue or pool and
  expiry while queued, leased once under its holder and lease-checks while claimed,
  nothing after), counters equal a recount, pool fairness state, send index, quota hash,
  last-seen, each phone's day budget, send window and its running sum; a sender's new
  pool messages wait behind at most one round of any other sender's;
- limits: segments handed to a phone in any 60 s and per UTC day, messages accepted per
  account per day, leases per message, the poll rate of each phone and the send rate of
  each sender (GCRA, modelled here; a refused call changes nothing); a phone is only handed its own queue, its shard's
  pool while online, and redeliveries of what it holds;
- liveness: past every TTL and lease, one sweep leaves nothing queued or claimed.

Hypothesis and pytest fixtures do not mix, so each example builds its own event loop,
client and broker; the real servers and the Redis Cluster come from the session fixtures
and are flushed first.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from broker import Broker, errors
from broker.records import STATUSES, Account, DeviceRef, OutgoingMessage, StatusChange, SweepReport
from tests.support.backends import CLUSTER, roomy_settings
from tests.support.cluster import RedisClusterProcess

DAY_MS = 86_400_000
MINUTE_MS = 60_000
START_MS = 1_800_000_000_000 // DAY_MS * DAY_MS + DAY_MS  # a UTC midnight
TO = "+15551234567"
UNKNOWN_ID = "01JZZZZZZZZZZZZZZZZZZZZZZZ"
TEXTS = {1: "a" * 10, 2: "b" * 200, 3: "c" * 400, 6: "d" * 800, 9: "e" * 1300}  # GSM-7, by segments

# Small enough that budgets, quotas, rate limits and the lease bound are all reached in
# a short run. Polls: one a minute with a burst of 2; sends: one a second with a burst of
# 10, between the API-only quota (8) and the self-managed one (15).
LIMITS = roomy_settings(
    device_segments_per_minute=5,
    device_segments_per_day=8,
    quota_api_only=8,
    quota_self_managed=15,
    max_leases=2,
    tasks_per_minute=1,
    tasks_burst=2,
    sends_per_second=1,
    sends_burst=10,
)
POLL_INTERVAL_MS = 60_000 // LIMITS.tasks_per_minute
SEND_INTERVAL_MS = 1000 // LIMITS.sends_per_second
LEASE_MS = LIMITS.lease_seconds * 1000
PRESENCE_MS = LIMITS.presence_ttl_seconds * 1000
TTL_MS = LIMITS.message_ttl_seconds * 1000
DRAIN = "past TTL + lease, then sweep"

ALLOWED_MOVES = {
    ("queued", "claimed"),
    ("queued", "expired"),
    ("queued", "cancelled"),
    ("claimed", "sent"),
    ("claimed", "delivered"),
    ("claimed", "failed"),
    ("claimed", "queued"),
    ("sent", "delivered"),
    ("sent", "failed"),
}
REPORT_MOVES = {
    ("claimed", "sent"),
    ("claimed", "delivered"),
    ("claimed", "failed"),
    ("sent", "delivered"),
    ("sent", "failed"),
}
UNHELD = ("queued", "cancelled", "expired")  # statuses of a message no device holds or held


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _zset(raw: list[tuple[Any, float]]) -> list[tuple[str, float]]:
    return [(_text(member), score) for member, score in raw]


class Clock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Device:
    index: int
    id: str
    shard: str
    account: int | None  # index of the owning sender; None for a platform pool phone

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(self.shard, self.id)


@dataclass
class Sender:
    index: int
    account: Account
    devices: list[int]

    @property
    def shard(self) -> str:
        return self.account.shard

    @property
    def self_managed(self) -> bool:
        return self.account.account_type == "self_managed"


@dataclass
class Message:
    """What the model knows of a message, independently of Redis."""

    id: str
    sender: int
    shard: str
    route: str
    target: int | None  # the device a device-targeted message is for
    to: str
    body: str
    segments: int
    created: int
    expires: int
    holder: int | None = None  # the device the last claim handed it to, until it is returned
    returned: bool = False  # put back at the front of its pool and not claimed since


class Send(NamedTuple):
    """One call to enqueue, as drawn."""

    sender: int
    batch: list[tuple[str, int]]  # (where: "pool" | "first" | "second" phone, segments)
    misroute: int | None  # index of a message sent to another account's phone instead
    foreign: int
    key: str | None  # idempotency key
    retry: bool  # send a request made before under its key again


SENDS = st.builds(
    Send,
    sender=st.integers(0, 3),
    batch=st.lists(
        st.tuples(st.sampled_from(["pool", "first", "second"]), st.sampled_from([1, 1, 2, 3, 6, 9])),
        min_size=1,
        max_size=4,
    ),
    misroute=st.sampled_from([None] * 6 + [0, 1, 3]),
    foreign=st.integers(0, 5),
    key=st.sampled_from([None, None, None, "k1", "k2"]),
    retry=st.sampled_from([False] * 5 + [True]),
)


@dataclass
class RedisState:
    """Everything the scripts keep, per shard, read in one pipeline."""

    records: dict[str, dict[str, dict[str, Any]]]
    counters: dict[str, dict[str, int]]
    queue: dict[str, list[str]]
    pool: dict[str, list[tuple[str, float]]]
    pool_state: dict[str, dict[str, str]]
    expiry: dict[str, dict[str, float]]
    leased: dict[str, list[str]]
    lease_checks: dict[str, dict[str, float]]
    quota: dict[str, dict[str, str]]
    events: dict[str, int]
    last_seen: dict[str, dict[str, float]]
    sent: dict[int, list[str]]
    devices: dict[int, dict[str, str]]
    windows: dict[int, list[tuple[str, float]]]

    def record(self, shard: str, message_id: str) -> dict[str, Any] | None:
        return self.records[shard].get(message_id)


class BrokerMachine(RuleBasedStateMachine):
    def __init__(self, server_url: str | None, cluster: RedisClusterProcess | None = None) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.server_url = server_url
        self.cluster = cluster
        self.redis = self.run(self._connect())
        self.clock = Clock()
        self.broker = Broker(self.redis, LIMITS, clock=self.clock)
        self.senders: list[Sender] = []
        self.devices: list[Device] = []
        self.msgs: dict[str, Message] = {}
        self.history: dict[int, list[tuple[int, int, str]]] = {}  # device -> first deliveries
        self.charges: dict[int, list[tuple[str, int, int]]] = {}  # device -> (last id, segments, time) per claim
        self.last_seen: dict[int, int] = {}
        self.accepted: Counter[tuple[int, int]] = Counter()  # (sender, day) -> messages
        self.idempotent: dict[tuple[int, str], tuple[list[OutgoingMessage], list[str]]] = {}
        self.event_count: Counter[str] = Counter()
        self.shards: list[str] = []
        self.state: RedisState | None = None
        self.last_enqueue_ms = 0
        # limiter -> (theoretical arrival time, real time it was written, its TTL in ms)
        self.limiters: dict[tuple[str, int], tuple[int, float, int]] = {}

    async def _connect(self) -> Any:
        if self.cluster is not None:
            self.cluster.flush()
            return self.cluster.client()
        if self.server_url is None:
            return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        client = aioredis.from_url(self.server_url)
        await client.flushall()
        return client

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, coro: Any) -> Any:
        """Run one broker call; a domain error is returned, not raised."""
        try:
            return self.run(coro)
        except errors.BrokerError as exc:
            return exc

    @property
    def now(self) -> int:
        return self.clock.now_ms

    def _rate(self, limiter: tuple[str, int], interval: int, burst: int, cost: int) -> tuple[bool, int, bool]:
        """The GCRA decision the scripts must take: (allowed, new arrival time, whether
        Redis may have expired the limiter already). Redis expires a limiter key in real
        time while the test's clock is its own, so a limiter written longer ago than its
        TTL (in real time) may be gone: a full bucket, which the caller then accepts."""
        stored, written, ttl = self.limiters.get(limiter, (0, 0.0, 0))
        now = self.now
        maybe_gone = stored > now and time.monotonic() - written >= ttl / 1000 - 0.05
        tat = max(stored, now)
        new = tat + cost * interval
        refused = now < new - interval * burst and not (cost > burst and tat == now)
        return not refused, new, maybe_gone

    def _rate_spent(self, limiter: tuple[str, int], interval: int, cost: int, new: int, gone: bool) -> None:
        """Record an allowed request; ``gone``: Redis had expired the limiter (full bucket)."""
        if gone:
            new = self.now + cost * interval
        if new > self.now:
            self.limiters[limiter] = (new, time.monotonic(), new - self.now)

    # Setup ----------------------------------------------------------------------------

    @initialize(minutes_to_midnight=st.sampled_from([1, 3, 30, 600]), backlog=st.lists(SENDS, max_size=4))
    def setup(self, minutes_to_midnight: int, backlog: list[Send]) -> None:
        """Two self-managed accounts with two phones each, two API-only accounts, two
        platform pool phones; every phone starts online. The clock starts shortly
        before a UTC midnight, so daily budgets and quotas roll over mid-run. A backlog
        is sent first (an example whose enqueue rule is switched off still has work)."""
        self.clock.now_ms = START_MS - minutes_to_midnight * MINUTE_MS
        b = self.broker
        self.run(b.start())
        for index, kind in enumerate(["self_managed", "self_managed", "api_only", "api_only"]):
            account = self.run(b.accounts.create(f"sender{index}@example.com", kind))  # type: ignore[arg-type]
            self.senders.append(Sender(index, account, []))
        owners: list[int | None] = [0, 0, 1, 1, None, None]
        for index, owner in enumerate(owners):
            account = None if owner is None else self.senders[owner].account
            code = self.run(b.devices.create_pairing_code(account))
            registered = self.run(b.devices.register(code.code, f"phone {index}"))
            assert registered.account_id == ("" if account is None else account.id)
            self.devices.append(Device(index, registered.device_id, registered.shard, owner))
            if owner is not None:
                self.senders[owner].devices.append(index)
            self.history[index] = []
            self.charges[index] = []
        assert self.devices[4].shard == self.devices[5].shard == "p:default"
        self.shards = [self.senders[0].shard, self.senders[1].shard, "p:default"]
        for device in self.devices:
            assert self.run(b.presence.heartbeat(device.ref)) == self.now
            self.last_seen[device.index] = self.now
        self.state = self.run(self._read())
        self._check_state(self.state)
        for send in backlog:
            self.enqueue(send)

    # Reading and checking ---------------------------------------------------------------

    async def _read(self) -> RedisState:
        pipe = self.redis.pipeline(transaction=False)
        for tag in self.shards:
            k = self.broker.shard(tag)
            pipe.hgetall(k.messages)
            pipe.hgetall(k.counters)
            pipe.zrange(k.queue, 0, -1)
            pipe.zrange(k.pool, 0, -1, withscores=True)
            pipe.hgetall(k.pool_state)
            pipe.zrange(k.expiry, 0, -1, withscores=True)
            pipe.zrange(k.leased, 0, -1)
            pipe.zrange(k.lease_checks, 0, -1, withscores=True)
            pipe.hgetall(k.quota)
            pipe.xlen(k.events)
            pipe.zrange(k.last_seen, 0, -1, withscores=True)
        for sender in self.senders:
            pipe.zrange(self.broker.shard(sender.shard).sent(sender.account.id), 0, -1)
        for device in self.devices:
            k = self.broker.shard(device.shard)
            pipe.hgetall(k.device(device.id))
            pipe.zrange(k.device_window(device.id), 0, -1, withscores=True)
        replies = iter(await pipe.execute())
        state = RedisState({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})
        for tag in self.shards:
            state.records[tag] = {_text(k): json.loads(v) for k, v in next(replies).items()}
            state.counters[tag] = {k: int(v) for k, v in _hash(next(replies)).items()}
            state.queue[tag] = [_text(m) for m in next(replies)]
            state.pool[tag] = _zset(next(replies))
            state.pool_state[tag] = _hash(next(replies))
            state.expiry[tag] = dict(_zset(next(replies)))
            state.leased[tag] = [_text(m) for m in next(replies)]
            state.lease_checks[tag] = dict(_zset(next(replies)))
            state.quota[tag] = _hash(next(replies))
            state.events[tag] = int(next(replies))
            state.last_seen[tag] = dict(_zset(next(replies)))
        for sender in self.senders:
            state.sent[sender.index] = [_text(m) for m in next(replies)]
        for device in self.devices:
            state.devices[device.index] = _hash(next(replies))
            state.windows[device.index] = _zset(next(replies))
        return state

    def _online(self, device: int) -> bool:
        seen = self.last_seen.get(device)
        return seen is not None and seen + PRESENCE_MS > self.now

    def _budget_used(self, device: int) -> tuple[int, int]:
        """Segments handed to a device (first deliveries) in the last 60 s and today."""
        now, today = self.now, self.now // DAY_MS
        minute = sum(s for t, s, _ in self.history[device] if t > now - MINUTE_MS)
        day = sum(s for t, s, _ in self.history[device] if t // DAY_MS == today)
        return minute, day

    def _after(self, expect: dict[str, dict[str, Any]], created: tuple[str, ...] | list[str] = ()) -> RedisState:
        """Read the new state; every record must equal the old one with ``expect``
        applied (new ones only from ``created``); each status change is one event."""
        old = self.state
        assert old is not None
        new = self.run(self._read())
        seen_expected = set()
        for tag in self.shards:
            before, after = old.records[tag], new.records[tag]
            assert before.keys() <= after.keys(), f"records vanished: {before.keys() - after.keys()}"
            changed = []
            for mid, record in after.items():
                if mid not in before:
                    assert mid in created, f"unexpected new message {mid}: {record}"
                    changed.append(mid)
                    continue
                want = dict(before[mid])
                if mid in expect:
                    want.update(expect[mid])
                    seen_expected.add(mid)
                if want["status"] != before[mid]["status"]:
                    # Each status change appends [status, at, device, error] to the timeline.
                    want["timeline"] = [
                        *before[mid]["timeline"],
                        [want["status"], self.now, want["device"], want["error"] if want["status"] == "failed" else ""],
                    ]
                assert record == want, f"{mid} is\n  {record}\nexpected\n  {want}"
                if record["status"] != before[mid]["status"]:
                    move = (before[mid]["status"], record["status"])
                    assert move in ALLOWED_MOVES, f"{mid}: {move} is no allowed move"
                    assert move != ("claimed", "queued") or record["route"] == "pool"
                    changed.append(mid)
            self.event_count[tag] += len(changed)
            assert new.events[tag] == self.event_count[tag], (
                f"{tag}: {new.events[tag]} events, expected {self.event_count[tag]}"
            )
            if changed:
                key = self.broker.shard(tag).events
                entries = self.run(self.redis.xrevrange(key, count=len(changed)))
                got = sorted(
                    (f["id"], f["status"], f["device"], f["at"], f["error"], f["account"])
                    for f in (_hash(fields) for _, fields in entries)
                )
                want_events = sorted(
                    (
                        mid,
                        after[mid]["status"],
                        after[mid]["device"],
                        str(self.now),
                        after[mid]["error"],
                        after[mid]["account"],
                    )
                    for mid in changed
                )
                assert got == want_events
        assert seen_expected == set(expect), f"expected changes to unknown messages: {set(expect) - seen_expected}"
        self.state = new
        self._check_state(new)
        return new

    def _check_state(self, s: RedisState) -> None:
        now, today = self.now, self.now // DAY_MS
        for tag in self.shards:
            recs = s.records[tag]
            senders = [x for x in self.senders if x.shard == tag]
            pool_devices = (
                {self.devices[i].id for x in senders for i in x.devices}
                if tag != "p:default"
                else {d.id for d in self.devices if d.account is None}
            )

            queue: dict[str, str] = {}
            for member in s.queue[tag]:
                device, _, mid = member.partition(":")
                assert mid not in queue, f"{mid} queued twice"
                queue[mid] = device
            pool = {mid: score for mid, score in s.pool[tag]}
            assert len(pool) == len(s.pool[tag])
            leased: dict[str, tuple[str, int]] = {}
            for member in s.leased[tag]:
                device, lease_until, mid = member.split(":")
                assert mid not in leased, f"{mid} is leased twice: {leased[mid]} and {member}"
                leased[mid] = (device, int(lease_until))
            stray = (
                queue.keys() | pool.keys() | s.expiry[tag].keys() | leased.keys() | s.lease_checks[tag].keys()
            ) - recs.keys()
            assert not stray, f"{tag}: set members without a record: {stray}"

            recount: Counter[str] = Counter()
            for mid, r in recs.items():
                m = self.msgs.get(mid)
                assert m is not None and m.shard == tag, f"{mid} was never enqueued into {tag}"
                assert r["id"] == mid and r["account"] == self.senders[m.sender].account.id
                assert (r["to"], r["body"], r["segments"], r["route"], r["created"], r["expires"]) == (
                    m.to,
                    m.body,
                    m.segments,
                    m.route,
                    m.created,
                    m.expires,
                )
                status = r["status"]
                assert status in STATUSES
                assert 0 <= r["leases"] <= LIMITS.max_leases, f"{mid} has {r['leases']} leases"
                if m.route == "device":
                    assert r["device"] == self.devices[m.target].id, f"{mid} moved off its device"
                elif status in UNHELD:
                    assert r["device"] == ""
                else:
                    assert r["device"] in pool_devices
                # The device a record names once claimed is the one a claim handed it to.
                if status in UNHELD:
                    assert m.holder is None, f"{mid} is {status} but device {m.holder} holds it"
                else:
                    assert m.holder is not None and r["device"] == self.devices[m.holder].id
                if status == "failed":
                    assert r["error"]
                if status == "queued":
                    if m.route == "device":
                        assert queue.get(mid) == r["device"] and mid not in pool
                    else:
                        assert mid in pool and mid not in queue
                    assert s.expiry[tag].get(mid) == r["expires"]
                else:
                    assert mid not in queue and mid not in pool and mid not in s.expiry[tag]
                if status == "claimed":
                    assert leased.get(mid) == (r["device"], r["lease_until"])
                    assert r["leases"] >= 1
                    check = s.lease_checks[tag].get(mid)
                    assert check is not None
                    assert check <= max(r["lease_until"], r["expires"], now + PRESENCE_MS)
                else:
                    assert mid not in leased and mid not in s.lease_checks[tag]
                recount[f"a:{r['account']}:{status}"] += 1
                recount[f"a:{r['account']}:total"] += 1
                if r["device"]:
                    recount[f"d:{r['device']}:{status}"] += 1
            counters = {k: v for k, v in s.counters[tag].items() if v != 0}
            assert counters == +recount, f"{tag}: counters {counters} != recount {dict(recount)}"

            # Pool fairness state: per-sender count and finish tag, scores never behind v.
            state = s.pool_state[tag]
            v = float(state.get("v", 0))
            per_sender = Counter(recs[mid]["account"] for mid in pool)
            known = {"v"}
            for x in senders:
                n = int(state.get(f"n:{x.account.id}", 0))
                assert n == per_sender[x.account.id], f"{tag}: n:{x.account.id} is {n}"
                assert (f"f:{x.account.id}" in state) == (n > 0)
                known |= {f"n:{x.account.id}", f"f:{x.account.id}"}
            assert state.keys() <= known, f"{tag}: stray pool state {state.keys() - known}"
            for mid, score in pool.items():
                assert v <= score <= float(state[f"f:{recs[mid]['account']}"])

            for x in senders:
                assert sorted(s.sent[x.index]) == sorted(mid for mid, r in recs.items() if r["account"] == x.account.id)
                accepted = self.accepted[(x.index, today)]
                assert accepted <= x.account.daily_quota
                quota = s.quota[tag]
                if accepted:
                    assert (quota.get(f"{x.account.id}:day"), quota.get(f"{x.account.id}:used")) == (
                        str(today),
                        str(accepted),
                    )
                else:
                    assert quota.get(f"{x.account.id}:day") != str(today)

            assert s.events[tag] == self.event_count[tag]
            assert s.last_seen[tag] == {
                self.devices[i].id: float(t) for i, t in self.last_seen.items() if self.devices[i].shard == tag
            }

        for device in self.devices:
            d = device.index
            hash_ = s.devices[d]
            assert (hash_["per_minute"], hash_["per_day"]) == (
                str(LIMITS.device_segments_per_minute),
                str(LIMITS.device_segments_per_day),
            )
            _, day_used = self._budget_used(d)
            if day_used:
                assert (hash_.get("day"), hash_.get("day_used")) == (str(today), str(day_used))
            else:
                assert hash_.get("day") != str(today)
            # The window: one "<now>:<last id>:<segments>" entry per charging claim, kept
            # at least 60 s, and their running sum in the device hash.
            charges = set(self.charges[d])
            window = set()
            for member, t in s.windows[d]:
                at, last_id, segments = member.split(":")
                assert int(at) == int(t), f"device {d}: window entry {member} scored {t}"
                window.add((last_id, int(segments), int(t)))
            assert len(window) == len(s.windows[d])
            assert window <= charges, f"device {d}: window entries of no claim: {window - charges}"
            recent = {e for e in charges if e[2] > now - MINUTE_MS}
            assert recent <= window, f"device {d}: recent claims missing from its window: {recent - window}"
            assert int(hash_.get("window_used", 0)) == sum(e[1] for e in window), (
                f"device {d}: window_used {hash_.get('window_used')} != window {window}"
            )
        self._check_budgets()

    def _check_budgets(self) -> None:
        """Segments handed out (first deliveries) per device in any 60 s and per UTC day,
        and messages accepted per account per UTC day, never exceed their limits; a
        single message longer than a whole budget may go out alone."""
        per_minute, per_day = LIMITS.device_segments_per_minute, LIMITS.device_segments_per_day
        for d, history in self.history.items():
            for t, _, _ in history:
                window = [s for u, s, _ in history if t - MINUTE_MS < u <= t]
                assert sum(window) <= per_minute or len(window) == 1, (
                    f"device {d} was handed {window} segments in the 60 s up to {t}"
                )
            days: dict[int, list[int]] = {}
            for t, s, _ in history:
                days.setdefault(t // DAY_MS, []).append(s)
            for day, segments in days.items():
                assert sum(segments) <= per_day or len(segments) == 1, (
                    f"device {d} was handed {segments} segments on day {day}"
                )
        for (sender, _), count in self.accepted.items():
            assert count <= self.senders[sender].account.daily_quota

    # Enqueue --------------------------------------------------------------------------

    @rule(send=SENDS)
    def enqueue(self, send: Send) -> None:
        """A single message or a small batch: to the sender's own phones, its own pool or
        (API-only) the platform pool; ``misroute`` names another account's phone. With
        ``retry``, a request made before under an idempotency key is sent again."""
        sender, batch, misroute, foreign, key, retry = send
        if retry and self.idempotent:
            (sender, key), (request, _) = list(self.idempotent.items())[sender % len(self.idempotent)]
            self._enqueue(self.senders[sender], request, key)
            return
        x = self.senders[sender]
        request: list[OutgoingMessage] = []
        for index, (where, segments) in enumerate(batch):
            device_id = None
            if index == misroute:
                others = [d for d in self.devices if d.index not in x.devices]
                device_id = others[foreign % len(others)].id
            elif x.self_managed and where != "pool":
                device_id = self.devices[x.devices[0 if where == "first" else 1]].id
            request.append(OutgoingMessage(TO, TEXTS[segments], device_id))
        self._enqueue(x, request, key)

    def _enqueue(self, x: Sender, request: list[OutgoingMessage], key: str | None) -> None:
        # Ids are ordered to the millisecond only (and within a batch): one enqueue per
        # millisecond keeps every queue's order, and so each example, reproducible.
        if self.now <= self.last_enqueue_ms:
            self.clock.now_ms = self.last_enqueue_ms + 1
        self.last_enqueue_ms = self.now
        now, today = self.now, self.now // DAY_MS
        own = {self.devices[i].id for i in x.devices}
        canonical = [(m.to, m.message, m.device_id or "") for m in request]
        used = self.accepted[(x.index, today)]
        stored = self.idempotent.get((x.index, key)) if key else None
        limiter = ("sends", x.index)
        allowed, new_tat, gone = self._rate(limiter, SEND_INTERVAL_MS, LIMITS.sends_burst, len(request))

        result = self.call(self.broker.messages.enqueue(x.account, request, idempotency_key=key))

        if not x.self_managed and any(m.device_id for m in request):
            assert isinstance(result, errors.RoutingError), result
            outcome = "routing error"
        elif stored is not None:
            if canonical == [(m.to, m.message, m.device_id or "") for m in stored[0]]:
                assert not isinstance(result, Exception), result
                assert result.duplicate and result.ids == stored[1] and result.shard == x.shard
                outcome = "duplicate"
            else:
                assert isinstance(result, errors.IdempotencyKeyReused), result
                outcome = "idempotency key reused"
        elif any(m.device_id and m.device_id not in own for m in request):
            assert isinstance(result, errors.DeviceNotFound), result
            assert result.index == next(i for i, m in enumerate(request) if m.device_id and m.device_id not in own)
            outcome = "device not found"
        elif isinstance(result, errors.RateLimited):
            assert not allowed, f"refused a send the rate allows: {result.decision}"
            d = result.decision
            assert d.limit == LIMITS.sends_burst and d.retry_after_ms > 0, d
            assert (
                d.retry_after_ms == new_tat - LIMITS.sends_burst * SEND_INTERVAL_MS - now
                if len(request) <= LIMITS.sends_burst
                else d.retry_after_ms == d.reset_ms
            ), d
            outcome = "rate limited" + (" (a batch above the burst)" if len(request) > LIMITS.sends_burst else "")
        elif not allowed and not gone:
            raise AssertionError(f"a send the rate refuses went through: {result!r}")
        elif used + len(request) > x.account.daily_quota:
            assert isinstance(result, errors.QuotaExceeded), result
            assert (result.used, result.quota) == (used, x.account.daily_quota)
            outcome = "quota exceeded"
        else:
            assert not isinstance(result, Exception), result
            assert not result.duplicate and result.shard == x.shard
            assert len(result.ids) == len(request) == len(set(result.ids))
            assert not set(result.ids) & self.msgs.keys()
            outcome = "queued"
        event(f"enqueue: {outcome}")
        if outcome != "queued":
            self._after({})
            return
        self._rate_spent(limiter, SEND_INTERVAL_MS, len(request), new_tat, gone and not allowed)

        # Only the pool messages of a sender with none queued in that pool are checked for
        # fairness below: its j-th one may wait behind at most j + 1 of any other sender's
        # (the round in progress and its own), besides what the sweep put back in front.
        had_pooled = any(self.msgs[mid].sender == x.index for mid, _ in self.state.pool[x.shard])
        for mid, m in zip(result.ids, request, strict=True):
            target = None if m.device_id is None else next(i for i in x.devices if self.devices[i].id == m.device_id)
            self.msgs[mid] = Message(
                mid,
                x.index,
                x.shard,
                "pool" if target is None else "device",
                target,
                m.to,
                m.message,
                len_segments(m.message),
                now,
                now + TTL_MS,
            )
        self.accepted[(x.index, today)] += len(request)
        if key:
            self.idempotent[(x.index, key)] = (request, result.ids)
        new = self._after({}, created=result.ids)
        for mid, m in zip(result.ids, request, strict=True):
            r = new.record(x.shard, mid)
            assert r is not None
            assert (r["status"], r["device"], r["leases"], r["lease_until"], r["updated"], r["error"]) == (
                "queued",
                m.device_id or "",
                0,
                0,
                now,
                "",
            )
            assert r["timeline"] == [["queued", now, m.device_id or "", ""]]
        if not had_pooled:
            self._check_fair_arrival(
                x, [mid for mid, m in zip(result.ids, request, strict=True) if m.device_id is None]
            )

    def _check_fair_arrival(self, x: Sender, arrived: list[str]) -> None:
        order = [mid for mid, _ in self.state.pool[x.shard]]
        for j, mid in enumerate(arrived, start=1):
            ahead = Counter(self.msgs[other].sender for other in order[: order.index(mid)])
            for other, count in ahead.items():
                if other == x.index:
                    continue
                front = sum(1 for o in order if self.msgs[o].sender == other and self.msgs[o].returned)
                assert count <= j + 1 + front, (
                    f"sender {x.index}'s message {j} waits behind {count} of sender {other}'s"
                )

    # Claim ----------------------------------------------------------------------------

    @precondition(lambda self: any(self._has_work(d) for d in self.devices))
    @rule(
        device=st.integers(0, 5),
        limit=st.integers(1, 4),
        beat_first=st.sampled_from([True, True, False]),
        busy=st.sampled_from([True, True, False]),
        wait_for=st.sampled_from([None, None, "minute", "lease", "lease", "presence", "midnight"]),
        early=st.booleans(),
    )
    def claim(self, device: int, limit: int, beat_first: bool, busy: bool, wait_for: str | None, early: bool) -> None:
        """A phone polls: optionally a heartbeat, then a claim. With ``busy`` the phone is
        one that has something to claim, if any has. With ``wait_for`` the clock first
        moves to exactly (or, ``early``, 1 ms short of) one of the phone's edges: 60 s
        after one of its charged claims, the end of a lease it holds, the end of its
        presence (no heartbeat then), the next UTC midnight.

        The exact result is computed from the state before the call: first the device's
        own expired leases (redelivered, or failed past the lease bound or TTL), then its
        queue in order, then its pool when online, stopping at the first message the
        budget does not allow."""
        edges = self._edges(wait_for, device, early) if wait_for else []
        if edges:
            self.clock.now_ms, device = edges[device % len(edges)]
            beat_first = beat_first and wait_for != "presence"
        elif busy:
            waiting = [d.index for d in self.devices if self._has_work(d)]
            if waiting:
                device = waiting[device % len(waiting)]
        if beat_first:
            self._heartbeat(device)
        self._claim(device, limit)

    def _claim(self, device: int, limit: int) -> None:
        dev = self.devices[device]
        now, s = self.now, self.state
        recs = s.records[dev.shard]
        expect: dict[str, dict[str, Any]] = {}
        handed: list[str] = []
        first: list[str] = []

        mine = [member.split(":") for member in s.leased[dev.shard] if member.startswith(dev.id + ":")]
        for _, _lease_until, mid in [m for m in mine if int(m[1]) <= now][:limit]:
            r = recs[mid]
            if r["leases"] >= LIMITS.max_leases or now >= r["expires"]:
                expect[mid] = {"status": "failed", "error": "device_lost", "updated": now}
                event(
                    "claim: lost after the last lease"
                    if r["leases"] >= LIMITS.max_leases
                    else "claim: lost past its TTL"
                )
            else:
                expect[mid] = {"leases": r["leases"] + 1, "lease_until": now + LEASE_MS}
                handed.append(mid)
        redelivered = list(handed)

        minute, day = self._budget_used(device)
        per_minute, per_day = LIMITS.device_segments_per_minute, LIMITS.device_segments_per_day

        def take(mid: str) -> bool:
            nonlocal minute, day
            r = recs[mid]
            if now >= r["expires"]:  # past its TTL: expired on the spot, never handed out
                expect[mid] = {"status": "expired", "updated": now}
                event("claim: a queued message past its TTL expires instead")
                return True
            seg = r["segments"]
            fits = (minute + seg <= per_minute or (minute == 0 and seg > per_minute)) and (
                day + seg <= per_day or (day == 0 and seg > per_day)
            )
            if fits:
                minute += seg
                day += seg
                expect[mid] = {
                    "status": "claimed",
                    "device": dev.id,
                    "updated": now,
                    "leases": r["leases"] + 1,
                    "lease_until": now + LEASE_MS,
                }
                handed.append(mid)
                first.append(mid)
            return fits

        budget_full = pool_stopped = False
        if len(handed) < limit:
            queued = [m.partition(":")[2] for m in s.queue[dev.shard] if m.partition(":")[0] == dev.id]
            for mid in queued[: limit - len(handed)]:
                if not take(mid):
                    budget_full = True
                    break
        # A claim that passes the poll limit is presence itself: the pool is open to it.
        pool_open = not budget_full and len(handed) < limit
        if pool_open:
            for mid, _ in s.pool[dev.shard][: limit - len(handed)]:
                if not take(mid):
                    pool_stopped = True
                    break

        limiter = ("tasks", device)
        allowed, new_tat, gone = self._rate(limiter, POLL_INTERVAL_MS, LIMITS.tasks_burst, 1)
        got = self.call(self.broker.messages.claim(dev.ref, limit))
        if isinstance(got, errors.RateLimited):
            assert not allowed, f"refused a poll the rate allows: {got.decision}"
            assert got.decision.retry_after_ms == new_tat - LIMITS.tasks_burst * POLL_INTERVAL_MS - now
            event("claim: rate limited")
            self._after({})
            return
        assert allowed or gone, f"a poll the rate refuses went through: {got!r}"
        assert not isinstance(got, Exception), got
        if not got:  # only a poll that hands over nothing is charged
            self._rate_spent(limiter, POLL_INTERVAL_MS, 1, new_tat, gone and not allowed)
        self.last_seen[device] = now
        assert [c.id for c in got] == handed, f"claim handed {[c.id for c in got]}, expected {handed}"

        # Independently of the computation above: who may be given what.
        for c in got:
            m, r = self.msgs[c.id], recs[c.id]
            assert (c.to, c.message, c.segments) == (r["to"], r["body"], r["segments"])
            assert m.shard == dev.shard
            if m.route == "device":
                assert m.target == device, f"{c.id} is for device {m.target}, given to {device}"
            if c.id in redelivered:
                assert r["status"] == "claimed" and m.holder == device and r["lease_until"] <= now
            else:
                assert r["status"] == "queued" and m.holder is None
                assert m.route == "device" or self._online(device)  # online: it claimed
        for mid in handed:
            self.msgs[mid].holder = device
            self.msgs[mid].returned = False
        for mid in first:
            self.history[device].append((now, recs[mid]["segments"], mid))
        assert all(recs[mid]["expires"] > now for mid in first), "a message past its TTL was handed out"
        if any(recs[mid]["segments"] > LIMITS.device_segments_per_minute for mid in first):
            event("claim: a message longer than a whole budget")
        if first:
            self.charges[device].append((first[-1], sum(recs[mid]["segments"] for mid in first), now))
        event(
            f"claim: {len(redelivered)} redelivered, {len(first)} new, "
            f"{sum(1 for e in expect.values() if e.get('status') == 'failed')} lost"
        )
        if budget_full or pool_stopped:
            event("claim: stopped by the send budget")
        elif not handed:
            event(
                "claim: nothing "
                + (
                    "waiting"
                    if not self._has_work(dev)
                    else "in reach (offline for the pool)"
                    if not pool_open
                    else "left (leases lost)"
                )
            )
        self._after(expect)

    # Reports and cancels --------------------------------------------------------------

    @precondition(lambda self: bool(self.msgs))
    @rule(
        device=st.integers(0, 5),
        pick=st.integers(0, 1000),
        status=st.sampled_from(["sent", "delivered", "failed"]),
        by_holder=st.booleans(),
        error=st.sampled_from(["", "RESULT_ERROR_NO_SERVICE"]),
        unknown=st.sampled_from([False] * 7 + [True]),
    )
    def report_status(self, device: int, pick: int, status: str, by_holder: bool, error: str, unknown: bool) -> None:
        """Of any message ever queued (``pick`` among them) or, ``unknown``, of an id never
        issued; by the device that holds it, or by any phone (which must not find it
        unless it holds it)."""
        message = UNKNOWN_ID if unknown else list(self.msgs)[pick % len(self.msgs)]
        self._report(device, message, status, by_holder, error)

    def _report(self, device: int, message: str, status: str, by_holder: bool, error: str) -> None:
        m = self.msgs.get(message)
        if by_holder and m is not None and m.holder is not None:
            device = m.holder
        dev = self.devices[device]
        r = self.state.record(dev.shard, message)

        result = self.call(self.broker.messages.report_status(dev.ref, message, status, error))

        expect: dict[str, dict[str, Any]] = {}
        if m is None or m.shard != dev.shard or m.holder != device:
            if m is not None and m.shard == dev.shard and m.target == device:
                # A device-targeted message its phone was never given (still queued, or
                # cancelled or expired): the script finds it, because the record names
                # the target phone, and refuses the move rather than "not found".
                assert r is not None and r["status"] in UNHELD
                assert isinstance(result, errors.InvalidTransition), result
                assert (result.current, result.requested) == (r["status"], status)
                outcome = "target phone, never given it"
            else:
                assert isinstance(result, errors.MessageNotFound), result
                outcome = "not found"
        else:
            assert r is not None
            if r["status"] == status:
                assert result == StatusChange(message, status, False), result
                self.last_seen[device] = self.now  # a report is presence
                outcome = "repeat"
            elif (r["status"], status) in REPORT_MOVES:
                assert result == StatusChange(message, status, True), result
                self.last_seen[device] = self.now
                expect[message] = {
                    "status": status,
                    "updated": self.now,
                    "error": (error or "unknown") if status == "failed" else r["error"],
                }
                outcome = f"{r['status']} -> {status}"
            else:
                assert isinstance(result, errors.InvalidTransition), result
                assert (result.current, result.requested) == (r["status"], status)
                outcome = "invalid transition"
        event(f"report: {outcome}")
        self._after(expect)

    @precondition(lambda self: any(m.holder is not None for m in self.msgs.values()))
    @rule(
        pick=st.integers(0, 50),
        status=st.sampled_from(["sent", "delivered", "failed"]),
        error=st.sampled_from(["", "RESULT_ERROR_NO_SERVICE"]),
    )
    def report_by_last_holder(self, pick: int, status: str, error: str) -> None:
        """What a phone does most: report on a message a claim gave it."""
        held = [mid for mid, m in self.msgs.items() if m.holder is not None]
        self._report(0, held[pick % len(held)], status, True, error)

    @precondition(lambda self: bool(self.msgs))
    @rule(
        sender=st.integers(0, 3),
        pick=st.integers(0, 1000),
        by_owner=st.sampled_from([True, True, False]),
        unknown=st.sampled_from([False] * 7 + [True]),
    )
    def cancel(self, sender: int, pick: int, by_owner: bool, unknown: bool) -> None:
        """Of any message ever queued, in any status, or of an id never issued; by its
        sender, or by another account (which must not find it)."""
        message = UNKNOWN_ID if unknown else list(self.msgs)[pick % len(self.msgs)]
        m = self.msgs.get(message)
        if by_owner and m is not None:
            sender = m.sender
        x = self.senders[sender]
        result = self.call(self.broker.messages.cancel(x.account, message))
        expect: dict[str, dict[str, Any]] = {}
        if m is None or m.sender != sender:
            assert isinstance(result, errors.MessageNotFound), result
            outcome = "not found"
        else:
            r = self.state.record(m.shard, message)
            assert r is not None
            if r["status"] == "cancelled":
                assert result == StatusChange(message, "cancelled", False), result
                outcome = "repeat"
            elif r["status"] == "queued":
                assert result == StatusChange(message, "cancelled", True), result
                expect[message] = {"status": "cancelled", "updated": self.now}
                self.msgs[message].returned = False
                outcome = "cancelled"
            else:
                assert isinstance(result, errors.InvalidTransition), result
                assert (result.current, result.requested) == (r["status"], "cancelled")
                outcome = f"refused ({r['status']})"
        event(f"cancel: {outcome}")
        self._after(expect)

    # Presence, time and the sweep ----------------------------------------------------

    def _has_work(self, dev: Device) -> bool:
        s = self.state
        return (
            any(m.startswith(dev.id + ":") for m in s.queue[dev.shard])
            or any(m.startswith(dev.id + ":") and int(m.split(":")[1]) <= self.now for m in s.leased[dev.shard])
            or bool(s.pool[dev.shard])
        )

    @rule(device=st.integers(0, 5), battery=st.integers(0, 100), app_version=st.sampled_from(["1.0", "1.1"]))
    def heartbeat(self, device: int, battery: int, app_version: str) -> None:
        self._heartbeat(device, battery, app_version)

    def _heartbeat(self, device: int, battery: int = 80, app_version: str = "1.0") -> None:
        dev = self.devices[device]
        assert self.run(self.broker.presence.heartbeat(dev.ref, battery=battery, app_version=app_version)) == self.now
        self.last_seen[device] = self.now
        self._after({})

    @rule(
        ms=st.sampled_from(
            [
                0,
                1_000,
                5_000,
                30_000,
                44_999,
                45_000,
                59_999,
                60_000,
                61_000,
                119_999,
                120_000,
                121_000,
                3_600_000,
                DAY_MS + 1,
                DRAIN,
            ]
        ),
        sweep=st.booleans(),
    )
    def time_passes(self, ms: int | str, sweep: bool) -> None:
        """Nothing, seconds, the presence TTL, a minute, the lease (each also 1 ms short),
        an hour, a day, each followed or not by a sweep; or far past every TTL and lease
        and a sweep, after which nothing may be left queued or claimed."""
        if ms == DRAIN:
            self._drain()
            return
        self.clock.now_ms += int(ms)
        if sweep:
            self._sweep()

    def _edges(self, edge: str, pick: int, early: bool) -> list[tuple[int, int]]:
        """The due boundaries of one kind, as (time, the device concerned), soonest first."""
        s = self.state
        edges: list[tuple[int, int]] = []
        if edge == "minute":
            edges = [
                (t + MINUTE_MS, d)
                for d, charges in self.charges.items()
                for _, _, t in charges
                if self._has_work(self.devices[d])
            ]
        elif edge == "presence":
            edges = [(t + PRESENCE_MS, d) for d, t in self.last_seen.items() if s.pool[self.devices[d].shard]]
        elif edge in ("lease", "ttl"):
            for recs in s.records.values():
                for mid, r in recs.items():
                    m = self.msgs[mid]
                    device = m.holder if m.holder is not None else m.target
                    if edge == "lease" and r["status"] == "claimed":
                        edges.append((r["lease_until"], device))
                    elif edge == "ttl" and r["status"] in ("queued", "claimed"):
                        edges.append((r["expires"], pick % len(self.devices) if device is None else device))
        else:
            edges = [((self.now // DAY_MS + 1) * DAY_MS, pick % len(self.devices))]
        return sorted({(t - early, d) for t, d in edges if t - early > self.now})

    @rule(
        edge=st.sampled_from(["lease", "ttl", "presence", "minute", "midnight"]),
        pick=st.integers(0, 20),
        early=st.booleans(),
        then=st.sampled_from(["sweep", "sweep", "claim", "nothing"]),
    )
    def time_to_an_edge(self, edge: str, pick: int, early: bool, then: str) -> None:
        """Move the clock to exactly (or 1 ms short of) a boundary that is due: a lease
        or a TTL ending, a phone's presence running out, 60 s after one of a phone's
        charged claims, a UTC midnight; then the sweep runs, or that phone claims, or
        nothing."""
        due = self._edges(edge, pick, early)
        if not due:
            return
        self.clock.now_ms, device = due[pick % len(due)]
        if then == "claim":
            self._claim(device, 4)
        elif then == "sweep":
            self._sweep()

    def _drain(self) -> None:
        self.clock.now_ms += TTL_MS + LEASE_MS + 1_000
        self._sweep()
        for tag in self.shards:
            left = {
                mid: r["status"] for mid, r in self.state.records[tag].items() if r["status"] in ("queued", "claimed")
            }
            assert not left, f"still moving after TTL + lease and a sweep: {left}"

    def _sweep(self) -> None:
        """The exact work is computed from the state before: queued messages past their
        TTL expire; claimed ones whose lease ran out fail past the lease bound or TTL, go
        back to the front of the pool when their (pool) phone is offline, and are looked
        at again later otherwise."""
        now, s = self.now, self.state
        expect: dict[str, dict[str, Any]] = {}
        rechecks: dict[str, dict[str, float]] = {}
        returned: dict[str, float] = {}
        expired = lost = 0
        for tag in self.shards:
            recs = s.records[tag]
            rechecks[tag] = {}
            for mid, deadline in s.expiry[tag].items():
                if deadline <= now:
                    expect[mid] = {"status": "expired", "updated": now}
                    expired += 1
            v = float(s.pool_state[tag].get("v", 0))
            for mid, when in s.lease_checks[tag].items():
                if when > now:
                    continue
                r, m = recs[mid], self.msgs[mid]
                if r["lease_until"] > now:
                    rechecks[tag][mid] = r["lease_until"]
                elif r["leases"] >= LIMITS.max_leases or now >= r["expires"]:
                    expect[mid] = {"status": "failed", "error": "device_lost", "updated": now}
                    lost += 1
                    event(
                        "sweep: lost after the last lease"
                        if r["leases"] >= LIMITS.max_leases
                        else "sweep: lost past its TTL"
                    )
                elif r["route"] == "pool" and not self._online(m.holder):
                    expect[mid] = {"status": "queued", "device": "", "updated": now}
                    returned[mid] = v
                elif r["route"] == "pool":
                    rechecks[tag][mid] = now + PRESENCE_MS
                else:
                    rechecks[tag][mid] = r["expires"]

        report = self.run(self.broker.sweeper.sweep_all())
        assert report == SweepReport(expired, lost, len(returned), False), report
        for mid in returned:
            self.msgs[mid].holder = None
            self.msgs[mid].returned = True
        event(f"sweep: {'expired ' if expired else ''}{'lost ' if lost else ''}{'returned' if returned else ''}")
        new = self._after(expect)

        for tag in self.shards:
            for mid, when in rechecks[tag].items():
                assert new.lease_checks[tag][mid] == when, (mid, new.lease_checks[tag][mid], when)
            pool = dict(new.pool[tag])
            for mid, score in returned.items():
                if self.msgs[mid].shard == tag:
                    assert pool[mid] == score, f"{mid} went back to the pool at {pool[mid]}, not the front ({score})"
            for mid, r in new.records[tag].items():
                if r["status"] == "queued":
                    assert r["expires"] > now, f"{mid} is still queued past its TTL after a sweep"
                if r["status"] == "claimed":
                    assert not (r["leases"] >= LIMITS.max_leases and r["lease_until"] <= now), (
                        f"{mid} is still claimed after its last lease ran out and a sweep"
                    )
                    assert not (r["route"] == "device" and r["lease_until"] <= now and now >= r["expires"]), (
                        f"{mid} is still claimed on its phone past its lease and TTL after a sweep"
                    )

    def teardown(self) -> None:
        try:
            # The closing liveness check, only when the run itself went through.
            if self.state is not None and sys.exc_info()[1] is None:
                self._drain()
        finally:
            try:
                self.run(self.redis.aclose())
            finally:
                self.loop.close()


def len_segments(text: str) -> int:
    return next(count for count, t in TEXTS.items() if t == text)


FAKEREDIS_RUNS = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
REAL_REDIS_RUNS = settings(FAKEREDIS_RUNS, max_examples=150, stateful_step_count=50)
# On the cluster each example costs nearly twice a single Redis's (a client finding the
# cluster, every primary flushed): a third of the examples, enough for what the cluster
# adds (each step's calls and the whole state read back through slots and nodes), where
# the interleavings themselves are explored on every other backend.
CLUSTER_RUNS = settings(REAL_REDIS_RUNS, max_examples=50)


def test_random_interleavings_keep_every_invariant(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == CLUSTER:
        cluster = request.getfixturevalue("redis_cluster")
        run_state_machine_as_test(lambda: BrokerMachine(None, cluster), settings=CLUSTER_RUNS)
        return
    url = None if backend == "fakeredis" else request.getfixturevalue("real_servers")[backend].url
    run_state_machine_as_test(lambda: BrokerMachine(url), settings=FAKEREDIS_RUNS if url is None else REAL_REDIS_RUNS)
