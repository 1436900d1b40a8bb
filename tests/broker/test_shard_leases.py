"""Background work shared out by shard (``broker/leases.py``), on fakeredis, every real
Redis and the Redis Cluster: one process holds every shard; two and three processes
split them fairly (none holds more than its share, every shard is held, by one); a new
process picks shards up; a dead one's shards move to the others within the lease; a
holder whose lease lapsed has its trim and its webhook lane writes refused by its stale
token; the webhook work of a shard is done by its holder, across processes; stopping
gives the shards up at once; and a host keeping history in a local SQLite file never
works beside another host.

Each "process" here is a :class:`ShardLeases` of its own (its own holder name) on the
one Redis, beating by hand. The registry of live processes goes by the broker's clock,
which the tests move by hand; the leases themselves expire in Redis, in real time.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import msgspec
import pytest

from broker import Broker, errors, keys
from broker.history import HistoryStore
from broker.jobs import start_jobs, stop_jobs
from broker.leases import LOCAL, SHARED, Host, Member, ShardLeases, history_conflict, this_host
from broker.records import Account, OutgoingMessage
from broker.redis_client import text
from broker.webhooks.dispatcher import LaneLost, WebhookDispatcher
from broker.webhooks.endpoints import Attempt
from broker.webhooks.events import QueuedEvent
from tests.support.backends import roomy_settings
from tests.support.fleet import TO, pair, self_managed
from tests.support.webhook_receiver import Receiver

HOST = Host("host-one", "one:/srv/connecfy-data")
OTHER_HOST = Host("host-two", "two:/srv/connecfy-data")
MAX_ROUNDS = 10  # beats of every process before a split must have settled


def process(
    broker: Broker, name: str, *, lease_ms: int = 10_000, host: Host = HOST, local: bool = False
) -> ShardLeases:
    return ShardLeases(broker.ctx, holder=name, host=host, local_store=local, lease_ms=lease_ms, beat_ms=100)


async def shards_of(broker: Broker, accounts: int) -> set[str]:
    """Make ``accounts`` accounts: with the platform pool, ``accounts + 1`` shards."""
    for i in range(accounts):
        await broker.accounts.create(f"owner{i}@example.com", "self_managed")
    found = {text(tag) for tag in await broker.redis.smembers(keys.SHARDS)}
    assert len(found) == accounts + 1
    return found


async def holders(broker: Broker, shards: set[str]) -> dict[str, str | None]:
    """Each shard's holder, as its lease key in Redis says."""
    found = {}
    for shard in sorted(shards):
        value = await broker.redis.get(keys.shard_lease(shard))
        found[shard] = text(value).partition("|")[0] if value is not None else None
    return found


def split_is_fair(processes: list[ShardLeases], shards: set[str]) -> bool:
    """Each holds no more than its share, every shard held, once (as of the last beats;
    ``tokens()`` would also ask whether the lease has time left by the process's clock,
    which a loaded machine running these beats one after the other may eat up)."""
    share = math.ceil(len(shards) / len(processes))
    held = [set(p.held) for p in processes]
    every = [s for h in held for s in h]
    return sorted(every) == sorted(shards) and all(0 < len(h) <= share for h in held)


async def settle(processes: list[ShardLeases], shards: set[str]) -> int:
    """Beat every process, round after round, until the split is fair: the rounds it took."""
    for rounds in range(1, MAX_ROUNDS + 1):
        for p in processes:
            await p.beat()
        if split_is_fair(processes, shards):
            return rounds
    raise AssertionError(f"no fair split after {MAX_ROUNDS} rounds: {[sorted(p.held) for p in processes]}")


async def test_one_process_holds_every_shard(broker: Broker) -> None:
    shards = await shards_of(broker, 5)
    alone = process(broker, "alone")
    await alone.beat()
    assert set(alone.tokens()) == shards and alone.live == 1
    tokens = alone.tokens()
    await alone.beat()
    assert alone.tokens() == tokens  # renewed: the same tokens
    assert set((await holders(broker, shards)).values()) == {"alone"}
    assert 9_000 < await broker.redis.pttl(keys.shard_lease(keys.pool_shard())) <= 10_000


async def test_two_then_three_processes_split_the_shards_and_a_new_one_picks_some_up(broker: Broker) -> None:
    shards = await shards_of(broker, 6)  # seven shards
    a, b, c = process(broker, "a"), process(broker, "b"), process(broker, "c")
    await a.beat()
    assert set(a.tokens()) == shards
    assert await settle([a, b], shards) <= 3  # b joins: a gives up what is beyond its share of 4
    assert {len(a.tokens()), len(b.tokens())} == {3, 4}
    assert await settle([a, b, c], shards) <= 3  # c joins: shares of 3
    assert sorted(len(p.tokens()) for p in (a, b, c)) in ([1, 3, 3], [2, 2, 3])
    by_redis = await holders(broker, shards)
    for p in (a, b, c):  # what each believes it holds is what Redis says
        assert {s for s, holder in by_redis.items() if holder == p.holder} == set(p.tokens())
    for _ in range(3):  # and it stays so: nobody gives up or takes anything more
        before = [p.tokens() for p in (a, b, c)]
        for p in (a, b, c):
            await p.beat()
        assert [p.tokens() for p in (a, b, c)] == before


async def test_a_dead_processes_shards_move_to_the_others_within_the_lease(broker: Broker, clock) -> None:
    shards = await shards_of(broker, 5)
    lease_ms = 600
    a, b = process(broker, "a", lease_ms=lease_ms), process(broker, "b", lease_ms=lease_ms)
    await settle([a, b], shards)
    dead = {shard: held.token for shard, held in b.held.items()}
    died = time.monotonic()
    # b dies: it beats no more. a beats every 100 ms, the clock moving with it.
    while set(a.tokens()) != shards:
        assert time.monotonic() - died < 3 * lease_ms / 1000, f"b's shards did not move: {sorted(a.tokens())}"
        await asyncio.sleep(0.1)
        clock.advance(100)
        await a.beat()
    moved_after = time.monotonic() - died
    assert lease_ms / 1000 - 0.05 < moved_after < lease_ms / 1000 + 0.5, moved_after
    clock.advance(lease_ms)  # (the registry goes by the broker's clock, which only follows)
    await a.beat()
    assert a.live == 1 and set(a.tokens()) == shards  # b left the registry too
    for shard, token in dead.items():
        assert a.tokens()[shard] > token  # taken over with a higher fencing token
    # b comes back (it was only paused): its renewals are refused, it holds nothing, and
    # the next beats share the shards out again.
    await b.beat()
    assert b.tokens() == {} or set(b.tokens()).isdisjoint(dead)
    await settle([a, b], shards)


async def test_a_stopping_process_gives_its_shards_up_at_once(broker: Broker) -> None:
    shards = await shards_of(broker, 3)
    a, b = process(broker, "a"), process(broker, "b")
    await settle([a, b], shards)
    await b.leave()
    assert b.tokens() == {}
    await a.beat()  # no lease to wait for
    assert set(a.tokens()) == shards and a.live == 1


async def test_a_stale_holders_trim_is_refused_and_the_new_holders_is_not(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids
    await broker.messages.claim(device.ref)
    await broker.messages.report_status(device.ref, mid, "sent")
    stale = process(broker, "stale", lease_ms=300)
    await stale.beat()
    stale_lease = stale.lease(stale.held[account.shard].token)
    await asyncio.sleep(0.35)  # paused past its lease (and its place among the live processes)
    clock.advance(350)
    fresh = process(broker, "fresh")
    await fresh.beat()
    assert account.shard in fresh.tokens()
    now = broker.clock()
    with pytest.raises(errors.LockLost):
        await broker.message_log.trim(account.shard, account.id, now, [mid, "3"], lease=stale_lease)
    assert await broker.redis.hexists(broker.shard(account.shard).messages, mid)
    fresh_lease = fresh.lease(fresh.tokens()[account.shard])
    assert await broker.message_log.trim(account.shard, account.id, now, [mid, "3"], lease=fresh_lease) == 1
    await stale.beat()  # back: its renewal is refused, so it drops the shard
    assert account.shard not in stale.tokens()


async def queue_one_event(broker: Broker, account: Account, device: Any, url: str) -> tuple[Any, str]:
    endpoint = await broker.webhooks.create(account, url, ["message.sent"])
    broker.clock.advance(1)  # type: ignore[attr-defined]
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "hooked", device.device_id)])).ids
    await broker.messages.claim(device.ref)
    await broker.messages.report_status(device.ref, mid, "sent")
    return endpoint, mid


def loopback(broker: Broker) -> Broker:
    """The same Redis, scripts and clock, with loopback webhook URLs allowed."""
    return Broker(broker.redis, roomy_settings(webhook_allow_loopback_http=True), broker.scripts, clock=broker.clock)


async def test_a_stale_holders_webhook_lane_writes_are_refused(broker: Broker, clock) -> None:
    broker = loopback(broker)
    receiver = Receiver(hang=True)  # the lane task started by the fan-out POSTs nothing through
    account, [device] = await self_managed(broker)
    endpoint, mid = await queue_one_event(broker, account, device, receiver.url)
    stale = WebhookDispatcher(broker, leases=process(broker, "stale", lease_ms=300))
    try:
        await stale.leases.beat()
        token = stale.leases.held[account.shard].token
        assert (await stale.fan_out([account.shard])).queued == 1
        await stale.stop_lanes()  # driven by hand below
        lane = endpoint.lane_of(mid)
        lane_key = broker.shard(account.shard).webhook_lane(endpoint.id, lane)
        [first] = await broker.redis.lrange(lane_key, 0, -1)
        event = msgspec.json.decode(first, type=QueuedEvent)
        attempt = Attempt(event=event, attempt=1, outcome="delivered", status_code=204, latency_ms=1, error="", at_ms=1)
        await asyncio.sleep(0.35)  # paused past its lease, mid-POST ...
        clock.advance(350)
        fresh = process(broker, "fresh")
        await fresh.beat()  # ... while another process took the account's shard
        assert account.shard in fresh.tokens()
        before = await broker.redis.hgetall(broker.shard(account.shard).webhook(endpoint.id))
        for op, extra in (("delivered", ()), ("gave_up", ()), ("retry", ("1|0",))):
            with pytest.raises(LaneLost):
                await stale._lane_write(account.id, endpoint.id, lane, token, op, first, attempt, *extra)
        with pytest.raises(LaneLost):
            await stale._disable(endpoint, token, attempt, 0)
        with pytest.raises(LaneLost):
            await stale._lane_write(account.id, endpoint.id, lane, token, "clear")
        # Nothing changed: the event waits for the new holder, the endpoint as it was.
        assert await broker.redis.lrange(lane_key, 0, -1) == [first]
        assert await broker.redis.hgetall(broker.shard(account.shard).webhook(endpoint.id)) == before
        assert await broker.redis.hlen(broker.shard(account.shard).webhook_retry(endpoint.id)) == 0
        assert await broker.redis.llen(broker.shard(account.shard).webhook_log(endpoint.id)) == 0
        # Its own reckoning stops it first: the lane task would not even POST.
        with pytest.raises(LaneLost):
            await stale._deliver_some(account.id, endpoint.id, lane, token)
        # The new holder's write goes through.
        mine = WebhookDispatcher(broker, leases=fresh)
        new_token = fresh.tokens()[account.shard]
        assert new_token > token
        assert await mine._lane_write(account.id, endpoint.id, lane, new_token, "delivered", first, attempt) == 1
        assert await broker.redis.llen(lane_key) == 0
        await mine.stop()
    finally:
        await stale.stop()
        receiver.close()


async def test_webhook_work_is_done_by_the_holders_of_its_shards_across_processes(broker: Broker, clock) -> None:
    """A pool-routed message's event is in the pool shard's stream; its endpoint's lanes
    are in the sender's account shard. With the two shards held by two processes, the
    pool's holder queues the event and wakes the account's holder, which delivers it."""
    hooks = loopback(broker)
    receiver = Receiver()
    sender = await hooks.accounts.create("api@example.com", "api_only")
    pool_phone = await pair(hooks, None, "pool phone")
    endpoint = await hooks.webhooks.create(sender, receiver.url, ["message.sent"])
    clock.advance(1)
    ids = (await hooks.messages.enqueue(sender, [OutgoingMessage(TO, f"p{i}") for i in range(3)])).ids
    assert sorted(m.id for m in await hooks.messages.claim(pool_phone.ref, limit=10)) == sorted(ids)
    for message_id in ids:
        await hooks.messages.report_status(pool_phone.ref, message_id, "sent")
    pool_side, account_side = process(hooks, "pool-side"), process(hooks, "account-side")
    # Each holds one shard, as a split could have it: the pool's, and the sender's.
    sender_shard = keys.account_shard(sender.id)  # where its endpoint's lanes are
    await pool_side._acquire([keys.pool_shard()], time.monotonic())
    await account_side._acquire([sender_shard], time.monotonic())
    assert set(pool_side.tokens()) == {keys.pool_shard()} and set(account_side.tokens()) == {sender_shard}
    fanning = WebhookDispatcher(hooks, leases=pool_side)
    delivering = WebhookDispatcher(hooks, leases=account_side)
    try:
        report = await fanning.run_once()
        assert report is not None and report.queued == 3
        assert fanning.lanes == {}  # not its lanes to deliver
        assert await hooks.redis.smembers(keys.WEBHOOK_WAKE) == {f"{sender.id}|{endpoint.id}".encode()}
        await delivering.run_once()  # its wake-up: it starts the lanes
        for _ in range(200):  # the lanes deliver, and empty as each delivery is written
            if (await hooks.webhooks.get(sender, endpoint.id)).queued == 0:
                break
            await asyncio.sleep(0.05)
        assert (await hooks.webhooks.get(sender, endpoint.id)).queued == 0
        assert sorted(r.event["data"]["message_id"] for r in receiver.delivered()) == sorted(ids)
        assert await hooks.redis.scard(keys.WEBHOOK_WAKE) == 0
    finally:
        await fanning.stop()
        await delivering.stop()
        receiver.close()


def test_a_host_is_a_machine_and_a_data_directory(tmp_path) -> None:
    one = this_host(tmp_path / "one")
    assert this_host(f"{tmp_path}/one/../one") == one  # the same directory, however named
    assert this_host(tmp_path / "two").id != one.id
    assert str((tmp_path / "one").resolve()) in one.label and "|" not in one.id + one.label


def test_a_host_with_a_local_store_works_beside_no_other_host() -> None:
    def member(host: Host, store: str) -> Member:
        return Member("p", host.id, store, host.label)

    assert history_conflict(HOST, True, [member(HOST, LOCAL)]) is None  # its own host's processes
    assert history_conflict(HOST, True, [member(OTHER_HOST, SHARED)]) == member(OTHER_HOST, SHARED)
    assert history_conflict(HOST, False, [member(OTHER_HOST, LOCAL)]) == member(OTHER_HOST, LOCAL)
    assert history_conflict(HOST, False, [member(OTHER_HOST, SHARED)]) is None  # one shared store
    assert Member.parse(str(member(OTHER_HOST, LOCAL))) == member(OTHER_HOST, LOCAL)


async def test_the_registry_refuses_a_second_host_while_either_keeps_history_locally(broker: Broker, clock) -> None:
    shards = await shards_of(broker, 2)
    first = process(broker, "first", host=HOST, local=True)
    await first.beat()
    assert set(first.tokens()) == shards
    same_host = process(broker, "same-host", host=HOST, local=True)
    await same_host.beat()
    assert same_host.refused is None and same_host.live == 2  # another process of the same serve
    for local in (True, False):
        other = process(broker, f"other-{local}", host=OTHER_HOST, local=local)
        await other.beat()
        assert other.refused is not None and other.refused.host == HOST.id
        assert other.tokens() == {}
    members = {text(m) for m in await broker.redis.zrange(keys.BACKGROUND, 0, -1)}
    assert members == {str(first.member), str(same_host.member)}  # the refused ones never got in
    # Once the first host is gone (left, or dead past its deadline), the other comes in.
    await first.leave()
    clock.advance(10_001)
    other = process(broker, "other-later", host=OTHER_HOST, local=True)
    await other.beat()
    assert other.refused is None and other.live == 1
    # Two hosts sharing one store work side by side.
    shared_one = process(broker, "shared-one", host=HOST)
    await other.leave()
    await shared_one.beat()
    shared_two = process(broker, "shared-two", host=OTHER_HOST)
    await shared_two.beat()
    assert shared_two.refused is None and shared_two.live == 2


async def test_stopping_the_jobs_gives_every_shard_up(broker: Broker, tmp_path) -> None:
    shards = await shards_of(broker, 2)
    store = HistoryStore(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    await store.start()
    try:
        jobs = start_jobs(broker, store, host=HOST)
        for _ in range(100):
            if set(jobs.leases.tokens()) == shards:
                break
            await asyncio.sleep(0.05)
        assert set(jobs.leases.tokens()) == shards
        assert (await holders(broker, shards)).keys() == shards
        await stop_jobs(jobs)
        assert all(tasks.done() for tasks in jobs.tasks)
        assert set((await holders(broker, shards)).values()) == {None}
        assert await broker.redis.zcard(keys.BACKGROUND) == 0
    finally:
        await store.close()
