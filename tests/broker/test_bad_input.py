"""Bad input to the broker raises the named domain error and changes nothing in Redis."""

from __future__ import annotations

import pytest

from broker import Broker, errors
from broker.records import DeviceRef, OutgoingMessage
from tests.support.fleet import TO, pair, redis_snapshot, self_managed


@pytest.fixture
async def world(broker: Broker):
    """Two self-managed accounts with a phone each, an API-only sender, a pool phone, and
    one message in every interesting state."""
    account, [phone] = await self_managed(broker, "one@example.com")
    other, [other_phone] = await self_managed(broker, "two@example.com")
    api = await broker.accounts.create("api@example.com", "api_only", daily_quota=2)
    pool_phone = await pair(broker, None)
    [claimed] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "c")])).ids
    assert [m.id for m in await broker.messages.claim(phone.ref)] == [claimed]
    [queued] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "q", phone.device_id)])).ids
    await broker.messages.enqueue(api, [OutgoingMessage(TO, "a")] * 2)
    used_code = await broker.devices.create_pairing_code(account)
    await broker.devices.register(used_code.code, "used")
    return dict(
        account=account,
        phone=phone,
        other=other,
        other_phone=other_phone,
        api=api,
        pool_phone=pool_phone,
        queued=queued,
        claimed=claimed,
        used_code=used_code.code,
    )


CASES = {
    "claim by an unknown device": (
        errors.DeviceNotFound,
        lambda b, w: b.messages.claim(DeviceRef(w["account"].shard, "ghost")),
    ),
    "claim by a device of another shard": (
        errors.DeviceNotFound,
        lambda b, w: b.messages.claim(DeviceRef(w["other"].shard, w["phone"].device_id)),
    ),
    "heartbeat of an unknown device": (
        errors.DeviceNotFound,
        lambda b, w: b.presence.heartbeat(DeviceRef("p:default", "ghost"), battery=5),
    ),
    "send to an unknown device": (
        errors.DeviceNotFound,
        lambda b, w: b.messages.enqueue(w["account"], [OutgoingMessage(TO, "x", "ghost")]),
    ),
    "send to another account's device": (
        errors.DeviceNotFound,
        lambda b, w: b.messages.enqueue(w["account"], [OutgoingMessage(TO, "x", w["other_phone"].device_id)]),
    ),
    "send to a device from an API-only account": (
        errors.RoutingError,
        lambda b, w: b.messages.enqueue(w["api"], [OutgoingMessage(TO, "x", w["pool_phone"].device_id)]),
    ),
    "report an unknown message": (
        errors.MessageNotFound,
        lambda b, w: b.messages.report_status(w["phone"].ref, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "sent"),
    ),
    "report by the wrong device": (
        errors.MessageNotFound,
        lambda b, w: b.messages.report_status(w["other_phone"].ref, w["claimed"], "sent"),
    ),
    "report on a queued message": (
        errors.InvalidTransition,
        lambda b, w: b.messages.report_status(w["phone"].ref, w["queued"], "delivered"),
    ),
    "report an unknown status": (
        errors.InvalidInput,
        lambda b, w: b.messages.report_status(w["phone"].ref, w["claimed"], "read"),
    ),
    "cancel by the wrong account": (errors.MessageNotFound, lambda b, w: b.messages.cancel(w["other"], w["queued"])),
    "cancel a claimed message": (errors.InvalidTransition, lambda b, w: b.messages.cancel(w["account"], w["claimed"])),
    "cancel an unknown message": (errors.MessageNotFound, lambda b, w: b.messages.cancel(w["account"], "nope")),
    "reuse a pairing code": (errors.PairingCodeInvalid, lambda b, w: b.devices.register(w["used_code"], "again")),
    "unknown pairing code": (errors.PairingCodeInvalid, lambda b, w: b.devices.register("ZZZZZZZZ", "phone")),
    "quota exhausted": (errors.QuotaExceeded, lambda b, w: b.messages.enqueue(w["api"], [OutgoingMessage(TO, "x")])),
    "bad number in a batch": (
        errors.InvalidInput,
        lambda b, w: b.messages.enqueue(w["account"], [OutgoingMessage(TO, "x"), OutgoingMessage("+1 nope", "x")]),
    ),
    "text that is not valid Unicode": (
        errors.InvalidInput,
        lambda b, w: b.messages.enqueue(w["account"], [OutgoingMessage(TO, "half an emoji \ud83d")]),
    ),
    "device name that is not valid Unicode": (
        errors.InvalidInput,
        lambda b, w: b.devices.register(w["used_code"], "\udc00"),
    ),
    "heartbeat field that is not valid Unicode": (
        errors.InvalidInput,
        lambda b, w: b.presence.heartbeat(w["phone"].ref, app_version="\ud800"),
    ),
    "claim limit out of range": (errors.InvalidInput, lambda b, w: b.messages.claim(w["phone"].ref, 1000)),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_refused_and_nothing_changed(broker: Broker, world, case: str) -> None:
    error, call = CASES[case]
    before = await redis_snapshot(broker.redis)
    with pytest.raises(error):
        await call(broker, world)
    assert await redis_snapshot(broker.redis) == before


async def test_every_broker_error_is_a_domain_error(broker: Broker, world) -> None:
    for case, (error, call) in CASES.items():
        assert issubclass(error, errors.BrokerError), case
        with pytest.raises(errors.BrokerError):
            await call(broker, world)


async def test_idempotency_key_reused_changes_nothing(broker: Broker, world) -> None:
    account, phone = world["account"], world["phone"]
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", phone.device_id)], idempotency_key="k")
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.IdempotencyKeyReused):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "other", phone.device_id)], idempotency_key="k")
    assert await redis_snapshot(broker.redis) == before
