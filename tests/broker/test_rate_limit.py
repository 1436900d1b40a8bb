"""GCRA rate limits."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker, Settings, errors
from broker.records import LimitChange, OutgoingMessage
from tests.support.backends import roomy_settings
from tests.support.fleet import redis_snapshot, self_managed

KEY = "{a:test}:rate:sends"


async def test_burst_then_steady_rate(broker: Broker, clock) -> None:
    decisions = [await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=5) for _ in range(5)]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.allowed and d.limit == 5 for d in decisions)
    with pytest.raises(errors.RateLimited) as info:
        await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=5)
    denied = info.value.decision
    assert (denied.allowed, denied.remaining, denied.retry_after_ms) == (False, 0, 50)
    assert denied.reset_ms == 250
    clock.advance(49)
    with pytest.raises(errors.RateLimited):
        await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=5)
    clock.advance(1)
    assert (await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=5)).remaining == 0
    clock.advance(250)
    assert (await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=5)).remaining == 4


async def test_cost_counts_several_requests(broker: Broker) -> None:
    assert (await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=200, cost=150)).remaining == 50
    with pytest.raises(errors.RateLimited) as info:
        await broker.limits.rate_limit(KEY, rate=20, period_ms=1000, burst=200, cost=51)
    assert info.value.decision.retry_after_ms == 50


async def test_a_cost_above_the_burst_passes_only_on_a_full_bucket(broker: Broker, clock) -> None:
    await broker.limits.rate_limit(KEY, rate=10, period_ms=1000, burst=5, cost=1)
    with pytest.raises(errors.RateLimited) as info:
        await broker.limits.rate_limit(KEY, rate=10, period_ms=1000, burst=5, cost=8)
    assert info.value.decision.retry_after_ms == 100
    clock.advance(100)
    decision = await broker.limits.rate_limit(KEY, rate=10, period_ms=1000, burst=5, cost=8)
    assert (decision.allowed, decision.remaining, decision.reset_ms) == (True, 0, 800)
    with pytest.raises(errors.RateLimited):
        await broker.limits.rate_limit(KEY, rate=10, period_ms=1000, burst=5)


async def test_limiters_are_independent_and_expire(broker: Broker) -> None:
    for _ in range(3):
        await broker.limits.rate_limit(KEY, rate=1, period_ms=60_000, burst=3)
    with pytest.raises(errors.RateLimited):
        await broker.limits.rate_limit(KEY, rate=1, period_ms=60_000, burst=3)
    assert (await broker.limits.rate_limit("{a:other}:rate:sends", rate=1, period_ms=60_000, burst=3)).allowed
    assert 0 < await broker.redis.pttl(KEY) <= 180_000


async def test_bad_parameters(broker: Broker) -> None:
    with pytest.raises(errors.InvalidInput):
        await broker.limits.rate_limit(KEY, rate=0, period_ms=1000, burst=5)
    with pytest.raises(errors.InvalidInput):
        await broker.limits.rate_limit(KEY, rate=1, period_ms=1000, burst=5, cost=0)
    assert not await broker.redis.exists(KEY)


# The limits inside the enqueue and claim scripts ---------------------------------------


async def test_a_refused_send_changes_nothing_and_a_repeat_costs_nothing(redis_client, scripts, clock) -> None:

    broker = Broker(redis_client, roomy_settings(sends_per_second=10, sends_burst=3), scripts, clock=clock)
    await broker.start()
    account, [phone] = await self_managed(broker)
    message = OutgoingMessage("+15551234567", "hi", phone.device_id)
    first = await broker.messages.enqueue(account, [message, message], idempotency_key="k")
    assert (first.rate.limit, first.rate.remaining) == (3, 1)
    repeat = await broker.messages.enqueue(account, [message, message], idempotency_key="k")
    assert repeat.duplicate and repeat.ids == first.ids and repeat.rate.remaining == 1
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.RateLimited) as info:
        await broker.messages.enqueue(account, [message, message])
    assert (info.value.decision.retry_after_ms, info.value.decision.limit) == (100, 3)
    assert await redis_snapshot(broker.redis) == before
    clock.advance(100)
    assert len((await broker.messages.enqueue(account, [message, message])).ids) == 2


async def test_a_refused_poll_changes_nothing(redis_client, scripts, clock) -> None:

    broker = Broker(redis_client, roomy_settings(tasks_per_minute=6, tasks_burst=2), scripts, clock=clock)
    await broker.start()
    account, [phone] = await self_managed(broker)
    assert (await broker.messages.claim_tasks(phone.ref)).rate.remaining == 1
    assert (await broker.messages.claim_tasks(phone.ref)).rate.remaining == 0
    await broker.messages.enqueue(account, [OutgoingMessage("+15551234567", "hi", phone.device_id)])
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.RateLimited) as info:
        await broker.messages.claim(phone.ref)
    assert info.value.decision.retry_after_ms == 10_000
    assert await redis_snapshot(broker.redis) == before
    clock.advance(10_000)
    assert len(await broker.messages.claim(phone.ref)) == 1


async def test_one_limit_request_waits_at_a_time_even_when_sent_together(broker: Broker) -> None:
    account, _ = await self_managed(broker)
    outcomes = await asyncio.gather(
        *(broker.limits.request(account, LimitChange(daily_quota=50_000), f"try {i}") for i in range(8)),
        return_exceptions=True,
    )
    made = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(made) == 1 and all(isinstance(o, errors.LimitRequestPending) for o in outcomes if o not in made)
    assert [r.id for r in await broker.limits.list_requests(account_id=account.id)] == [made[0].id]
    decided = await broker.limits.decide_request(made[0].id, approve=True)
    assert decided.granted == LimitChange(daily_quota=50_000)
    assert broker.limits.of(await broker.accounts.get(account.id)).daily_quota == 50_000
    assert await broker.limits.pending_request(account) is None


async def test_a_request_is_decided_once_when_two_operators_answer_together(broker: Broker) -> None:
    account, _ = await self_managed(broker)
    request = await broker.limits.request(account, LimitChange(sends_per_second=100), "campaign")
    outcomes = await asyncio.gather(
        broker.limits.decide_request(request.id, approve=True),
        broker.limits.decide_request(request.id, approve=False, note="no"),
        broker.limits.decide_request(request.id, approve=True, granted=LimitChange(sends_per_second=5)),
        return_exceptions=True,
    )
    [won] = [o for o in outcomes if not isinstance(o, Exception)]
    assert all(isinstance(o, errors.LimitRequestDecided) for o in outcomes if o is not won)
    assert (await broker.limits.get_request(request.id)).status == won.status
    limits = broker.limits.of(await broker.accounts.get(account.id))
    expected = {None: 20, 100: 100, 5: 5}[won.granted.sends_per_second if won.granted else None]
    assert limits.sends_per_second == expected


async def test_a_huge_rate_gets_a_burst_within_bounds(redis_client, scripts, clock) -> None:
    broker = Broker(redis_client, Settings(), scripts, clock=clock)  # default 20/s, burst 200: ×10
    await broker.start()
    account, _ = await self_managed(broker)
    request = await broker.limits.request(account, LimitChange(sends_per_second=2_000_000), "a lot")
    decided = await broker.limits.decide_request(request.id, approve=True)
    assert decided.granted == LimitChange(sends_per_second=2_000_000, sends_burst=10_000_000)
