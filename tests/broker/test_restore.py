"""``connecfy restore``: after a total loss of Redis, the history store gives back the same
accounts, devices, API keys, unfinished messages and inbox threads, and phones go on with
their old tokens."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import redis.exceptions
from connecfy_client import e2e

from broker import Broker, keys
from broker.history import HistoryStore, messages
from broker.records import LimitChange, OutgoingMessage, SendWindow
from broker.restore import RestoreRefused, restore
from broker.snapshotter import Snapshotter
from tests.support.backends import history_broker
from tests.support.e2e_server import CONNECFY, ServerProcess, expect, expect_error, server_env
from tests.support.fleet import TO, pair, self_managed
from tests.support.http_world import PASSWORD, Phone, World


@pytest.fixture
async def hbroker(real_redis, scripts, clock, history_store: HistoryStore) -> Broker:
    return await history_broker(real_redis, scripts, clock, history_store)


async def _view(broker: Broker, owner, sender, devices) -> dict:
    """What people see of the accounts: everything restore must give back."""
    view = {}
    for account in (owner, sender):
        view[account.id] = (
            await broker.accounts.get(account.id),
            await broker.accounts.find_by_email(account.email),
            [k.id for k in await broker.api_keys.list_for(account)],
            await broker.message_log.account_counts(account),
            await broker.message_log.page(account, limit=500),
        )
    view["devices"] = (
        [_device_view(d) for d in await broker.devices.list_for(owner)],
        [_device_view(d) for d in await broker.devices.list_for(None)],
    )
    view["tokens"] = [await broker.devices.find_by_token(d.device_token) for d in devices]
    return view


def _device_view(device) -> tuple:
    """A device as listed, without presence (restore brings no heartbeat back)."""
    return (
        device.device_id,
        device.device_name,
        device.phone_number,
        device.segments_per_minute,
        device.segments_per_day,
        device.created_ms,
        device.counts,
    )


async def test_restore_gives_back_accounts_devices_keys_and_queued_messages(hbroker: Broker, history_store) -> None:
    owner, [first, second] = await self_managed(hbroker, devices=2)
    await hbroker.limits.set(owner.id, _raised_limits())
    owner = await hbroker.accounts.get(owner.id)
    sender = await hbroker.accounts.create("api@example.com", "api_only", password_hash="argon2-hash")
    pool_phone = await pair(hbroker, None, "pool phone")
    owner_key = await hbroker.api_keys.create(owner, "backend")
    sender_key = await hbroker.api_keys.create(sender, "shop")
    own = (
        await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, f"own {i}", first.device_id) for i in range(4)])
    ).ids
    own_pool = (await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, "anyone of mine")])).ids
    pooled = (await hbroker.messages.enqueue(sender, [OutgoingMessage(TO, f"pooled {i}") for i in range(3)])).ids
    [done, held] = [m.id for m in await hbroker.messages.claim(first.ref, 2)]
    await hbroker.messages.report_status(first.ref, done, "delivered")
    [pool_done] = [m.id for m in await hbroker.messages.claim(pool_phone.ref, 1)]
    await hbroker.messages.report_status(pool_phone.ref, pool_done, "failed", "no signal")
    await Snapshotter(hbroker, history_store).run_once()
    before = await _view(hbroker, owner, sender, [first, second, pool_phone])

    await hbroker.redis.flushall()
    await hbroker.start()  # a fresh server on the empty Redis
    assert await hbroker.devices.find_by_token(first.device_token) is None
    report = await restore(hbroker, history_store)
    assert (report.accounts, report.devices, report.api_keys) == (2, 3, 2)
    assert (report.live_messages, report.stored_messages) == (6, 8)
    assert await _view(hbroker, owner, sender, [first, second, pool_phone]) == before

    assert (await hbroker.api_keys.find_account(owner_key.api_key)).id == owner.id
    assert (await hbroker.api_keys.find_account(sender_key.api_key)).id == sender.id
    # Phones go on with their old tokens and get what was waiting for them, in order.
    ref = await hbroker.devices.find_by_token(first.device_token)
    for device in (second, pool_phone):
        await hbroker.presence.heartbeat(device.ref)
    assert [m.id for m in await hbroker.messages.claim(ref, 2)] == own[2:]  # its queue, before the pool
    assert [m.id for m in await hbroker.messages.claim(second.ref, 10)] == own_pool
    assert [m.id for m in await hbroker.messages.claim(pool_phone.ref, 10)] == pooled[1:]
    await hbroker.messages.report_status(first.ref, held, "sent")  # the lease held before the loss still counts
    assert (await hbroker.message_log.get(owner.shard, held)).status == "sent"
    assert (await hbroker.message_log.get(owner.shard, done)).status == "delivered"  # from the store
    # The snapshotter goes on where it stopped.
    snapshotter = Snapshotter(hbroker, history_store)
    assert (await snapshotter.run_once()).stored == 6
    assert (await history_store.message(owner.shard, held)).status == "sent"


async def test_received_sms_survive_a_restore_from_the_store(hbroker: Broker, history_store) -> None:
    owner, [phone] = await self_managed(hbroker)
    received = await hbroker.inbound.receive(phone.ref, TO, "see you", "2026-12-05T12:00:00Z", "r-1")
    [sent] = (await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, "hi", phone.device_id)])).ids
    await Snapshotter(hbroker, history_store).run_once()
    counts = await hbroker.message_log.account_counts(owner)
    assert (counts["received"], counts["total"]) == (1, 1)

    await hbroker.redis.flushall()
    await hbroker.start()
    await restore(hbroker, history_store)
    kept = await hbroker.message_log.get(owner.shard, received.id)
    assert (kept.direction, kept.sender, kept.message, kept.status) == ("inbound", TO, "see you", "received")
    assert await hbroker.message_log.account_counts(owner) == counts  # received apart from total, as before
    page = await hbroker.message_log.page(owner)
    assert sorted(m.id for m in page.items) == sorted([sent, received.id])  # one ms: either order


async def test_the_inbox_threads_survive_a_restore_and_move_on_as_before(hbroker: Broker, history_store, clock) -> None:
    """One per number that wrote, at its newest message either way, in the shard of the
    account's messages (an API-only account's is its pool shard); a number only sent to
    has none."""
    ann, bob, cat = "+15553330001", "+15553330002", "+15553330003"
    owner, [phone] = await self_managed(hbroker)
    sender = await hbroker.accounts.create("api@example.com", "api_only")
    pool_phone = await pair(hbroker, None, "pool phone")
    steps = [
        lambda: hbroker.inbound.receive(phone.ref, ann, "Open on Sunday?", "2026-12-05T12:00:00Z", "r-1"),
        lambda: hbroker.messages.enqueue(owner, [OutgoingMessage(ann, "Yes, 10 to 4.", phone.device_id)]),
        lambda: hbroker.inbound.receive(phone.ref, "BANK", "Your code is 1234", "2026-12-05T12:00:00Z", "r-2"),
        lambda: hbroker.messages.enqueue(owner, [OutgoingMessage(bob, "Your order is ready.", phone.device_id)]),
        lambda: hbroker.messages.enqueue(sender, [OutgoingMessage(cat, "Table for two at 8?")]),
    ]
    for step in steps:
        clock.advance(1)
        await step()
    [task] = await hbroker.messages.claim(pool_phone.ref)
    await hbroker.messages.report_status(pool_phone.ref, task.id, "sent")
    clock.advance(1)
    assert (await hbroker.inbound.receive(pool_phone.ref, cat, "Make it 9", "2026-12-05T12:00:00Z", "r-3")).account == (
        sender.id
    )
    await Snapshotter(hbroker, history_store).run_once()
    before = {a.id: (await hbroker.message_log.conversations(a)).items for a in (owner, sender)}
    assert [m.to or m.sender for m in before[owner.id]] == ["BANK", ann]
    assert [m.sender for m in before[sender.id]] == [cat]

    await hbroker.redis.flushall()
    await hbroker.start()
    report = await restore(hbroker, history_store)
    assert report.threads == 3
    assert {a.id: (await hbroker.message_log.conversations(a)).items for a in (owner, sender)} == before
    # They go on as before: a reply moves its thread up, replacing its old place.
    clock.advance(1)
    [reply] = (await hbroker.messages.enqueue(owner, [OutgoingMessage(ann, "See you!", phone.device_id)])).ids
    assert [m.id for m in (await hbroker.message_log.conversations(owner)).items] == [reply, before[owner.id][0].id]
    shard = hbroker.shard(owner.shard)
    assert await hbroker.redis.zcard(shard.threads(owner.id)) == 2


def _raised_limits() -> LimitChange:
    return LimitChange(sends_per_second=50, daily_quota=20_000)


async def test_restore_refuses_a_redis_that_is_not_empty(hbroker: Broker, history_store) -> None:
    await self_managed(hbroker)
    await Snapshotter(hbroker, history_store).run_once()
    before = await hbroker.redis.dbsize()
    with pytest.raises(RestoreRefused):
        await restore(hbroker, history_store)
    assert await hbroker.redis.dbsize() == before
    await hbroker.redis.delete(keys.HISTORY_EPOCH)
    await hbroker.accounts.create("late@example.com", "self_managed")
    with pytest.raises(RestoreRefused):
        await restore(hbroker, history_store)


async def test_restore_reads_only_unfinished_messages_page_by_page(hbroker: Broker, history_store, clock) -> None:
    """Finished messages are counted by the database and never read (a row restore
    cannot decode shows it); unfinished ones come a page at a time, in order across
    the pages."""
    owner, [phone] = await self_managed(hbroker)
    sender = await hbroker.accounts.create("api@example.com", "api_only")
    other = await hbroker.accounts.create("other@example.com", "api_only")
    pool_phone = await pair(hbroker, None, "pool phone")
    own = (
        await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, f"own {i}", phone.device_id) for i in range(5)])
    ).ids
    pooled = []
    for i in range(3):  # two senders' pool messages interleaved, oldest first
        for account in (sender, other):
            clock.advance(1)  # ids in order of sending
            pooled += (await hbroker.messages.enqueue(account, [OutgoingMessage(TO, f"{i}")])).ids
    [done, held] = [m.id for m in await hbroker.messages.claim(phone.ref, 2)]
    await hbroker.messages.report_status(phone.ref, done, "sent")
    await Snapshotter(hbroker, history_store).run_once()
    counts = await hbroker.message_log.account_counts(owner)
    # A finished message from long ago whose record this version could not decode.
    async with history_store.engine.begin() as conn:
        await conn.execute(
            messages.insert(),
            [
                {
                    "id": "00000000000000000000000001",
                    "shard": owner.shard,
                    "account": owner.id,
                    "device": phone.device_id,
                    "status": "delivered",
                    "created": 1,
                    "updated": 2,
                    "version": 3,
                    "stored_at": 3,
                    "record": "{an older format",
                }
            ],
        )

    await hbroker.redis.flushall()
    await hbroker.start()
    report = await restore(hbroker, history_store, chunk=2)
    assert (report.live_messages, report.stored_messages) == (10, 12)
    assert await hbroker.message_log.account_counts(owner) == {
        **counts,
        "delivered": counts["delivered"] + 1,
        "total": counts["total"] + 1,
    }
    assert (await hbroker.message_log.get(owner.shard, held)).status == "claimed"
    await hbroker.presence.heartbeat(pool_phone.ref)
    assert [m.id for m in await hbroker.messages.claim(phone.ref, 10)] == own[2:]
    assert [m.id for m in await hbroker.messages.claim(pool_phone.ref, 10)] == pooled  # the senders took turns


@pytest.mark.parametrize("broken", ["queue", "counters"])
async def test_a_restore_that_stopped_part_way_is_run_again(hbroker: Broker, history_store, broken) -> None:
    """A restore fails part-way (a key of the wrong type: while writing messages, or in
    the final step); nothing reaches the restored data in between, the epoch is not
    set, and the restore, run again, gives back the same as one that never failed."""
    owner, [first, second] = await self_managed(hbroker, devices=2)
    sender = await hbroker.accounts.create("api@example.com", "api_only", password_hash="argon2-hash")
    pool_phone = await pair(hbroker, None, "pool phone")
    owner_key = await hbroker.api_keys.create(owner, "backend")
    await hbroker.api_keys.create(sender, "shop")
    own = (
        await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, f"own {i}", first.device_id) for i in range(4)])
    ).ids
    await hbroker.messages.enqueue(sender, [OutgoingMessage(TO, f"pooled {i}") for i in range(3)])
    [done, _held] = [m.id for m in await hbroker.messages.claim(first.ref, 2)]
    await hbroker.messages.report_status(first.ref, done, "delivered")
    await Snapshotter(hbroker, history_store).run_once()
    before = await _view(hbroker, owner, sender, [first, second, pool_phone])

    await hbroker.redis.flushall()
    await hbroker.start()
    broken_key = getattr(hbroker.shard(owner.shard), broken)
    await hbroker.redis.set(broken_key, "not a hash or a sorted set")
    with pytest.raises(redis.exceptions.ResponseError):
        await restore(hbroker, history_store)
    assert not await hbroker.redis.exists(keys.HISTORY_EPOCH)
    if broken == "queue":  # stopped before the final step: nothing lets anyone in yet
        assert await hbroker.devices.find_by_token(first.device_token) is None
        assert await hbroker.redis.get(keys.email_index(owner.email)) is None
        # Not even this process, which remembers the key's index from before the loss.
        assert await hbroker.api_keys.find_account(owner_key.api_key) is None
        assert await hbroker.redis.smembers(keys.SHARDS) == {keys.pool_shard().encode()}
        assert not await hbroker.redis.exists(hbroker.shard(owner.shard).counters)

    await hbroker.redis.delete(broken_key)  # the cause put right, the restore runs again
    report = await restore(hbroker, history_store)
    assert (report.live_messages, report.stored_messages) == (6, 7)
    assert await _view(hbroker, owner, sender, [first, second, pool_phone]) == before
    assert [m.id for m in await hbroker.messages.claim(first.ref, 10)] == own[2:]
    with pytest.raises(RestoreRefused):  # done: a third run is refused
        await restore(hbroker, history_store)


def test_connecfy_restore_after_redis_lost_everything(tmp_path: Path) -> None:
    settings = {"CONNECFY_SNAPSHOT_INTERVAL_MS": "100"}
    server = ServerProcess(tmp_path, settings=settings).start()
    world = World(server)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        key = world.api_key(owner)["api_key"]
        sent = [
            expect(world.external({"api_key": key, "to": TO, "message": f"m{i}", "device_id": phone.device_id}), 202)[
                "id"
            ]
            for i in range(3)
        ]
        [task, *_] = phone.claim(limit=1)
        expect(phone.report(task["id"], "sent"), 200)
        deadline = time.monotonic() + 15
        # The directory (devices, keys) is mirrored every few passes: the key, made after
        # the phone was paired, may be stored a directory pass (15 snapshot passes) later.
        while (
            _stored_devices(tmp_path) != [phone.device_id]
            or _stored_api_keys(tmp_path) != 1
            or _stored_statuses(tmp_path)
            != {
                sent[0]: "sent",
                sent[1]: "queued",
                sent[2]: "queued",
            }
        ):
            assert time.monotonic() < deadline, (
                _stored_devices(tmp_path),
                _stored_api_keys(tmp_path),
                _stored_statuses(tmp_path),
            )
            time.sleep(0.1)
    finally:
        world.close()
        assert server.stop() == 0, server.output()

    shutil.rmtree(tmp_path / "redis")  # Redis lost everything, its append-only file too
    server = ServerProcess(tmp_path, settings=settings).start()
    world = World(server)
    try:
        phone = Phone(phone.device_id, phone.token, phone.name, world.api(**{"X-Device-Token": phone.token}))
        expect_error(phone.tasks(), 401)
        result = subprocess.run(
            [str(CONNECFY), "restore", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "1 accounts, 1 devices, 1 API keys, 0 inbox threads and 2 unfinished messages" in result.stdout
        again = subprocess.run(
            [str(CONNECFY), "restore", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=60,
        )
        assert again.returncode == 1 and "not empty" in again.stderr
        assert [t["id"] for t in phone.claim()] == sent[1:]
        user = world.api()
        expect(user.post("/api/auth/login/", json={"email": owner.account["email"], "password": PASSWORD}), 200)
        listed = expect(user.get("/api/sms/"), 200)
        assert [(m["id"], m["status"]) for m in listed["items"]] == [
            (sent[2], "claimed"),
            (sent[1], "claimed"),
            (sent[0], "sent"),
        ]
        assert (
            expect(world.external({"api_key": key, "to": TO, "message": "after", "device_id": phone.device_id}), 202)[
                "status"
            ]
            == "queued"
        )
    finally:
        world.close()
        assert server.stop() == 0, server.output()


def _stored_statuses(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "history.sqlite3") as db:
        return dict(db.execute("SELECT id, status FROM messages").fetchall())


def _stored_devices(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "history.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT id FROM devices")]


def _stored_api_keys(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "history.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM api_keys").fetchone()[0])


async def test_restore_keeps_schedules_priorities_expiry_sims_and_send_windows(
    hbroker: Broker, history_store, clock
) -> None:
    owner, [phone] = await self_managed(hbroker)
    sender = await hbroker.accounts.create("api@example.com", "api_only")
    pool_phone = await pair(hbroker, None, "pool phone")
    window = SendWindow("07:00", "10:00", "UTC")  # the test clock reads 08:00 UTC
    await hbroker.send_windows.set(phone.ref, window)
    d = phone.device_id
    normal, urgent, later = (
        await hbroker.messages.enqueue(
            owner,
            [
                OutgoingMessage(TO, "normal", d),
                OutgoingMessage(TO, "urgent", d, sim_slot=2, valid_for=600, priority="high"),
                OutgoingMessage(TO, "later", d, send_at=clock() + 60_000, priority="high"),
            ],
        )
    ).ids
    plain, code = (
        await hbroker.messages.enqueue(
            sender, [OutgoingMessage(TO, "plain"), OutgoingMessage(TO, "code", priority="high")]
        )
    ).ids
    before = {
        mid: await hbroker.message_log.get(shard, mid)
        for shard, mid in [(owner.shard, m) for m in (normal, urgent, later)]
        + [(sender.shard, m) for m in (plain, code)]
    }
    await Snapshotter(hbroker, history_store).run_once()
    await hbroker.redis.flushall()
    await hbroker.start()
    await restore(hbroker, history_store)
    for mid, record in before.items():
        assert await hbroker.message_log.get(sender.shard if record.route == "pool" else owner.shard, mid) == record
    assert before[urgent].priority == "high" and before[urgent].sim_slot == 2
    assert (await hbroker.devices.info(phone.ref)).send_window == window
    await hbroker.presence.heartbeat(phone.ref)
    await hbroker.presence.heartbeat(pool_phone.ref)
    assert [m.id for m in await hbroker.messages.claim(phone.ref, 5)] == [urgent, normal]
    assert [m.id for m in await hbroker.messages.claim(pool_phone.ref, 1)] == [code]
    clock.advance(60_000)
    await hbroker.schedule.release_due()
    assert [m.id for m in await hbroker.messages.claim(phone.ref, 5)] == [later]


async def test_restore_keeps_an_encrypted_message_encrypted(hbroker: Broker, history_store) -> None:
    owner, [phone] = await self_managed(hbroker)
    envelope = e2e.encrypt("the gate code is 4711", "our passphrase")
    [sealed] = (
        await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, envelope, phone.device_id, encrypted=True)])
    ).ids
    before = await hbroker.message_log.get(owner.shard, sealed)
    assert before.encrypted and before.message == envelope and before.segments == 1
    await Snapshotter(hbroker, history_store).run_once()
    await hbroker.redis.flushall()
    await hbroker.start()
    await restore(hbroker, history_store)
    assert await hbroker.message_log.get(owner.shard, sealed) == before
    await hbroker.presence.heartbeat(phone.ref)
    [task] = await hbroker.messages.claim(phone.ref, 5)
    assert (task.id, task.message, task.encrypted) == (sealed, envelope, True)


async def test_restore_keeps_the_campaign_of_each_message_and_its_counts(hbroker: Broker, history_store) -> None:
    owner, [phone] = await self_managed(hbroker)
    d = phone.device_id
    tagged = (await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, "listed", d)] * 2, campaign="c1")).ids
    [plain] = (await hbroker.messages.enqueue(owner, [OutgoingMessage(TO, "plain", d)])).ids
    before = await hbroker.message_log.counters(owner.shard)
    assert (before["c:c1:total"], before["c:c1:queued"]) == (2, 2)
    await Snapshotter(hbroker, history_store).run_once()
    await hbroker.redis.flushall()
    await hbroker.start()
    await restore(hbroker, history_store)
    assert await hbroker.message_log.counters(owner.shard) == before
    assert [m.id for m in (await hbroker.message_log.page(owner, campaign="c1")).items] == tagged[::-1]
    await hbroker.presence.heartbeat(phone.ref)
    assert {m.id for m in await hbroker.messages.claim(phone.ref, 5)} == {*tagged, plain}
    after = await hbroker.message_log.counters(owner.shard)
    assert (after["c:c1:queued"], after["c:c1:claimed"]) == (0, 2)
    assert not [name for name in after if name.startswith("c::")]  # a plain message counts in no campaign
