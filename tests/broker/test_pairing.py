"""Pairing codes, device registration and device tokens; accounts."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker, errors, keys
from broker.ids import sha256_hex
from tests.support.backends import roomy_settings
from tests.support.fleet import pair


async def test_a_code_pairs_one_device_and_its_token_finds_it(broker: Broker) -> None:
    account = await broker.accounts.create("owner@example.com", "self_managed")
    code = await broker.devices.create_pairing_code(account)
    assert len(code.code) == 8 and code.expires_at_ms == broker.clock() + 600_000
    device = await broker.devices.register(code.code.lower(), " Pixel 7 ", "+15551234567")
    assert (device.device_name, device.account_id, device.shard) == ("Pixel 7", account.id, account.shard)
    assert await broker.devices.find_by_token(device.device_token) == device.ref
    fields = await broker.devices.get(device.ref)
    assert fields["phone_number"] == "+15551234567"
    assert fields["token_sha256"] == sha256_hex(device.device_token)
    assert device.device_token not in fields.values()
    assert (int(fields["per_minute"]), int(fields["per_day"])) == (30, 1000)
    with pytest.raises(errors.PairingCodeInvalid):
        await broker.devices.register(code.code, "second phone")
    assert await broker.redis.scard(broker.shard(account.shard).devices) == 1


async def test_an_expired_code_is_refused(broker: Broker, scripts, clock) -> None:

    short = Broker(broker.redis, roomy_settings(pairing_code_ttl_seconds=1), scripts, clock=clock)
    account = await short.accounts.create("owner@example.com", "self_managed")
    code = await short.devices.create_pairing_code(account)
    index = keys.pairing_code_index(code.code)
    assert 0 < await short.redis.pttl(index) <= 1000
    assert 0 < await short.redis.pttl(short.shard(account.shard).pairing_code(code.code)) <= 1000
    await asyncio.sleep(1.05)  # the codes expire in Redis's own time
    with pytest.raises(errors.PairingCodeInvalid):
        await short.devices.register(code.code, "late phone")


async def test_unknown_and_malformed_codes(broker: Broker) -> None:
    for code in ("AAAAAAAA", "", "x" * 100, "../{a:x}", None):
        with pytest.raises(errors.PairingCodeInvalid):
            await broker.devices.register(code, "phone")
    # SCAN, not KEYS: redis-py sends KEYS to one node of a cluster, SCAN to every primary.
    assert [key async for key in broker.redis.scan_iter("*device-token*")] == []


async def test_bad_device_fields_keep_the_code(broker: Broker) -> None:
    account = await broker.accounts.create("owner@example.com", "self_managed")
    code = await broker.devices.create_pairing_code(account)
    for name, number in (("", ""), ("x" * 65, ""), ("ok", "12345"), ("ok", "+1")):
        with pytest.raises(errors.InvalidInput):
            await broker.devices.register(code.code, name, number)
    assert (await broker.devices.register(code.code, "ok")).account_id == account.id


async def test_unknown_tokens(broker: Broker) -> None:
    await pair(broker, None)
    for token in ("", "nope", "x" * 500, None):
        assert await broker.devices.find_by_token(token) is None


async def test_pool_codes_pair_into_the_platform_pool(broker: Broker) -> None:
    phone = await pair(broker, None)
    assert phone.shard == keys.pool_shard() and phone.account_id == ""
    assert await broker.redis.sismember(broker.shard("p:default").devices, phone.device_id)


async def test_accounts(broker: Broker, settings) -> None:
    api = await broker.accounts.create("API@example.com", "api_only")
    own = await broker.accounts.create("own@example.com", "self_managed", operator=True)
    assert (api.daily_quota, own.daily_quota) == (settings.quota_api_only, settings.quota_self_managed)
    assert api.shard == "p:default" and own.shard == f"a:{own.id}"
    assert await broker.accounts.get(own.id) == own
    assert await broker.accounts.find_by_email("api@EXAMPLE.com") == api
    with pytest.raises(errors.EmailTaken):
        await broker.accounts.create("api@example.com", "self_managed")
    with pytest.raises(errors.AccountNotFound):
        await broker.accounts.get("nobody")
    for email, kind in (("no-at-sign", "api_only"), ("x@example.com", "admin")):
        with pytest.raises(errors.InvalidInput):
            await broker.accounts.create(email, kind)
