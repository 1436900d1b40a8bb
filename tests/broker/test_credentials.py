"""Dashboard sessions and send-only API keys."""

from __future__ import annotations

import pytest

from broker import Broker, errors, keys
from broker.ids import sha256_hex
from tests.support.fleet import redis_snapshot


async def test_session_round_trip_and_logout(broker: Broker, settings) -> None:
    account = await broker.create_account("owner@example.com", "self_managed")
    session = await broker.create_session(account)
    assert session.expires_at_ms == broker.clock() + settings.session_ttl_seconds * 1000
    assert await broker.get_session(session.id) == session
    stored = keys.session(sha256_hex(session.id))
    assert 0 < await broker.redis.pttl(stored) <= settings.session_ttl_seconds * 1000
    assert not await broker.redis.exists(keys.session(session.id))  # only the hash is a key
    await broker.delete_session(session.id)
    assert await broker.get_session(session.id) is None


async def test_unknown_sessions(broker: Broker) -> None:
    for sid in ("", "nope", "x" * 500, None, 12):
        assert await broker.get_session(sid) is None


async def test_api_key_is_shown_once_and_finds_its_account(broker: Broker, clock) -> None:
    account = await broker.create_account("owner@example.com", "api_only")
    created = await broker.create_api_key(account, " CRM ")
    assert created.info.name == "CRM" and len(created.api_key) >= 43
    [listed] = await broker.list_api_keys(account)
    assert (listed.id, listed.name, listed.last_used_ms) == (created.info.id, "CRM", None)
    snapshot = await redis_snapshot(broker.redis)
    assert created.api_key.encode() not in repr(snapshot).encode()
    clock.advance(5)
    assert await broker.find_account_by_api_key(created.api_key) == account
    assert (await broker.list_api_keys(account))[0].last_used_ms == clock.now_ms


async def test_revoked_key_stops_working_at_once(broker: Broker) -> None:
    account = await broker.create_account("owner@example.com", "api_only")
    keep, revoke = await broker.create_api_key(account, "keep"), await broker.create_api_key(account, "revoke")
    # Used first, so this process remembers which account the key names: revoking wins anyway.
    assert await broker.find_account_by_api_key(revoke.api_key) == account
    await broker.revoke_api_key(account, revoke.info.id)
    assert await broker.find_account_by_api_key(revoke.api_key) is None
    assert await broker.find_account_by_api_key(keep.api_key) == account
    assert [k.name for k in await broker.list_api_keys(account)] == ["keep"]
    assert not await broker.redis.exists(keys.api_key_index(sha256_hex(revoke.api_key)))
    with pytest.raises(errors.ApiKeyNotFound):
        await broker.revoke_api_key(account, revoke.info.id)


async def test_another_account_cannot_revoke(broker: Broker) -> None:
    one = await broker.create_account("one@example.com", "api_only")
    two = await broker.create_account("two@example.com", "api_only")
    key = await broker.create_api_key(one, "mine")
    before = await redis_snapshot(broker.redis)
    for key_id in (key.info.id, "../x", ""):
        with pytest.raises(errors.ApiKeyNotFound):
            await broker.revoke_api_key(two, key_id)
    assert await redis_snapshot(broker.redis) == before
    assert await broker.find_account_by_api_key(key.api_key) == one


async def test_bad_api_keys(broker: Broker) -> None:
    account = await broker.create_account("owner@example.com", "api_only")
    for name in ("", "  ", "x" * 65, None):
        with pytest.raises(errors.InvalidInput):
            await broker.create_api_key(account, name)
    for secret in ("", "nope", "x" * 500, None):
        assert await broker.find_account_by_api_key(secret) is None
