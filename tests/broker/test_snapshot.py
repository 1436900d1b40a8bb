"""The snapshotter on a real Redis and a real store (SQLite and PostgreSQL): every
status change reaches the store, finished messages leave Redis after the hot
retention window and stay visible, one snapshotter per shard at a time, retention in
batches."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from broker import Broker, Settings, errors, keys
from broker.history import HistoryStore, database_url, metadata
from broker.records import MessageRecord, OutgoingMessage
from broker.snapshotter import GROUP, Snapshotter
from tests.support.backends import history_broker
from tests.support.e2e_server import ServerProcess, expect
from tests.support.fleet import TO, pair, self_managed
from tests.support.http_world import World

HOT_MS = 60_000


@pytest.fixture
async def hbroker(real_redis, scripts, clock, history_store: HistoryStore) -> Broker:
    """A broker on the newest real Redis with the history store attached; hot window 60 s."""
    return await history_broker(real_redis, scripts, clock, history_store, hot_retention_seconds=HOT_MS // 1000)


async def stored(store: HistoryStore) -> dict[str, MessageRecord]:
    return {r.id: r for _, r in await store.message_rows()}


async def test_every_status_change_reaches_the_store_and_the_stream_empties(hbroker: Broker, history_store) -> None:
    account, [device] = await self_managed(hbroker)
    queued = (
        await hbroker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id) for i in range(5)])
    ).ids
    claimed = [m.id for m in await hbroker.messages.claim(device.ref, 3)]
    await hbroker.messages.report_status(device.ref, claimed[0], "sent")
    await hbroker.messages.report_status(device.ref, claimed[1], "failed", "no signal")
    await hbroker.messages.cancel(account, queued[4])
    report = await Snapshotter(hbroker, history_store).run_once()
    assert report is not None and report.events == 11
    rows = await stored(history_store)
    assert {i: r.status for i, r in rows.items()} == {
        queued[0]: "sent",
        queued[1]: "failed",
        queued[2]: "claimed",
        queued[3]: "queued",
        queued[4]: "cancelled",
    }
    assert rows[queued[1]].error == "no signal"
    assert [step[0] for step in rows[queued[0]].timeline] == ["queued", "claimed", "sent"]
    for mid in queued:  # the store holds exactly what Redis holds
        assert rows[mid] == await hbroker.message_log.get(account.shard, mid)
    events = hbroker.shard(account.shard).events
    assert await hbroker.redis.xlen(events) == 0
    assert (await hbroker.redis.xpending(events, GROUP))["pending"] == 0


async def test_an_older_record_never_moves_a_stored_message_back(hbroker: Broker, history_store, clock) -> None:
    account, [device] = await self_managed(hbroker)
    [mid] = (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids
    await hbroker.messages.claim(device.ref)
    claimed = await hbroker.message_log.get(account.shard, mid)
    clock.advance(5)
    await hbroker.messages.report_status(device.ref, mid, "delivered")
    delivered = await hbroker.message_log.get(account.shard, mid)
    await history_store.upsert_messages(account.shard, [delivered], clock())
    await history_store.upsert_messages(account.shard, [claimed], clock() + 10)
    assert (await stored(history_store))[mid] == delivered


async def test_a_record_as_far_along_but_changed_later_replaces_the_stored_one(
    hbroker: Broker, history_store, clock
) -> None:
    """A Redis that lost its last second and took another path to the same timeline
    length: the newer record wins, an older one of that length does not."""
    account, [device] = await self_managed(hbroker)
    [mid] = (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids
    await hbroker.messages.claim(device.ref)
    claimed = await hbroker.message_log.get(account.shard, mid)
    lost = msgspec.structs.replace(
        claimed,
        status="sent",
        updated=claimed.updated + 10,
        timeline=[*claimed.timeline, ("sent", claimed.updated + 10, device.device_id, "")],
    )
    await history_store.upsert_messages(account.shard, [lost], clock())
    clock.advance(20)
    await hbroker.messages.report_status(device.ref, mid, "failed", "no signal")  # the path Redis took instead
    failed = await hbroker.message_log.get(account.shard, mid)
    assert len(failed.timeline) == len(lost.timeline) and failed.updated > lost.updated
    await history_store.upsert_messages(account.shard, [failed], clock())
    assert (await stored(history_store))[mid] == failed
    await history_store.upsert_messages(account.shard, [lost], clock())  # read again late: stays
    assert (await stored(history_store))[mid] == failed


async def test_finished_messages_leave_redis_after_the_window_and_stay_visible(
    hbroker: Broker, history_store, clock
) -> None:
    account, [device] = await self_managed(hbroker)
    ids = (
        await hbroker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id) for i in range(4)])
    ).ids
    for m in await hbroker.messages.claim(device.ref, 2):
        await hbroker.messages.report_status(device.ref, m.id, "sent")
    snapshotter = Snapshotter(hbroker, history_store)
    counts = await hbroker.message_log.account_counts(account)
    before = [await hbroker.message_log.get(account.shard, mid) for mid in ids]
    await snapshotter.run_once()
    clock.advance(HOT_MS - 1)
    assert (await snapshotter.run_once()).trimmed == 0
    clock.advance(1)
    assert (await snapshotter.run_once()).trimmed == 2
    messages = hbroker.shard(account.shard).messages
    assert [await hbroker.redis.hexists(messages, mid) for mid in ids] == [False, False, True, True]
    assert await hbroker.redis.zcard(hbroker.shard(account.shard).sent(account.id)) == 2
    assert [await hbroker.message_log.get(account.shard, mid) for mid in ids] == before
    page = await hbroker.message_log.page(account)
    assert [m.id for m in page.items] == ids[::-1] and page.next_cursor is None
    assert [m.id for m in (await hbroker.message_log.page(account, status="sent")).items] == ids[1::-1]
    assert await hbroker.message_log.account_counts(account) == counts
    with pytest.raises(errors.MessageNotFound):
        await hbroker.message_log.get("a:someoneelse", ids[0])


async def test_a_received_sms_is_stored_leaves_redis_after_the_window_and_stays_visible(
    hbroker: Broker, history_store, clock
) -> None:
    account, [device] = await self_managed(hbroker)
    received = await hbroker.inbound.receive(device.ref, TO, "hello", "2026-12-05T12:00:00Z", "ref-1")
    before = await hbroker.message_log.get(account.shard, received.id)
    snapshotter = Snapshotter(hbroker, history_store)
    await snapshotter.run_once()
    clock.advance(HOT_MS)
    assert (await snapshotter.run_once()).trimmed == 1
    assert not await hbroker.redis.hexists(hbroker.shard(account.shard).messages, received.id)
    kept = await hbroker.message_log.get(account.shard, received.id)
    assert kept == before and (kept.direction, kept.sender, kept.status) == ("inbound", TO, "received")
    assert [m.id for m in (await hbroker.message_log.page(account)).items] == [received.id]


async def test_a_message_changed_after_it_was_stored_is_not_trimmed_until_that_is_stored(
    hbroker: Broker, history_store, clock
) -> None:
    account, [device] = await self_managed(hbroker)
    [mid] = (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids
    await hbroker.messages.claim(device.ref)
    await hbroker.messages.report_status(device.ref, mid, "sent")
    snapshotter = Snapshotter(hbroker, history_store)
    await snapshotter.run_once()
    clock.advance(HOT_MS)
    await hbroker.messages.report_status(device.ref, mid, "delivered")
    clock.advance(HOT_MS)
    assert await snapshotter.trim() == (0, 0)  # the stored row says sent: Redis keeps the record
    assert (await hbroker.message_log.get(account.shard, mid)).status == "delivered"
    report = await snapshotter.run_once()  # stores the delivery first, then trims
    assert (report.stored, report.trimmed) == (1, 1)
    assert not await hbroker.redis.hexists(hbroker.shard(account.shard).messages, mid)
    assert (await hbroker.message_log.get(account.shard, mid)).status == "delivered"


async def test_pages_cross_the_redis_store_boundary_without_gaps_or_repeats(
    hbroker: Broker, history_store, clock
) -> None:
    account, [one, two] = await self_managed(hbroker, devices=2)
    snapshotter = Snapshotter(hbroker, history_store)
    ids = []
    for round_ in range(3):
        for i in range(10):
            device = (one, two)[i % 2]
            ids += (
                await hbroker.messages.enqueue(account, [OutgoingMessage(TO, f"r{round_}m{i}", device.device_id)])
            ).ids
            clock.advance(1)
        for device in (one, two):
            for m in await hbroker.messages.claim(device.ref, 3):
                await hbroker.messages.report_status(device.ref, m.id, "sent")
        await snapshotter.run_once()
        clock.advance(HOT_MS)  # each round's finished messages are trimmed by the next pass
    await snapshotter.run_once()
    assert await hbroker.redis.hlen(hbroker.shard(account.shard).messages) < len(ids)
    everything = {mid: await hbroker.message_log.get(account.shard, mid) for mid in ids}
    for status, device_id, limit in [
        (None, None, 7),
        ("sent", None, 4),
        ("queued", two.device_id, 3),
        (None, one.device_id, 5),
    ]:
        expected = [
            mid
            for mid in reversed(ids)
            if (status is None or everything[mid].status == status)
            and (device_id is None or everything[mid].device == device_id)
        ]
        seen, cursor = [], None
        while True:
            page = await hbroker.message_log.page(
                account, limit=limit, cursor=cursor, status=status, device_id=device_id
            )
            seen += [m.id for m in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected, (status, device_id)


async def test_a_stored_row_behind_redis_is_paged_as_redis_has_it(hbroker: Broker, history_store, clock) -> None:
    """Stored as sent, delivered since (not snapshotted yet): a page of sent messages
    leaves it out and a page of delivered ones shows it once, as Redis has it."""
    account, [device] = await self_managed(hbroker)
    ids = []
    for i in range(4):
        clock.advance(1)
        ids += (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id)])).ids
    for m in await hbroker.messages.claim(device.ref, 4):
        await hbroker.messages.report_status(device.ref, m.id, "sent")
    await Snapshotter(hbroker, history_store).run_once()
    await hbroker.messages.report_status(device.ref, ids[1], "delivered")
    assert (await history_store.message(account.shard, ids[1])).status == "sent"  # the row is behind
    delivered = await hbroker.message_log.get(account.shard, ids[1])
    for limit in (1, 2, 10):
        for status, expected in (("sent", [ids[3], ids[2], ids[0]]), ("delivered", [ids[1]])):
            seen, cursor = [], None
            while True:
                page = await hbroker.message_log.page(account, limit=limit, cursor=cursor, status=status)
                seen += page.items
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert [m.id for m in seen] == expected, (limit, status)
            assert all(m.status == status for m in seen)
    assert (await hbroker.message_log.page(account, status="delivered")).items == [delivered]


async def test_one_snapshotter_per_shard_and_a_dead_ones_shards_are_taken_over(
    hbroker: Broker, history_store, clock
) -> None:
    account, [device] = await self_managed(hbroker)
    both = {account.shard, keys.pool_shard()}
    first = Snapshotter(hbroker, history_store, lease_ms=1_000)
    second = Snapshotter(hbroker, history_store, lease_ms=1_000)
    assert await first.run_once() is not None  # alone: it holds both shards
    assert set(first.leases.held) == both
    assert await second.run_once() is None  # its share is one, but none is free
    assert await first.run_once() is not None  # two processes: it gives one up ...
    assert await second.run_once() is not None  # ... which the second takes
    assert len(first.leases.held) == len(second.leases.held) == 1
    assert set(first.leases.held) | set(second.leases.held) == both
    await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])
    await asyncio.sleep(1.05)  # the first one died: its lease runs out
    clock.advance(1_050)  # and so does its place among the live processes
    report = await second.run_once()
    assert report is not None and report.stored == 1
    assert set(second.leases.tokens()) == both
    assert await first.run_once() is None  # back from the dead: its shards are the second's


async def test_a_snapshotter_that_lost_its_shard_mid_pass_stores_but_does_not_trim(
    hbroker: Broker, history_store, clock
) -> None:
    """Storing is idempotent, so a stale holder's copy does no harm; trimming deletes from
    Redis, so it is fenced in its own script: a holder whose token is no longer the
    shard's trims nothing there."""
    account, [device] = await self_managed(hbroker)
    [mid] = (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids
    [claimed] = await hbroker.messages.claim(device.ref)
    await hbroker.messages.report_status(device.ref, claimed.id, "sent")
    stale = Snapshotter(hbroker, history_store, lease_ms=10_000)
    assert await stale.run_once() is not None
    held = stale.leases.tokens()
    clock.advance(HOT_MS)
    # Its lease lapses (a long pause) and another process takes the shard with a new token.
    lease = keys.shard_lease(account.shard)
    await hbroker.redis.delete(lease)
    assert await hbroker.locks.acquire(lease, "another-host", 10_000) is not None
    report = await stale.snapshot(held)  # the pass it was already in when it lost the shard
    assert (report.trimmed, report.fenced) == (0, 1)
    assert await hbroker.redis.hexists(hbroker.shard(account.shard).messages, mid)
    await stale.run_once()  # its next beat finds the shard taken
    assert account.shard not in stale.leases.tokens()
    assert await hbroker.redis.hexists(hbroker.shard(account.shard).messages, mid)


async def test_history_past_retention_is_deleted_in_batches(hbroker: Broker, history_store, clock) -> None:
    account, [device] = await self_managed(hbroker)
    day = 86_400_000
    template = await hbroker.message_log.get(
        account.shard, (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    )
    old = [
        msgspec.structs.replace(template, id=f"OLD{i:05d}", status="sent", updated=clock() - 91 * day)
        for i in range(2_500)
    ]
    young = [
        msgspec.structs.replace(template, id=f"NEW{i:05d}", status="sent", updated=clock() - 89 * day) for i in range(3)
    ]
    waiting = msgspec.structs.replace(template, id="QUEUED00001", updated=clock() - 91 * day)
    await history_store.upsert_messages(account.shard, [*old, *young, waiting], clock())
    assert await Snapshotter(hbroker, history_store).delete_expired_history() == 2_500
    assert sorted(await stored(history_store)) == ["NEW00000", "NEW00001", "NEW00002", "QUEUED00001"]


async def test_a_retention_backlog_is_deleted_until_none_is_left(hbroker: Broker, history_store, clock) -> None:
    """Batch after batch until one comes back short (far more than a hundred batches);
    a pass that runs out of time leaves the rest to the next pass, not 30 passes on."""
    account, [device] = await self_managed(hbroker)
    template = await hbroker.message_log.get(
        account.shard, (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])).ids[0]
    )
    old = [
        msgspec.structs.replace(template, id=f"OLD{i:05d}", status="sent", updated=clock() - 91 * 86_400_000)
        for i in range(1_050)
    ]
    await history_store.upsert_messages(account.shard, old, clock())
    cutoff = clock() - 90 * 86_400_000
    assert await history_store.delete_older_than(cutoff, batch=5, budget_s=60) == (1_050, True)  # 210 batches
    assert await history_store.count_messages() == 0

    await history_store.upsert_messages(account.shard, old[:250], clock())
    snapshotter = Snapshotter(hbroker, history_store, retention_batch=100, retention_budget_s=0)
    assert [(await snapshotter.run_once()).deleted for _ in range(4)] == [100, 100, 50, 0]
    assert await history_store.count_messages() == 1  # the queued one, stored by the first pass


async def test_accounts_devices_and_keys_are_mirrored_without_clear_secrets(hbroker: Broker, history_store) -> None:
    account, [kept, removed] = await self_managed(hbroker, devices=2)
    pool_phone = await pair(hbroker, None, "pool phone")
    key = await hbroker.api_keys.create(account, "backend")
    revoked = await hbroker.api_keys.create(account, "old")
    snapshotter = Snapshotter(hbroker, history_store)
    await snapshotter.mirror_directory()
    await hbroker.devices.remove(removed.ref)
    await hbroker.api_keys.revoke(account, revoked.info.id)
    await snapshotter.mirror_directory()
    accounts, devices, keys_ = await history_store.directory()
    assert accounts[account.id]["email"] == account.email
    assert sorted((shard, d["id"]) for shard, d in devices) == sorted(
        [(account.shard, kept.device_id), ("p:default", pool_phone.device_id)]
    )
    assert [msgspec.json.decode(r)["id"] for _, r in keys_] == [key.info.id]
    dump = repr((accounts, devices, keys_))
    for secret in (kept.device_token, pool_phone.device_token, key.api_key):
        assert secret not in dump


async def test_a_redis_that_lost_its_data_is_not_snapshotted(hbroker: Broker, history_store) -> None:
    account, [device] = await self_managed(hbroker)
    await hbroker.messages.enqueue(account, [OutgoingMessage(TO, "x", device.device_id)])
    await Snapshotter(hbroker, history_store).run_once()
    before = await history_store.directory()
    await hbroker.redis.flushall()
    await hbroker.start()
    assert await Snapshotter(hbroker, history_store).run_once() is None
    assert await history_store.directory() == before


async def test_status_changes_asked_of_a_trimmed_message(hbroker: Broker, history_store, clock) -> None:
    account, [device, other] = await self_managed(hbroker, devices=2)
    sent, cancelled, failed = (
        await hbroker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id) for i in range(3)])
    ).ids
    await hbroker.messages.cancel(account, cancelled)
    await hbroker.messages.claim(device.ref, 2)
    await hbroker.messages.report_status(device.ref, sent, "sent")
    await hbroker.messages.report_status(device.ref, failed, "failed", "no signal")
    snapshotter = Snapshotter(hbroker, history_store)
    await snapshotter.run_once()
    clock.advance(HOT_MS)
    assert (await snapshotter.run_once()).trimmed == 3
    counts = await hbroker.message_log.account_counts(account)
    # Repeats stay the usual no-ops; moves the rules refuse stay refused.
    assert not (await hbroker.messages.report_status(device.ref, sent, "sent")).changed
    assert not (await hbroker.messages.cancel(account, cancelled)).changed
    with pytest.raises(errors.InvalidTransition):
        await hbroker.messages.cancel(account, sent)
    with pytest.raises(errors.InvalidTransition):
        await hbroker.messages.report_status(device.ref, failed, "sent")
    # A delivery report after the hot window finds no record to change.
    with pytest.raises(errors.MessageNotFound):
        await hbroker.messages.report_status(device.ref, sent, "delivered")
    # Another device, or another account, learns nothing.
    with pytest.raises(errors.MessageNotFound):
        await hbroker.messages.report_status(other.ref, sent, "sent")
    stranger = await hbroker.accounts.create("stranger@example.com", "self_managed")
    with pytest.raises(errors.MessageNotFound):
        await hbroker.messages.cancel(stranger, cancelled)
    assert await hbroker.message_log.account_counts(account) == counts


def test_the_store_url_comes_from_the_settings(tmp_path) -> None:
    assert database_url(Settings(data_dir=str(tmp_path))) == f"sqlite+aiosqlite:///{tmp_path}/history.sqlite3"
    assert database_url(Settings(database_url="postgresql://u:p@db:5433/h")) == "postgresql+asyncpg://u:p@db:5433/h"
    assert database_url(Settings(database_url="postgresql+asyncpg://db/h")) == "postgresql+asyncpg://db/h"
    # libpq's sslmode is asyncpg's ssl; other parameters stay as they are.
    assert database_url(Settings(database_url="postgresql://u:p@db/h?sslmode=require")) == (
        "postgresql+asyncpg://u:p@db/h?ssl=require"
    )
    assert database_url(Settings(database_url="postgres://db/h?sslmode=verify-full&command_timeout=5")) == (
        "postgresql+asyncpg://db/h?command_timeout=5&ssl=verify-full"
    )
    assert database_url(Settings(database_url="postgresql+asyncpg://db/h?ssl=disable")) == (
        "postgresql+asyncpg://db/h?ssl=disable"
    )


async def test_a_postgresql_url_with_sslmode_connects(postgres_server) -> None:
    plain = postgres_server.url.replace("+asyncpg", "")
    for mode in ("disable", "prefer"):  # the test server has no certificate: prefer falls back
        store = HistoryStore(database_url(Settings(database_url=f"{plain}?sslmode={mode}")))
        try:
            await store.start()
            assert await store.get_meta("schema_version") is not None
        finally:
            await store.close()


async def test_sqlite_commits_reach_the_disk_before_they_return(tmp_path) -> None:
    """synchronous=FULL: in WAL mode NORMAL makes a commit durable only at the next
    checkpoint, and Redis may forget a message as soon as its row is committed."""
    store = HistoryStore(database_url(Settings(data_dir=str(tmp_path))))
    try:
        await store.start()
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
    finally:
        await store.close()


async def test_the_server_snapshots_into_postgresql_when_given_its_url(postgres_server, tmp_path) -> None:
    store = HistoryStore(postgres_server.url)
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    plain_url = postgres_server.url.replace("+asyncpg", "")
    server = ServerProcess(
        tmp_path, settings={"CONNECFY_DATABASE_URL": plain_url, "CONNECFY_SNAPSHOT_INTERVAL_MS": "100"}
    ).start()
    world = World(server)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        sent = [
            expect(
                owner.post("/api/sms/send/", json={"to": TO, "message": f"m{i}", "device_id": phone.device_id}), 202
            )["id"]
            for i in range(3)
        ]
        for task in phone.claim():
            expect(phone.report(task["id"], "sent"), 200)
        deadline = asyncio.get_running_loop().time() + 15
        while True:  # messages every pass, the directory every 15 passes
            statuses = {r.id: r.status for _, r in await store.message_rows()}
            accounts, devices, _ = await store.directory()
            if statuses == dict.fromkeys(sent, "sent") and [d["id"] for _, d in devices] == [phone.device_id]:
                break
            assert asyncio.get_running_loop().time() < deadline, (statuses, devices)
            await asyncio.sleep(0.1)
        assert list(accounts) == [owner.account["id"]]
        assert not (tmp_path / "history.sqlite3").exists()
    finally:
        world.close()
        await store.close()
        assert server.stop() == 0, server.output()
