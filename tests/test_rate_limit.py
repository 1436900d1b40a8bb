"""GCRA rate limits."""

from __future__ import annotations

import pytest

from broker import Broker, errors

KEY = "{a:test}:rate:sends"


async def test_burst_then_steady_rate(broker: Broker, clock) -> None:
    decisions = [await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=5) for _ in range(5)]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.allowed and d.limit == 5 for d in decisions)
    with pytest.raises(errors.RateLimited) as info:
        await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=5)
    denied = info.value.decision
    assert (denied.allowed, denied.remaining, denied.retry_after_ms) == (False, 0, 50)
    assert denied.reset_ms == 250
    clock.advance(49)
    with pytest.raises(errors.RateLimited):
        await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=5)
    clock.advance(1)
    assert (await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=5)).remaining == 0
    clock.advance(250)
    assert (await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=5)).remaining == 4


async def test_cost_counts_several_requests(broker: Broker) -> None:
    assert (await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=200, cost=150)).remaining == 50
    with pytest.raises(errors.RateLimited) as info:
        await broker.rate_limit(KEY, rate=20, period_ms=1000, burst=200, cost=51)
    assert info.value.decision.retry_after_ms == 50


async def test_a_cost_above_the_burst_passes_only_on_a_full_bucket(broker: Broker, clock) -> None:
    await broker.rate_limit(KEY, rate=10, period_ms=1000, burst=5, cost=1)
    with pytest.raises(errors.RateLimited) as info:
        await broker.rate_limit(KEY, rate=10, period_ms=1000, burst=5, cost=8)
    assert info.value.decision.retry_after_ms == 100
    clock.advance(100)
    decision = await broker.rate_limit(KEY, rate=10, period_ms=1000, burst=5, cost=8)
    assert (decision.allowed, decision.remaining, decision.reset_ms) == (True, 0, 800)
    with pytest.raises(errors.RateLimited):
        await broker.rate_limit(KEY, rate=10, period_ms=1000, burst=5)


async def test_limiters_are_independent_and_expire(broker: Broker) -> None:
    for _ in range(3):
        await broker.rate_limit(KEY, rate=1, period_ms=60_000, burst=3)
    with pytest.raises(errors.RateLimited):
        await broker.rate_limit(KEY, rate=1, period_ms=60_000, burst=3)
    assert (await broker.rate_limit("{a:other}:rate:sends", rate=1, period_ms=60_000, burst=3)).allowed
    assert 0 < await broker.redis.pttl(KEY) <= 180_000


async def test_bad_parameters(broker: Broker) -> None:
    with pytest.raises(errors.InvalidInput):
        await broker.rate_limit(KEY, rate=0, period_ms=1000, burst=5)
    with pytest.raises(errors.InvalidInput):
        await broker.rate_limit(KEY, rate=1, period_ms=1000, burst=5, cost=0)
    assert not await broker.redis.exists(KEY)
