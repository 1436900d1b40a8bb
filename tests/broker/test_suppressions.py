"""Suppression lists: kept per sender, checked inside the enqueue script for every
recipient of a send or a batch, which then queues nothing."""

from __future__ import annotations

import pytest

from broker import Broker, errors
from broker.records import OutgoingMessage
from broker.suppressions import keyword
from tests.support.fleet import TO, redis_snapshot, self_managed

OTHER = "+15557654321"


async def test_a_send_to_a_suppressed_number_is_refused_and_changes_nothing(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    assert await broker.suppressions.add(account, TO, "replied STOP")
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.RecipientOptedOut) as refused:
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "hi", phone.device_id)])
    assert (refused.value.code, refused.value.field, refused.value.index) == ("recipient_opted_out", "to", 0)
    assert await redis_snapshot(broker.redis) == before
    # Another number goes, and so does this one once it is off the list.
    assert len((await broker.messages.enqueue(account, [OutgoingMessage(OTHER, "hi", phone.device_id)])).ids) == 1
    await broker.suppressions.remove(account, TO)
    assert len((await broker.messages.enqueue(account, [OutgoingMessage(TO, "hi", phone.device_id)])).ids) == 1


async def test_a_batch_names_every_suppressed_item_and_queues_nothing(broker: Broker) -> None:
    account = await broker.accounts.create("api@example.com", "api_only")
    await broker.suppressions.add(account, TO)
    batch = [
        OutgoingMessage(OTHER, "a"),
        OutgoingMessage(TO, "b"),
        OutgoingMessage(OTHER, "c"),
        OutgoingMessage(TO, "d"),
    ]
    before = await redis_snapshot(broker.redis)
    with pytest.raises(errors.RecipientOptedOut) as refused:
        await broker.messages.enqueue(account, batch)
    assert [(p.index, p.field) for p in refused.value.problems] == [(1, "to"), (3, "to")]
    assert "nothing was queued" in refused.value.detail
    assert await redis_snapshot(broker.redis) == before
    # With another bad item, one answer names them all (the script is never reached).
    with pytest.raises(errors.InvalidInput) as mixed:
        await broker.messages.enqueue(account, [*batch, OutgoingMessage("555", "e")])
    assert [(p.index, p.field) for p in mixed.value.problems] == [(1, "to"), (3, "to"), (4, "to")]
    assert await redis_snapshot(broker.redis) == before


async def test_each_sender_has_its_own_list(broker: Broker) -> None:
    one = await broker.accounts.create("one@example.com", "api_only")
    two = await broker.accounts.create("two@example.com", "api_only")
    await broker.suppressions.add(one, TO)
    assert one.shard == two.shard  # both in the platform pool, each with its own list
    assert len((await broker.messages.enqueue(two, [OutgoingMessage(TO, "hi")])).ids) == 1
    assert (await broker.suppressions.count(one), await broker.suppressions.count(two)) == (1, 0)


async def test_the_list_adds_once_pages_in_number_order_and_removes(broker: Broker) -> None:
    account, _ = await self_managed(broker)
    numbers = [f"+1555000{i:04d}" for i in range(7)]
    for number in reversed(numbers):
        assert await broker.suppressions.add(account, number, f"reason {number}")
    assert not await broker.suppressions.add(account, numbers[0], "again")  # kept as it was
    assert (await broker.suppressions.get(account, numbers[0])).reason == f"reason {numbers[0]}"
    first = await broker.suppressions.page(account, limit=4)
    assert [e.phone for e in first.items] == numbers[:4] and first.next_cursor == numbers[3]
    rest = await broker.suppressions.page(account, first.next_cursor, limit=4)
    assert [e.phone for e in rest.items] == numbers[4:] and rest.next_cursor is None
    await broker.suppressions.remove(account, numbers[2])
    with pytest.raises(errors.NotSuppressed):
        await broker.suppressions.remove(account, numbers[2])
    with pytest.raises(errors.InvalidInput):
        await broker.suppressions.add(account, "not a number")
    assert await broker.suppressions.count(account) == 6


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("STOP", "stop"),
        ("  stop \n", "stop"),
        ("Unsubscribe", "stop"),
        ("stopall", "stop"),
        ("QUIT", "stop"),
        ("cancel", "stop"),
        ("end", "stop"),
        ("START", "start"),
        ("unstop", "start"),
        ("yes", "start"),
        ("please stop", None),
        ("STOP!", None),
        ("", None),
    ],
)
def test_only_a_whole_message_of_one_keyword_counts(text: str, word: str | None) -> None:
    assert keyword(text) == word
