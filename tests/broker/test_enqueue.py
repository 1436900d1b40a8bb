"""Enqueue: routing, batches, quota, idempotency, TTL and counters."""

from __future__ import annotations

import pytest
from connecfy_client import e2e

from broker import Broker, errors
from broker.records import OutgoingMessage
from tests.support.fleet import TO, self_managed


async def self_managed_with_device(broker: Broker):
    account, [device] = await self_managed(broker)
    return account, device


async def test_device_targeted_message_waits_in_that_devices_queue(broker: Broker) -> None:
    account, device = await self_managed_with_device(broker)
    result = await broker.messages.enqueue(account, [OutgoingMessage(TO, "Hello", device.device_id)])
    assert not result.duplicate and len(result.ids) == 1
    record = await broker.message_log.get(account.shard, result.ids[0])
    assert (record.status, record.route, record.device, record.to, record.message) == (
        "queued",
        "device",
        device.device_id,
        TO,
        "Hello",
    )
    counters = await broker.message_log.counters(account.shard)
    assert counters[f"a:{account.id}:queued"] == 1
    assert counters[f"a:{account.id}:total"] == 1
    assert counters[f"d:{device.device_id}:queued"] == 1
    [event] = await broker.message_log.events(account.shard)
    assert (event.id, event.status, event.account) == (result.ids[0], "queued", account.id)


async def test_api_only_account_goes_to_the_platform_pool(broker: Broker) -> None:
    account = await broker.accounts.create("api@example.com", "api_only")
    result = await broker.messages.enqueue(account, [OutgoingMessage(TO, "Hi")])
    assert result.shard == "p:default"
    record = await broker.message_log.get("p:default", result.ids[0])
    assert (record.route, record.device, record.account) == ("pool", "", account.id)


async def test_api_only_account_may_not_name_a_device(broker: Broker) -> None:
    account = await broker.accounts.create("api@example.com", "api_only")
    with pytest.raises(errors.RoutingError):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "Hi", "abc")])
    assert await broker.message_log.counters("p:default") == {}


async def test_self_managed_without_device_goes_to_its_own_pool(broker: Broker) -> None:
    account, _ = await self_managed_with_device(broker)
    result = await broker.messages.enqueue(account, [OutgoingMessage(TO, "Hi")])
    record = await broker.message_log.get(account.shard, result.ids[0])
    assert (record.route, record.device) == ("pool", "")


async def test_segments_are_counted_at_enqueue(broker: Broker) -> None:
    account, device = await self_managed_with_device(broker)
    result = await broker.messages.enqueue(
        account,
        [
            OutgoingMessage(TO, "a" * 161, device.device_id),
            OutgoingMessage(TO, "привет", device.device_id),
        ],
    )
    long, cyrillic = [await broker.message_log.get(account.shard, i) for i in result.ids]
    assert (long.segments, cyrillic.segments) == (2, 1)


async def test_message_ids_are_unique_and_time_sortable(broker: Broker, clock) -> None:
    account, device = await self_managed_with_device(broker)
    ids = []
    for _ in range(5):
        ids += (await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)] * 3)).ids
        clock.advance(1)
    assert len(set(ids)) == 15
    assert ids[0::3] == sorted(ids[0::3])


async def test_batch_with_one_unknown_device_queues_nothing(broker: Broker) -> None:
    account, device = await self_managed_with_device(broker)
    batch = [OutgoingMessage(TO, "ok", device.device_id), OutgoingMessage(TO, "bad", "nosuchdevice")]
    with pytest.raises(errors.DeviceNotFound) as info:
        await broker.messages.enqueue(account, batch)
    assert info.value.index == 1
    assert await broker.message_log.counters(account.shard) == {}
    assert await broker.message_log.events(account.shard) == []


@pytest.mark.parametrize(
    "to",
    [
        "5551234567",
        "+1",
        "+1555",
        "not a number",
        "+999123456789",
        "",
        "+1 555 123 4567",
        "+1555CALLNOW",
        "+15551234567;ext=2",
        "+0123456789",
        "+1234567890123456",
        " +15551234567",
        "+1５５５1234567",
    ],
)
async def test_bad_numbers_are_refused_and_nothing_is_queued(broker: Broker, to: str) -> None:
    account, device = await self_managed_with_device(broker)
    with pytest.raises(errors.InvalidInput) as info:
        await broker.messages.enqueue(
            account, [OutgoingMessage(TO, "fine", device.device_id), OutgoingMessage(to, "x", device.device_id)]
        )
    assert (info.value.field, info.value.index) == ("to", 1)
    assert await broker.message_log.counters(account.shard) == {}


@pytest.mark.parametrize("text", ["", "x" * 1601], ids=["empty", "1601-chars"])
async def test_empty_or_overlong_message_is_refused(broker: Broker, text: str) -> None:
    account, device = await self_managed_with_device(broker)
    with pytest.raises(errors.InvalidInput):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, text, device.device_id)])
    assert await broker.message_log.counters(account.shard) == {}


async def test_batch_size_is_bounded(broker: Broker, settings) -> None:
    account, _device = await self_managed_with_device(broker)
    with pytest.raises(errors.InvalidInput):
        await broker.messages.enqueue(account, [])
    with pytest.raises(errors.InvalidInput):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")] * (settings.batch_max_messages + 1))


async def test_daily_quota_counts_messages_and_refuses_whole_batches(broker: Broker, clock) -> None:
    account = await broker.accounts.create("api@example.com", "api_only", daily_quota=5)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")] * 3)
    with pytest.raises(errors.QuotaExceeded) as info:
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")] * 3)
    assert (info.value.used, info.value.quota) == (3, 5)
    assert (await broker.message_log.account_counts(account))["total"] == 3
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")] * 2)
    with pytest.raises(errors.QuotaExceeded):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")])
    clock.advance(86_400_000)
    await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")] * 5)
    assert (await broker.message_log.account_counts(account))["total"] == 10


async def test_idempotency_key_returns_the_first_ids_and_queues_nothing(broker: Broker) -> None:
    account, device = await self_managed_with_device(broker)
    batch = [OutgoingMessage(TO, "one", device.device_id), OutgoingMessage(TO, "two", device.device_id)]
    first = await broker.messages.enqueue(account, batch, idempotency_key="order-17")
    again = await broker.messages.enqueue(account, batch, idempotency_key="order-17")
    assert again.duplicate and again.ids == first.ids
    assert (await broker.message_log.account_counts(account))["total"] == 2
    with pytest.raises(errors.IdempotencyKeyReused):
        await broker.messages.enqueue(account, batch[:1], idempotency_key="order-17")
    other = await broker.messages.enqueue(account, batch, idempotency_key="order-18")
    assert not other.duplicate and set(other.ids).isdisjoint(first.ids)


async def test_idempotency_keys_are_per_account(broker: Broker) -> None:
    first = await broker.accounts.create("a@example.com", "api_only")
    second = await broker.accounts.create("b@example.com", "api_only")
    one = await broker.messages.enqueue(first, [OutgoingMessage(TO, "x")], idempotency_key="k")
    two = await broker.messages.enqueue(second, [OutgoingMessage(TO, "y")], idempotency_key="k")
    assert not two.duplicate and two.ids != one.ids


async def test_duplicate_does_not_spend_quota(broker: Broker) -> None:
    account = await broker.accounts.create("api@example.com", "api_only", daily_quota=1)
    first = await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")], idempotency_key="k")
    again = await broker.messages.enqueue(account, [OutgoingMessage(TO, "x")], idempotency_key="k")
    assert again.ids == first.ids


async def test_unknown_account_shard_device_is_not_found(broker: Broker) -> None:
    _one, device = await self_managed_with_device(broker)
    other = await broker.accounts.create("other@example.com", "self_managed")
    with pytest.raises(errors.DeviceNotFound):
        await broker.messages.enqueue(other, [OutgoingMessage(TO, "x", device.device_id)])
    assert await broker.message_log.counters(other.shard) == {}


async def test_an_encrypted_message_is_charged_its_bound_and_handed_over_as_sent(broker: Broker) -> None:
    """On every backend: the envelope is kept as sent, with "encrypted" and the segment
    bound, and the claim hands it over marked; a bad envelope or an API-only sender is an
    item error naming its field, and nothing of the batch is queued."""
    account, [device] = await self_managed(broker)
    text = "Ж" * 100  # 200 UTF-8 bytes: at most 4 segments
    envelope = e2e.encrypt(text, "pw")
    [sealed, plain] = (
        await broker.messages.enqueue(
            account,
            [
                OutgoingMessage(TO, envelope, device.device_id, encrypted=True),
                OutgoingMessage(TO, text, device.device_id),
            ],
        )
    ).ids
    record = await broker.message_log.get(account.shard, sealed)
    assert (record.encrypted, record.message, record.segments) == (True, envelope, 4)
    assert (await broker.message_log.get(account.shard, plain)).encrypted is False
    claimed = {m.id: m for m in await broker.messages.claim(device.ref, 10)}
    assert claimed[sealed].encrypted and claimed[sealed].message == envelope and claimed[sealed].segments == 4
    assert not claimed[plain].encrypted and claimed[plain].segments == 2

    with pytest.raises(errors.InvalidInput) as raised:
        await broker.messages.enqueue(
            account,
            [OutgoingMessage(TO, envelope, encrypted=True), OutgoingMessage(TO, "v1:AAAA", encrypted=True)],
        )
    assert [(p.index, p.field) for p in raised.value.problems] == [(1, "message")]
    sender = await broker.accounts.create("pool-sender@example.com", "api_only")
    with pytest.raises(errors.InvalidInput) as raised:
        await broker.messages.enqueue(sender, [OutgoingMessage(TO, envelope, encrypted=True)])
    assert raised.value.field == "encrypted"
    assert [m.id for m in await broker.messages.claim(device.ref, 10)] == []
