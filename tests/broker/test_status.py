"""Status reports by the holding device, and cancel by the sender."""

from __future__ import annotations

import pytest

from broker import Broker, errors
from broker.records import OutgoingMessage
from tests.support.fleet import TO, pair, self_managed


async def claimed_message(broker: Broker):
    account, [device, other] = await self_managed(broker, devices=2)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    await broker.messages.claim(device.ref)
    return account, device, other, mid


async def test_sent_then_delivered(broker: Broker) -> None:
    account, device, _, mid = await claimed_message(broker)
    change = await broker.messages.report_status(device.ref, mid, "sent")
    assert (change.id, change.status, change.changed) == (mid, "sent", True)
    assert (await broker.messages.report_status(device.ref, mid, "delivered")).changed
    record = await broker.message_log.get(account.shard, mid)
    assert record.status == "delivered"
    assert [(status, dev) for status, _, dev, _ in record.timeline] == [
        ("queued", device.device_id),
        ("claimed", device.device_id),
        ("sent", device.device_id),
        ("delivered", device.device_id),
    ]
    assert [at for _, at, _, _ in record.timeline] == sorted(at for _, at, _, _ in record.timeline)
    counts = await broker.message_log.account_counts(account)
    assert (counts["claimed"], counts["sent"], counts["delivered"]) == (0, 0, 1)
    assert [e.status for e in await broker.message_log.events(account.shard)] == [
        "queued",
        "claimed",
        "sent",
        "delivered",
    ]
    assert await broker.redis.zcard(broker.shard(account.shard).leased) == 0
    assert await broker.redis.zcard(broker.shard(account.shard).lease_checks) == 0


async def test_repeating_a_status_is_a_no_op(broker: Broker) -> None:
    account, device, _, mid = await claimed_message(broker)
    await broker.messages.report_status(device.ref, mid, "sent")
    events = len(await broker.message_log.events(account.shard))
    change = await broker.messages.report_status(device.ref, mid, "sent")
    assert (change.status, change.changed) == ("sent", False)
    assert len(await broker.message_log.events(account.shard)) == events
    assert (await broker.message_log.account_counts(account))["sent"] == 1


@pytest.mark.parametrize(
    ("first", "then"), [("delivered", "sent"), ("failed", "sent"), ("failed", "delivered"), ("delivered", "failed")]
)
async def test_moving_backwards_is_a_conflict_and_changes_nothing(broker: Broker, first: str, then: str) -> None:
    account, device, _, mid = await claimed_message(broker)
    await broker.messages.report_status(device.ref, mid, first, "carrier said no" if first == "failed" else "")
    before = (await broker.message_log.get(account.shard, mid), await broker.message_log.counters(account.shard))
    with pytest.raises(errors.InvalidTransition) as info:
        await broker.messages.report_status(device.ref, mid, then)
    assert (info.value.current, info.value.requested) == (first, then)
    assert (
        await broker.message_log.get(account.shard, mid),
        await broker.message_log.counters(account.shard),
    ) == before


async def test_failed_keeps_its_error(broker: Broker) -> None:
    account, device, _, mid = await claimed_message(broker)
    await broker.messages.report_status(device.ref, mid, "failed", "RESULT_ERROR_NO_SERVICE")
    record = await broker.message_log.get(account.shard, mid)
    assert (record.status, record.error) == ("failed", "RESULT_ERROR_NO_SERVICE")
    [*_, event] = await broker.message_log.events(account.shard)
    assert (event.status, event.error) == ("failed", "RESULT_ERROR_NO_SERVICE")


async def test_another_device_cannot_report(broker: Broker) -> None:
    account, _device, other, mid = await claimed_message(broker)
    before = await broker.message_log.counters(account.shard)
    with pytest.raises(errors.MessageNotFound):
        await broker.messages.report_status(other.ref, mid, "sent")
    stranger = await pair(broker, None)
    with pytest.raises(errors.MessageNotFound):
        await broker.messages.report_status(stranger.ref, mid, "sent")
    assert await broker.message_log.counters(account.shard) == before


async def test_a_queued_message_cannot_be_reported(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    with pytest.raises(errors.InvalidTransition):
        await broker.messages.report_status(device.ref, mid, "sent")
    assert (await broker.message_log.get(account.shard, mid)).status == "queued"


@pytest.mark.parametrize("status", ["queued", "claimed", "expired", "cancelled", "SENT", ""])
async def test_only_three_statuses_can_be_reported(broker: Broker, status: str) -> None:
    account, device, _, mid = await claimed_message(broker)
    with pytest.raises(errors.InvalidInput):
        await broker.messages.report_status(device.ref, mid, status)
    assert (await broker.message_log.get(account.shard, mid)).status == "claimed"


async def test_unknown_message(broker: Broker) -> None:
    _account, [device] = await self_managed(broker)
    for mid in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "../../x", "a" * 100):
        with pytest.raises(errors.MessageNotFound):
            await broker.messages.report_status(device.ref, mid, "sent")


async def test_cancel_a_queued_message(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    mid = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    change = await broker.messages.cancel(account, mid)
    assert (change.status, change.changed) == ("cancelled", True)
    assert (await broker.messages.cancel(account, mid)).changed is False
    assert await broker.messages.claim(device.ref) == []
    counts = await broker.message_log.account_counts(account)
    assert (counts["queued"], counts["cancelled"], counts["total"]) == (0, 1, 1)
    assert await broker.redis.zcard(broker.shard(account.shard).expiry) == 0


async def test_cancel_a_pool_message_frees_the_senders_turn(broker: Broker) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    mid = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "x")])).ids[0]
    await broker.messages.cancel(sender, mid)
    pool = broker.shard("p:default")
    assert await broker.redis.zcard(pool.pool) == 0
    assert await broker.redis.hget(pool.pool_state, f"n:{sender.id}") is None
    phone = await pair(broker, None)
    assert await broker.messages.claim(phone.ref) == []


async def test_cancel_once_claimed_is_a_conflict(broker: Broker) -> None:
    account, _device, _, mid = await claimed_message(broker)
    with pytest.raises(errors.InvalidTransition) as info:
        await broker.messages.cancel(account, mid)
    assert info.value.current == "claimed"
    assert (await broker.message_log.get(account.shard, mid)).status == "claimed"


async def test_cancel_by_another_account_is_not_found(broker: Broker) -> None:
    one = await broker.accounts.create("one@example.com", "api_only")
    two = await broker.accounts.create("two@example.com", "api_only")
    mid = (await broker.messages.enqueue(one, [OutgoingMessage(TO, "x")])).ids[0]
    with pytest.raises(errors.MessageNotFound):
        await broker.messages.cancel(two, mid)
    assert (await broker.message_log.get(one.shard, mid)).status == "queued"
