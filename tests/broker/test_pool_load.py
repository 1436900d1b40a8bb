"""On real Redis: many concurrent claimers, and fairness across senders in a pool."""

from __future__ import annotations

import asyncio
from collections import Counter

from broker import Broker
from broker.records import OutgoingMessage
from tests.support.backends import roomy_settings
from tests.support.fleet import TO, drain, pair

BIG = 1_000_000


async def big_broker(real_redis, scripts, clock) -> Broker:
    broker = Broker(
        real_redis,
        roomy_settings(device_segments_per_minute=BIG, device_segments_per_day=BIG, quota_api_only=BIG),
        scripts,
        clock=clock,
    )
    await broker.start()
    return broker


async def test_fifty_concurrent_claimers_drain_a_pool_of_ten_thousand_exactly_once(real_redis, scripts, clock) -> None:
    broker = await big_broker(real_redis, scripts, clock)
    sender = await broker.accounts.create("bulk@example.com", "api_only")
    queued: list[str] = []
    for _ in range(10):
        queued += (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "x")] * 1000)).ids
    phones = [await pair(broker, None, f"pool phone {i}") for i in range(50)]

    per_phone = await asyncio.gather(*(drain(broker, p, 17) for p in phones))
    claims = Counter(mid for got in per_phone for mid in got)
    assert len(claims) == 10_000 and set(claims) == set(queued)
    assert max(claims.values()) == 1
    assert sum(1 for got in per_phone if got) > 1, "claims were not spread over the phones"
    pool = broker.shard("p:default")
    assert await real_redis.zcard(pool.pool) == 0
    assert await real_redis.zcard(pool.expiry) == 0
    assert await real_redis.zcard(pool.leased) == 10_000
    counts = await broker.message_log.account_counts(sender)
    assert (counts["queued"], counts["claimed"], counts["total"]) == (0, 10_000, 10_000)
    holders = Counter()
    for phone, got in zip(phones, per_phone, strict=True):
        holders[phone.device_id] = len(got)
    counters = await broker.message_log.counters("p:default")
    assert all(counters.get(f"d:{d}:claimed", 0) == n for d, n in holders.items())


async def test_a_small_sender_is_not_stuck_behind_a_huge_backlog(real_redis, scripts, clock) -> None:
    broker = await big_broker(real_redis, scripts, clock)
    huge = await broker.accounts.create("huge@example.com", "api_only")
    small = await broker.accounts.create("small@example.com", "api_only")
    for _ in range(10):
        await broker.messages.enqueue(huge, [OutgoingMessage(TO, "bulk")] * 1000)
    phone = await pair(broker, None)
    await broker.messages.claim(phone.ref, 10)  # the pool is in mid-flow
    clock.advance(1)
    [mine] = (await broker.messages.enqueue(small, [OutgoingMessage(TO, "just one")])).ids
    claimed = [m.id for m in await broker.messages.claim(phone.ref, 10)]
    assert mine in claimed


async def test_senders_take_turns(real_redis, scripts, clock) -> None:
    broker = await big_broker(real_redis, scripts, clock)
    senders = [await broker.accounts.create(f"s{i}@example.com", "api_only") for i in range(4)]
    owner_of: dict[str, str] = {}
    for backlog, sender in zip((200, 50, 5, 1), senders, strict=True):
        for mid in (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "x")] * backlog)).ids:
            owner_of[mid] = sender.id
    phone = await pair(broker, None)
    order = [owner_of[m.id] for m in await broker.messages.claim(phone.ref, 30)]
    s0, s1, s2, s3 = (s.id for s in senders)
    # Round one serves every sender once; then each round serves those with messages left.
    assert set(order[0:4]) == {s0, s1, s2, s3}
    for start in range(4, 4 + 3 * 4, 3):
        assert set(order[start : start + 3]) == {s0, s1, s2}
    assert set(order[16:18]) == {s0, s1}
