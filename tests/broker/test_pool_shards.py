"""A platform pool split into shards (``CONNECFY_POOL_SHARDS``), on the newest real Redis
and on the Redis Cluster: every message claimed once, no message waiting while a phone
has room, senders taking turns across shards, and a change of the number of shards
losing nothing."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from broker import Broker, keys
from broker.records import Account, OutgoingMessage
from tests.support.backends import CLUSTER, NEWEST_REAL, roomy_settings
from tests.support.fleet import TO, drain, pair

BIG = 1_000_000
SHARDS = 4


@pytest.fixture(params=[NEWEST_REAL, CLUSTER])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


async def split_broker(redis_client, scripts, clock, shards: int = SHARDS, **settings: object) -> Broker:
    broker = Broker(
        redis_client,
        roomy_settings(
            pool_shards=shards,
            device_segments_per_minute=BIG,
            device_segments_per_day=BIG,
            quota_api_only=BIG,
            **settings,
        ),
        scripts,
        clock=clock,
    )
    await broker.start()
    return broker


async def senders_homed(broker: Broker, per_shard: list[int]) -> list[Account]:
    """API-only senders, ``per_shard[i]`` of them at home in pool shard i (made until the
    hashes of their ids fall so; the others made on the way send nothing)."""
    wanted = dict(zip(broker.pool_shards.configured, per_shard, strict=True))
    found: list[Account] = []
    for i in range(2_000):
        sender = await broker.accounts.create(f"sender{i}@example.com", "api_only")
        if wanted[sender.shard] > 0:
            wanted[sender.shard] -= 1
            found.append(sender)
        if not any(wanted.values()):
            return found
    raise AssertionError(f"could not home the senders as {per_shard}")


async def pool_depth(broker: Broker) -> int:
    return sum([await broker.redis.zcard(broker.shard(tag).pool) for tag in await broker.pool_shards.in_use()])


async def test_twenty_phones_claim_ten_senders_messages_exactly_once(redis_client, scripts, clock) -> None:
    broker = await split_broker(redis_client, scripts, clock)
    senders = await senders_homed(broker, [4, 3, 2, 1])
    phones = [await pair(broker, None, f"pool phone {i}") for i in range(20)]
    assert Counter(p.shard for p in phones) == dict.fromkeys(broker.pool_shards.configured, 5)
    queued: set[str] = set()
    for n, sender in enumerate(senders):
        queued.update((await broker.messages.enqueue(sender, [OutgoingMessage(TO, f"s{n}")] * (40 + 7 * n))).ids)

    per_phone = await asyncio.gather(*(drain(broker, p, 7) for p in phones))
    claims = Counter(mid for got in per_phone for mid in got)
    assert set(claims) == queued and max(claims.values()) == 1
    assert await pool_depth(broker) == 0
    assert sum(1 for got in per_phone if got) > 10, "claims were not spread over the phones"
    for sender in senders:
        counts = await broker.message_log.account_counts(sender)
        assert counts["claimed"] == counts["total"] > 0


async def test_no_message_waits_while_a_phone_has_room(redis_client, scripts, clock) -> None:
    """Messages in one shard only, phones at home in every shard: each claim fills up
    while any shard has messages, and comes back short only once every pool is empty."""
    broker = await split_broker(redis_client, scripts, clock)
    (sender,) = await senders_homed(broker, [0, 0, 1, 0])
    phones = [await pair(broker, None, f"pool phone {i}") for i in range(8)]
    await broker.messages.enqueue(sender, [OutgoingMessage(TO, "one shard")] * 95)
    short = 0
    for _ in range(3):
        for phone in phones:
            got = await broker.messages.claim(phone.ref, 10)
            if len(got) < 10:
                short += 1
                assert await pool_depth(broker) == 0, f"a claim of {len(got)} left messages waiting"
    assert short == 3 * 8 - 9  # nine full claims, one of 5, then none


FAIRNESS_BOUND = 0.05
"""Backlogged senders each get within this fraction of an equal share of what the pool
sends, whatever shards they live in (the bound docs/operations.md states; measured: 99
to 101 claims each where 100 is equal)."""


async def test_senders_take_turns_across_shards(redis_client, scripts, clock) -> None:
    """Ten senders with backlogs, homed four, three, two and one to a shard: each gets
    close to a tenth of what twenty phones claim, as in one pool, not a quarter of a
    shard's share (a lone sender in a shard would get 25%, a sender with three
    neighbours 6%)."""
    broker = await split_broker(redis_client, scripts, clock)
    senders = await senders_homed(broker, [4, 3, 2, 1])
    owner: dict[str, str] = {}
    for sender in senders:
        for mid in (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "backlog")] * 150)).ids:
            owner[mid] = sender.id
    phones = [await pair(broker, None, f"pool phone {i}") for i in range(20)]
    served: Counter[str] = Counter()
    for _ in range(5):
        for phone in phones:
            served.update(owner[m.id] for m in await broker.messages.claim(phone.ref, 10))
    total = sum(served.values())
    assert total == 1_000
    fair = total / len(senders)
    shares = sorted(served[s.id] for s in senders)
    print(f"claims per sender, fair {fair:.0f}: {shares}")
    assert all(abs(n - fair) <= FAIRNESS_BOUND * fair for n in shares), shares


async def test_a_new_number_of_shards_moves_nothing(redis_client, scripts, clock) -> None:
    """Senders and phones keep their homes when the pool is split differently, and every
    shard that was a home is still claimed from, down to one configured shard."""
    four = await split_broker(redis_client, scripts, clock)
    (far,) = await senders_homed(four, [0, 0, 0, 1])
    waiting = set((await four.messages.enqueue(far, [OutgoingMessage(TO, "before")] * 3)).ids)
    for shards in (2, 1):
        fewer = await split_broker(redis_client, scripts, clock, shards)
        assert (await fewer.accounts.get(far.id)).shard == keys.pool_shard(index=3)
        waiting |= set((await fewer.messages.enqueue(far, [OutgoingMessage(TO, f"with {shards}")])).ids)
        phone = await pair(fewer, None, f"phone of {shards}")
        assert phone.shard in fewer.pool_shards.configured
        got = {m.id for m in await fewer.messages.claim(phone.ref, 10)}
        assert got == waiting
        waiting = set()
    assert fewer.pool_shards.configured == (keys.pool_shard(),)
    assert len(await fewer.pool_shards.in_use()) == SHARDS  # every earlier home is still visited


async def test_a_webhook_of_a_sender_homed_in_another_pool_shard_reads_that_shards_stream(
    redis_client, scripts, clock
) -> None:
    """The dispatcher's consumer group is on the sender's home shard's stream before any
    event: else the snapshotter could drop entries the webhooks never saw."""
    broker = await split_broker(redis_client, scripts, clock, webhook_allow_loopback_http=True)
    (far,) = await senders_homed(broker, [0, 0, 1, 0])
    await broker.webhooks.create(far, "http://127.0.0.1:9/in")
    groups = await broker.redis.xinfo_groups(broker.shard(far.shard).events)
    assert "webhooks" in {g["name"].decode() if isinstance(g["name"], bytes) else g["name"] for g in groups}
