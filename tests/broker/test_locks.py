"""The locks the shards' background leases are made of: taken, renewed and released in
one script each, with a fencing token that a holder whose lease lapsed cannot use."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker, errors, keys

LOCK = keys.shard_lease(keys.pool_shard())


async def test_one_holder_at_a_time_with_growing_tokens(broker: Broker) -> None:
    first = await broker.locks.acquire(LOCK, "host-a", 10_000)
    assert first is not None
    assert await broker.locks.acquire(LOCK, "host-b", 10_000) is None
    assert await broker.locks.acquire(LOCK, "host-a", 10_000) == first  # its own lock: renewed, same token
    assert await broker.locks.release(LOCK, "host-a", first)
    second = await broker.locks.acquire(LOCK, "host-b", 10_000)
    assert second is not None and second > first
    await broker.locks.check(LOCK, second)


async def test_a_holder_whose_lease_lapsed_cannot_renew_release_or_fence(broker: Broker) -> None:
    stale = await broker.locks.acquire(LOCK, "host-a", 200)
    assert stale is not None
    await asyncio.sleep(0.3)  # host-a stalls past its lease
    current = await broker.locks.acquire(LOCK, "host-b", 10_000)
    assert current is not None and current > stale

    assert not await broker.locks.renew(LOCK, "host-a", stale, 10_000)
    assert not await broker.locks.release(LOCK, "host-a", stale)
    with pytest.raises(errors.LockLost):
        await broker.locks.check(LOCK, stale)
    # host-b's lock is untouched by all of that: still its own, with its lease running.
    await broker.locks.check(LOCK, current)
    assert 9_000 < await broker.redis.pttl(LOCK) <= 10_000
    assert await broker.locks.acquire(LOCK, "host-a", 10_000) is None
    # Even host-b's own name with the stale token is refused: the token decides.
    assert not await broker.locks.renew(LOCK, "host-b", stale, 10_000)
    assert await broker.locks.renew(LOCK, "host-b", current, 10_000)


async def test_a_released_lock_is_free_and_a_holder_name_cannot_fake_a_token(broker: Broker) -> None:
    with pytest.raises(ValueError):
        await broker.locks.acquire(LOCK, "host|7", 1_000)
    token = await broker.locks.acquire(LOCK, "host-a", 1_000)
    assert token is not None
    assert await broker.locks.release(LOCK, "host-a", token)
    assert await broker.redis.get(LOCK) is None
    with pytest.raises(errors.LockLost):
        await broker.locks.check(LOCK, token)
