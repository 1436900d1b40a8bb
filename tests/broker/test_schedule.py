"""Scheduled sends in the broker, on every backend: a message with a send_at ahead waits,
scheduled and unclaimable, until a release pass queues it when due (and wakes a waiting
phone); cancelled while scheduled it never goes out; its TTL or valid_for counts from
its time; bad schedules, expiries and SIM slots are refused naming the field (in a batch
the item), with nothing queued; a restore keeps what is scheduled."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker, errors, keys
from broker.records import OutgoingMessage, SweepReport
from tests.support.fleet import TO, pair, self_managed

SECOND = 1000


async def status(broker: Broker, shard: str, message_id: str) -> str:
    return (await broker.message_log.get(shard, message_id)).status


async def test_a_scheduled_message_waits_until_its_time_then_is_claimable(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    at = clock() + 60 * SECOND
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "later", device.device_id, send_at=at)])).ids
    record = await broker.message_log.get(account.shard, mid)
    assert (record.status, record.send_at, record.expires) == (
        "scheduled",
        at,
        at + broker.settings.message_ttl_seconds * SECOND,
    )
    assert await broker.messages.claim(device.ref) == []
    clock.advance(60 * SECOND - 1)
    assert await broker.schedule.release_due() == (0, False)
    assert await broker.messages.claim(device.ref) == []
    clock.advance(1)
    assert await broker.schedule.release_due() == (1, False)
    assert await status(broker, account.shard, mid) == "queued"
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]
    timeline = [entry[0] for entry in (await broker.message_log.get(account.shard, mid)).timeline]
    assert timeline == ["scheduled", "queued", "claimed"]
    assert await broker.redis.zcard(keys.SCHEDULED) == 0


async def test_the_index_keeps_the_earliest_time_of_each_shard(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    now = clock()
    for seconds in (30, 10, 20):
        await broker.messages.enqueue(
            account, [OutgoingMessage(TO, f"in {seconds}", device.device_id, send_at=now + seconds * SECOND)]
        )
    assert await broker.redis.zscore(keys.SCHEDULED, account.shard) == now + 10 * SECOND
    clock.advance(10 * SECOND)
    assert await broker.schedule.release_due() == (1, False)
    assert await broker.redis.zscore(keys.SCHEDULED, account.shard) == now + 20 * SECOND
    clock.advance(20 * SECOND)
    assert await broker.schedule.release_due() == (2, False)
    assert await broker.redis.zscore(keys.SCHEDULED, account.shard) is None


async def test_a_message_released_into_the_pool_wakes_a_waiting_phone(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None, online=False)
    [mid] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "at nine", send_at=clock() + SECOND)])).ids
    waiting = asyncio.create_task(broker.long_poll.claim(phone.ref, None, 30))
    try:
        await asyncio.sleep(0.3)
        assert not waiting.done()
        clock.advance(SECOND)
        assert (await broker.schedule.release_due())[0] == 1
        assert [m.id for m in (await asyncio.wait_for(waiting, 5)).messages] == [mid]
    finally:
        await broker.wakeups.close()


async def test_cancelled_while_scheduled_it_never_goes_out(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    [mid] = (
        await broker.messages.enqueue(
            account, [OutgoingMessage(TO, "never", device.device_id, send_at=clock() + SECOND)]
        )
    ).ids
    change = await broker.messages.cancel(account, mid)
    assert (change.status, change.changed) == ("cancelled", True)
    clock.advance(SECOND)
    assert await broker.schedule.release_due() == (0, False)
    assert await broker.messages.claim(device.ref) == []
    counts = await broker.message_log.account_counts(account)
    assert (counts["scheduled"], counts["queued"], counts["cancelled"]) == (0, 0, 1)


async def test_valid_for_counts_from_the_messages_time(broker: Broker, clock, settings) -> None:
    account, [device] = await self_managed(broker)
    now = clock()
    soon, later = (
        await broker.messages.enqueue(
            account,
            [
                OutgoingMessage(TO, "now, for 30 s", device.device_id, valid_for=30),
                OutgoingMessage(TO, "in 60 s, for 30 s", device.device_id, send_at=now + 60 * SECOND, valid_for=30),
            ],
        )
    ).ids
    assert (await broker.message_log.get(account.shard, soon)).expires == now + 30 * SECOND
    assert (await broker.message_log.get(account.shard, later)).expires == now + 90 * SECOND
    clock.advance(30 * SECOND)
    assert await broker.sweeper.sweep_all() == SweepReport(expired=1)
    assert await status(broker, account.shard, soon) == "expired"
    clock.advance(30 * SECOND)
    await broker.schedule.release_due()
    clock.advance(30 * SECOND)
    assert await broker.sweeper.sweep_all() == SweepReport(expired=1)
    assert await status(broker, account.shard, later) == "expired"


async def test_a_sim_slot_travels_with_a_device_message_to_its_phone(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    ids = (
        await broker.messages.enqueue(
            account,
            [OutgoingMessage(TO, "SIM 2", device.device_id, sim_slot=2), OutgoingMessage(TO, "any", device.device_id)],
        )
    ).ids
    claimed = await broker.messages.claim(device.ref)
    assert [(m.id, m.sim_slot) for m in claimed] == [(ids[0], 2), (ids[1], None)]
    assert (await broker.message_log.get(account.shard, ids[0])).sim_slot == 2


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"send_at": "tomorrow"}, "send_at"),
        ({"send_at": "2026-12-05T09:00:00"}, "send_at"),  # no time zone
        ({"send_at": "2026-02-30T09:00:00Z"}, "send_at"),
        ({"send_at": True}, "send_at"),
        ({"valid_for": 29}, "valid_for"),
        ({"valid_for": 86_401}, "valid_for"),
        ({"valid_for": "60"}, "valid_for"),
        ({"sim_slot": 0}, "sim_slot"),
        ({"sim_slot": 5}, "sim_slot"),
    ],
)
async def test_a_bad_schedule_expiry_or_sim_is_refused_naming_the_field(broker: Broker, changes, field) -> None:
    account, [device] = await self_managed(broker)
    with pytest.raises(errors.InvalidInput) as refused:
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id, **changes)])
    assert refused.value.field == field
    assert (await broker.message_log.account_counts(account))["total"] == 0


async def test_more_than_thirty_days_ahead_is_refused_and_a_past_time_means_now(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    with pytest.raises(errors.InvalidInput) as refused:
        await broker.messages.enqueue(
            account, [OutgoingMessage(TO, "x", device.device_id, send_at=clock() + 30 * 86_400 * SECOND + 1)]
        )
    assert refused.value.field == "send_at"
    [mid] = (
        await broker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id, send_at=clock() - SECOND)])
    ).ids
    assert await status(broker, account.shard, mid) == "queued"
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]


async def test_a_sim_slot_needs_a_device_and_a_bad_batch_item_queues_nothing(broker: Broker, clock) -> None:
    account, [device] = await self_managed(broker)
    with pytest.raises(errors.BrokerError) as refused:
        await broker.messages.enqueue(
            account,
            [
                OutgoingMessage(TO, "fine", device.device_id, send_at=clock() + SECOND),
                OutgoingMessage(TO, "pool, SIM 1", sim_slot=1),
                OutgoingMessage(TO, "fine too", device.device_id),
            ],
        )
    assert [(p.index, p.field) for p in refused.value.problems] == [(1, "sim_slot")]
    assert (await broker.message_log.account_counts(account))["total"] == 0
    assert await broker.redis.zcard(keys.SCHEDULED) == 0


async def test_a_scheduled_message_counts_against_the_quota_when_accepted(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    quota = broker.settings.quota_api_only
    later = [OutgoingMessage(TO, f"m{i}", send_at=clock() + SECOND) for i in range(quota)]
    await broker.messages.enqueue(sender, later)
    with pytest.raises(errors.QuotaExceeded):
        await broker.messages.enqueue(sender, [OutgoingMessage(TO, "one more")])


async def test_a_retryable_failure_puts_a_pool_message_back_for_another_phone(broker: Broker) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    one, two = await pair(broker, None, "one"), await pair(broker, None, "two")
    [mid] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "retry me")])).ids
    assert [m.id for m in await broker.messages.claim(one.ref)] == [mid]
    change = await broker.messages.report_status(one.ref, mid, "failed", "RESULT_ERROR_NO_SERVICE", retryable=True)
    assert (change.status, change.changed) == ("queued", True)
    again = await broker.messages.report_status(one.ref, mid, "failed", "RESULT_ERROR_NO_SERVICE", retryable=True)
    assert (again.status, again.changed) == ("queued", False)  # the phone's retry of its report
    record = await broker.message_log.get(keys.pool_shard(), mid)
    assert (record.status, record.device, record.timeline[-1][3]) == ("queued", "", "RESULT_ERROR_NO_SERVICE")
    assert [m.id for m in await broker.messages.claim(two.ref)] == [mid]


async def test_a_retryable_failure_of_a_device_message_waits_thirty_seconds_for_its_phone(
    broker: Broker, clock
) -> None:
    account, [device] = await self_managed(broker)
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "retry me", device.device_id)])).ids
    await broker.messages.claim(device.ref)
    assert (
        await broker.messages.report_status(device.ref, mid, "failed", "radio off", retryable=True)
    ).status == "queued"
    assert await status(broker, account.shard, mid) == "queued"
    clock.advance(29 * SECOND)
    await broker.schedule.release_due()
    assert await broker.messages.claim(device.ref) == []
    clock.advance(SECOND)
    assert await broker.schedule.release_due() == (1, False)
    assert [m.id for m in await broker.messages.claim(device.ref)] == [mid]


async def test_attempts_run_out_into_failed(broker: Broker, settings) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None)
    [mid] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "hopeless")])).ids
    for attempt in range(1, settings.max_leases + 1):
        assert [m.id for m in await broker.messages.claim(phone.ref)] == [mid]
        change = await broker.messages.report_status(phone.ref, mid, "failed", "no service", retryable=True)
        assert change.status == ("queued" if attempt < settings.max_leases else "failed")
    record = await broker.message_log.get(keys.pool_shard(), mid)
    assert (record.status, record.error, record.leases) == ("failed", "no service", settings.max_leases)
    with pytest.raises(errors.InvalidInput) as refused:
        await broker.messages.report_status(phone.ref, mid, "failed", retryable="yes")  # type: ignore[arg-type]
    assert refused.value.field == "retryable"


async def test_retryable_means_nothing_on_a_sent_report(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(TO, "fine", device.device_id)])).ids
    await broker.messages.claim(device.ref)
    change = await broker.messages.report_status(device.ref, mid, "sent", retryable=True)
    assert (change.status, change.changed) == ("sent", True)


async def test_a_sent_report_names_the_sim_that_sent_it(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    asked, unasked, failed = (
        await broker.messages.enqueue(
            account,
            [
                OutgoingMessage(TO, "SIM 2", device.device_id, sim_slot=2),
                OutgoingMessage(TO, "any SIM", device.device_id),
                OutgoingMessage(TO, "no SIM", device.device_id),
            ],
        )
    ).ids
    await broker.messages.claim(device.ref)
    await broker.messages.report_status(device.ref, asked, "sent", sim_slot=2)
    await broker.messages.report_status(device.ref, unasked, "sent", sim_slot=1)
    await broker.messages.report_status(device.ref, failed, "failed", "sim_slot_unavailable", sim_slot=3)
    assert (await broker.message_log.get(account.shard, asked)).sim_slot == 2
    assert (await broker.message_log.get(account.shard, unasked)).sim_slot == 1
    assert (await broker.message_log.get(account.shard, failed)).sim_slot is None  # only sent says which SIM sent
    await broker.messages.report_status(device.ref, unasked, "delivered", sim_slot=4)
    assert (await broker.message_log.get(account.shard, unasked)).sim_slot == 1
    for slot in (0, 5, True, "1"):
        with pytest.raises(errors.InvalidInput) as refused:
            await broker.messages.report_status(device.ref, asked, "sent", sim_slot=slot)  # type: ignore[arg-type]
        assert refused.value.field == "sim_slot"
