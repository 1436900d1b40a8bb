"""Received SMS: stored once per ref, in the history of the account they belong to, with
opt-out words kept on its suppression list."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker, errors
from broker.records import OutgoingMessage
from tests.support.fleet import TO, pair, redis_snapshot, self_managed

WHEN = 1_800_000_000_000


async def test_a_received_sms_is_stored_once_however_often_it_is_reported(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    reports = [broker.inbound.receive(phone.ref, TO, "Hello there", WHEN, "ref-1", 1) for _ in range(10)]
    results = await asyncio.gather(*reports)
    assert len({r.id for r in results}) == 1 and sum(r.new for r in results) == 1
    record = await broker.message_log.get(account.shard, results[0].id)
    assert (record.direction, record.status, record.sender, record.message, record.device) == (
        "inbound",
        "received",
        TO,
        "Hello there",
        phone.device_id,
    )
    assert (record.received_at, record.sim_slot, record.account) == (WHEN, 1, account.id)
    counts = await broker.message_log.account_counts(account)
    assert (counts["received"], counts["total"]) == (1, 0)  # total counts what the account sent
    page = await broker.message_log.page(account)
    assert [m.id for m in page.items] == [results[0].id]
    [event] = [e for e in await broker.message_log.events(account.shard) if e.id == results[0].id]
    assert event.status == "received"


async def test_stop_suppresses_the_sender_and_start_allows_it_again(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    stop = await broker.inbound.receive(phone.ref, TO, "  Stop ", WHEN, "r-stop")
    assert stop.suppression == "added"
    with pytest.raises(errors.RecipientOptedOut):
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "more news", phone.device_id)])
    assert (await broker.suppressions.get(account, TO)).reason == "replied STOP"
    assert (await broker.inbound.receive(phone.ref, TO, "STOP", WHEN, "r-stop-again")).suppression == ""
    start = await broker.inbound.receive(phone.ref, TO, "start", WHEN, "r-start")
    assert start.suppression == "removed"
    assert (
        len((await broker.messages.enqueue(account, [OutgoingMessage(TO, "welcome back", phone.device_id)])).ids) == 1
    )
    # Another account is not touched by this one's opt-out.
    other, [other_phone] = await self_managed(broker, "other@example.com")
    await broker.inbound.receive(phone.ref, TO, "STOP", WHEN, "r-stop-3")
    assert len((await broker.messages.enqueue(other, [OutgoingMessage(TO, "hi", other_phone.device_id)])).ids) == 1


async def test_a_pool_phones_sms_belongs_to_who_last_sent_to_that_number_through_it(broker: Broker) -> None:
    first = await broker.accounts.create("first@example.com", "api_only")
    second = await broker.accounts.create("second@example.com", "api_only")
    phone = await pair(broker, None, "pool phone")
    for sender in (first, second):
        [mid] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "code 123")])).ids
        assert [m.id for m in await broker.messages.claim(phone.ref)] == [mid]
        await broker.messages.report_status(phone.ref, mid, "sent")
        broker.clock.advance(1_000)
    reply = await broker.inbound.receive(phone.ref, TO, "STOP", WHEN, "pool-1")
    assert reply.account == second.id and reply.suppression == "added"
    assert (await broker.message_log.get(second.shard, reply.id)).direction == "inbound"
    with pytest.raises(errors.RecipientOptedOut):
        await broker.messages.enqueue(second, [OutgoingMessage(TO, "again")])
    assert len((await broker.messages.enqueue(first, [OutgoingMessage(TO, "still allowed")])).ids) == 1
    # A number nobody sent to: the operator's, and nobody's without an operator.
    assert (await broker.inbound.receive(phone.ref, "+15559990000", "who?", WHEN, "pool-2")).account == ""
    operator = await broker.accounts.create("op@example.com", "self_managed", operator=True)
    unknown = await broker.inbound.receive(phone.ref, "+15559990000", "hello?", WHEN, "pool-3")
    assert unknown.account == operator.id
    assert (await broker.message_log.get(operator.shard, unknown.id)).sender == "+15559990000"


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("from", {"sender": "555 1234 5678 9012"}),
        ("from", {"sender": "+1555"}),
        ("from", {"sender": ""}),
        ("message", {"message": ""}),
        ("message", {"message": "x" * 5_001}),
        ("ref", {"ref": ""}),
        ("ref", {"ref": "a/b"}),
        ("ref", {"ref": "r" * 65}),
        ("sim_slot", {"sim_slot": 8}),
        ("sim_slot", {"sim_slot": -1}),
        ("received_at", {"received_at": "yesterday"}),
        ("received_at", {"received_at": ""}),
    ],
)
async def test_bad_input_is_refused_and_stores_nothing(broker: Broker, field: str, values: dict) -> None:
    _, [phone] = await self_managed(broker)
    before = await redis_snapshot(broker.redis)
    arguments = {"sender": TO, "message": "hi", "received_at": WHEN, "ref": "ok", "sim_slot": None, **values}
    with pytest.raises(errors.InvalidInput) as refused:
        await broker.inbound.receive(phone.ref, **arguments)
    assert refused.value.field == field
    assert await redis_snapshot(broker.redis) == before


async def test_a_sender_name_is_kept_as_written_and_the_time_read_as_iso(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    reply = await broker.inbound.receive(phone.ref, "MyBank", "Your code is 1234", "2027-01-15T08:00:00.250Z", "named")
    record = await broker.message_log.get(account.shard, reply.id)
    assert (record.sender, record.received_at) == ("MyBank", 1_800_000_000_250)
