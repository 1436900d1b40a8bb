"""Pool claims skip a phone that fails everything, on every backend: after five failed
(not retryable) reports in a row its pool claims hand it nothing for ten minutes, other
phones take the pool's messages, the device shows the pause and why, and the phone is
back after the pause; a sent report ends the run (and a pause); retryable failures count
neither way; the phone's own queue is never skipped; removing it forgets the run."""

from __future__ import annotations

from broker import Broker, keys
from broker.records import Account, OutgoingMessage, RegisteredDevice
from tests.support.fleet import TO, pair, self_managed

SECOND = 1000


async def fail_in_a_row(
    broker: Broker, sender: Account, phone: RegisteredDevice, times: int, *, retryable: bool = False
) -> None:
    """``times`` pool messages, each claimed by ``phone`` and reported failed."""
    for i in range(times):
        await broker.messages.enqueue(sender, [OutgoingMessage(TO, f"fails {i}")])
        [held] = await broker.messages.claim(phone.ref, 1)  # a retryable one comes back first
        await broker.messages.report_status(
            phone.ref, held.id, "failed", f"RESULT_ERROR_GENERIC_FAILURE ({i})", retryable=retryable
        )


async def test_five_failures_in_a_row_pause_the_phone_for_the_pool_then_it_returns(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    broken = await pair(broker, None, "broken")
    await fail_in_a_row(broker, sender, broken, 4)
    assert (await broker.devices.info(broken.ref)).pool_paused_until_ms is None
    await fail_in_a_row(broker, sender, broken, 1)
    info = await broker.devices.info(broken.ref)
    assert info.pool_paused_until_ms == clock() + broker.settings.pool_skip_seconds * SECOND
    assert info.pool_pause_reason == "5 failed reports in a row, the last: RESULT_ERROR_GENERIC_FAILURE (0)"
    [mid] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "for a working phone")])).ids
    assert await broker.messages.claim(broken.ref) == []
    working = await pair(broker, None, "working")
    assert [m.id for m in await broker.messages.claim(working.ref)] == [mid]
    [later] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "after the pause")])).ids
    clock.advance(broker.settings.pool_skip_seconds * SECOND - 1)
    await broker.presence.heartbeat(broken.ref)
    assert await broker.messages.claim(broken.ref) == []
    clock.advance(1)
    assert [m.id for m in await broker.messages.claim(broken.ref)] == [later]
    assert (await broker.devices.info(broken.ref)).pool_paused_until_ms is None


async def test_a_sent_report_ends_the_run_and_retryable_failures_do_not_count(broker: Broker) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None)
    await fail_in_a_row(broker, sender, phone, 4)
    [ok] = (await broker.messages.enqueue(sender, [OutgoingMessage(TO, "goes out")])).ids
    await broker.messages.claim(phone.ref, 1)
    await broker.messages.report_status(phone.ref, ok, "sent")
    await fail_in_a_row(broker, sender, phone, 4)
    await fail_in_a_row(broker, sender, phone, 3, retryable=True)
    assert (await broker.devices.info(phone.ref)).pool_paused_until_ms is None
    await fail_in_a_row(broker, sender, phone, 1)
    assert (await broker.devices.info(phone.ref)).pool_paused_until_ms is not None


async def test_a_paused_phone_still_gets_its_own_queue(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    await fail_in_a_row(broker, account, phone, 5)  # the account's own pool
    assert (await broker.devices.info(phone.ref)).pool_paused_until_ms is not None
    [pooled, own] = (
        await broker.messages.enqueue(
            account, [OutgoingMessage(TO, "pool"), OutgoingMessage(TO, "own", phone.device_id)]
        )
    ).ids
    assert [m.id for m in await broker.messages.claim(phone.ref)] == [own]
    record = await broker.message_log.get(account.shard, pooled)
    assert record.status == "queued"


async def test_removing_a_phone_forgets_its_run(broker: Broker) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None)
    await fail_in_a_row(broker, sender, phone, 5)
    pool = broker.shard(keys.pool_shard())
    assert await broker.redis.hexists(pool.pool_failures, phone.device_id)
    await broker.devices.remove(phone.ref)
    assert not await broker.redis.hexists(pool.pool_failures, phone.device_id)
