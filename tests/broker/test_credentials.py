"""Dashboard sessions and send-only API keys."""

from __future__ import annotations

import pytest

from broker import Broker, errors, keys
from broker.api_keys import ADMISSION_MAX_AGE_MS
from broker.ids import sha256_hex
from broker.records import LimitChange, OutgoingMessage
from tests.support.fleet import redis_snapshot


async def test_session_round_trip_and_logout(broker: Broker, settings) -> None:
    account = await broker.accounts.create("owner@example.com", "self_managed")
    session = await broker.sessions.create(account)
    assert session.expires_at_ms == broker.clock() + settings.session_ttl_seconds * 1000
    assert await broker.sessions.get(session.id) == session
    stored = keys.session(sha256_hex(session.id))
    assert 0 < await broker.redis.pttl(stored) <= settings.session_ttl_seconds * 1000
    assert not await broker.redis.exists(keys.session(session.id))  # only the hash is a key
    await broker.sessions.delete(session.id)
    assert await broker.sessions.get(session.id) is None


async def test_unknown_sessions(broker: Broker) -> None:
    for sid in ("", "nope", "x" * 500, None, 12):
        assert await broker.sessions.get(sid) is None


async def test_api_key_is_shown_once_and_finds_its_account(broker: Broker, clock) -> None:
    account = await broker.accounts.create("owner@example.com", "api_only")
    created = await broker.api_keys.create(account, " CRM ")
    assert created.info.name == "CRM" and len(created.api_key) >= 43
    [listed] = await broker.api_keys.list_for(account)
    assert (listed.id, listed.name, listed.last_used_ms) == (created.info.id, "CRM", None)
    snapshot = await redis_snapshot(broker.redis)
    assert created.api_key.encode() not in repr(snapshot).encode()
    clock.advance(5)
    assert await broker.api_keys.find_account(created.api_key) == account
    assert (await broker.api_keys.list_for(account))[0].last_used_ms == clock.now_ms


async def test_revoked_key_stops_working_at_once(broker: Broker) -> None:
    account = await broker.accounts.create("owner@example.com", "api_only")
    keep, revoke = await broker.api_keys.create(account, "keep"), await broker.api_keys.create(account, "revoke")
    # Used first, so this process remembers which account the key names: revoking wins anyway.
    assert await broker.api_keys.find_account(revoke.api_key) == account
    await broker.api_keys.revoke(account, revoke.info.id)
    assert await broker.api_keys.find_account(revoke.api_key) is None
    assert await broker.api_keys.find_account(keep.api_key) == account
    assert [k.name for k in await broker.api_keys.list_for(account)] == ["keep"]
    assert not await broker.redis.exists(keys.api_key_index(sha256_hex(revoke.api_key)))
    with pytest.raises(errors.ApiKeyNotFound):
        await broker.api_keys.revoke(account, revoke.info.id)


async def test_another_account_cannot_revoke(broker: Broker) -> None:
    one = await broker.accounts.create("one@example.com", "api_only")
    two = await broker.accounts.create("two@example.com", "api_only")
    key = await broker.api_keys.create(one, "mine")
    before = await redis_snapshot(broker.redis)
    for key_id in (key.info.id, "../x", ""):
        with pytest.raises(errors.ApiKeyNotFound):
            await broker.api_keys.revoke(two, key_id)
    assert await redis_snapshot(broker.redis) == before
    assert await broker.api_keys.find_account(key.api_key) == one


async def test_bad_api_keys(broker: Broker) -> None:
    account = await broker.accounts.create("owner@example.com", "api_only")
    for name in ("", "  ", "x" * 65, None):
        with pytest.raises(errors.InvalidInput):
            await broker.api_keys.create(account, name)
    for secret in ("", "nope", "x" * 500, None):
        assert await broker.api_keys.find_account(secret) is None


async def test_an_admitted_key_is_refused_at_the_enqueue_once_another_process_revokes_it(
    broker: Broker, redis_client, settings, scripts, clock
) -> None:
    """A process remembers a key's admission and sends without reading the key again;
    a revoke made by another process moves the account's credentials epoch, and the
    enqueue script refuses the remembered admission with nothing queued."""
    other = Broker(redis_client, settings, scripts, clock=clock)
    await other.start()
    account = await broker.accounts.create("owner@example.com", "api_only")
    key = await broker.api_keys.create(account, "crm")
    first = await broker.api_keys.admit(key.api_key)
    assert first is not None and first.epoch is None  # the account's shard was not known yet
    second = await broker.api_keys.admit(key.api_key)
    assert second is not None and second.epoch == 0
    assert await broker.api_keys.admit(key.api_key) is second  # remembered: no read at all
    message = OutgoingMessage("+15551234567", "hello")
    sent = await broker.messages.enqueue(account, [message], credentials_epoch=second.epoch)
    assert len(sent.ids) == 1

    await other.api_keys.revoke(account, key.info.id)
    assert await broker.api_keys.admit(key.api_key) is second  # this process has not looked again
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.StaleCredentials):
        await broker.messages.enqueue(account, [message], credentials_epoch=second.epoch)
    assert await redis_snapshot(broker.redis) == before
    broker.api_keys.forget(key.api_key)
    assert await broker.api_keys.admit(key.api_key) is None


async def test_a_limit_change_made_elsewhere_reaches_an_admitted_key_at_its_next_send(
    broker: Broker, redis_client, settings, scripts, clock
) -> None:
    other = Broker(redis_client, settings, scripts, clock=clock)
    await other.start()
    account = await broker.accounts.create("owner@example.com", "api_only", daily_quota=1)
    key = await broker.api_keys.create(account, "crm")
    await broker.api_keys.admit(key.api_key)
    held = await broker.api_keys.admit(key.api_key)
    assert held is not None and held.epoch is not None and held.account.daily_quota == 1
    message = OutgoingMessage("+15551234567", "hi")
    await broker.messages.enqueue(held.account, [message], credentials_epoch=held.epoch)  # the day's one
    await other.limits.set(account.id, LimitChange(daily_quota=50))
    # Under the old admission the quota would refuse it (429); the epoch moved first.
    with pytest.raises(errors.StaleCredentials):
        await broker.messages.enqueue(held.account, [message], credentials_epoch=held.epoch)
    broker.api_keys.forget(key.api_key)
    fresh = await broker.api_keys.admit(key.api_key)
    assert fresh is not None and fresh.account.daily_quota == 50 and fresh.epoch == held.epoch + 1
    sent = await broker.messages.enqueue(fresh.account, [message], credentials_epoch=fresh.epoch)
    assert len(sent.ids) == 1


async def test_an_admission_is_checked_again_after_a_minute(broker: Broker, clock) -> None:
    account = await broker.accounts.create("owner@example.com", "api_only")
    key = await broker.api_keys.create(account, "crm")
    await broker.api_keys.admit(key.api_key)
    held = await broker.api_keys.admit(key.api_key)
    clock.advance(ADMISSION_MAX_AGE_MS - 1)
    assert await broker.api_keys.admit(key.api_key) is held
    clock.advance(1)
    again = await broker.api_keys.admit(key.api_key)
    assert again is not None and again is not held and again.checked_ms == clock.now_ms
