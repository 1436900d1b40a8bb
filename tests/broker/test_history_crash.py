"""Crashes lose nothing and store nothing twice: the snapshotter dying between its steps
(a real pass against a real Redis and store, stopped at that point, then a fresh
snapshotter), the whole server killed with SIGKILL under steady load, and its Redis
killed and restarted from its append-only file. Afterwards every message accepted with
a 202 is in the store with its final status, each status change in its stored
timeline exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest
import redis
import sqlalchemy as sa

from broker import Broker, keys
from broker.history import HistoryStore, messages
from broker.records import MessageRecord, OutgoingMessage
from broker.snapshotter import GROUP, Snapshotter
from tests.support.backends import history_broker
from tests.support.e2e_server import ServerProcess, expect
from tests.support.fleet import TO, self_managed
from tests.support.http_world import PASSWORD, Phone, World

HOT_MS = 1_000


@pytest.fixture
async def hbroker(real_redis, scripts, clock, history_store: HistoryStore) -> Broker:
    return await history_broker(real_redis, scripts, clock, history_store, hot_retention_seconds=HOT_MS // 1000)


async def _traffic(broker: Broker) -> tuple[str, list[str], object]:
    account, [device] = await self_managed(broker)
    ids = (
        await broker.messages.enqueue(account, [OutgoingMessage(TO, f"m{i}", device.device_id) for i in range(6)])
    ).ids
    for m in await broker.messages.claim(device.ref, 4):
        await broker.messages.report_status(device.ref, m.id, "sent")
    return account.shard, ids, device


async def _assert_stored_once_as_in_redis(
    broker: Broker, store: HistoryStore, shard: str, ids: list[str], expected: dict[str, MessageRecord]
) -> None:
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(messages.c.id, messages.c.status, messages.c.version, messages.c.record))
        ).all()
    assert sorted(row.id for row in rows) == sorted(ids)
    for row in rows:
        record = msgspec.json.decode(row.record, type=MessageRecord)
        statuses = [step[0] for step in record.timeline]
        assert len(set(statuses)) == len(statuses), statuses  # no change stored twice
        assert row.status == record.status == statuses[-1] == expected[row.id].status
        assert row.version == len(statuses)
        assert record == expected[row.id]
    events = broker.shard(shard).events
    assert (await broker.redis.xpending(events, GROUP))["pending"] == 0
    assert await broker.redis.xlen(events) == 0


async def test_killed_between_upsert_and_acknowledge(hbroker: Broker, history_store, clock) -> None:
    shard, ids, _ = await _traffic(hbroker)
    expected = {mid: await hbroker.message_log.get(shard, mid) for mid in ids}
    dying = Snapshotter(hbroker, history_store, lease_ms=1_000)
    assert await dying.run_once() is not None  # the first pass; then it runs again and dies
    batch = await dying.read(shard)
    assert batch.entry_ids == []  # all acknowledged by the first pass
    await hbroker.messages.cancel(await hbroker.accounts.get(expected[ids[5]].account), ids[5])
    expected[ids[5]] = await hbroker.message_log.get(shard, ids[5])
    batch = await dying.read(shard)
    await dying.store_batch(batch)
    # ... killed here: stored, never acknowledged.
    assert (await hbroker.redis.xpending(hbroker.shard(shard).events, GROUP))["pending"] == 1
    await asyncio.sleep(1.05)  # its shards' leases run out ...
    clock.advance(1_050)  # ... and so does its place among the live background processes
    successor = Snapshotter(hbroker, history_store)
    report = await successor.run_once()
    assert report is not None and report.events == 1
    await _assert_stored_once_as_in_redis(hbroker, history_store, shard, ids, expected)


async def test_killed_between_acknowledge_and_trim(hbroker: Broker, history_store, clock) -> None:
    shard, ids, _ = await _traffic(hbroker)
    expected = {mid: await hbroker.message_log.get(shard, mid) for mid in ids}
    dying = Snapshotter(hbroker, history_store, lease_ms=200)
    assert await dying.epoch_matches()
    batch = await dying.read(shard)
    await dying.store_batch(batch)
    await dying.acknowledge(batch)
    # ... killed here: nothing trimmed yet.
    clock.advance(HOT_MS)
    await asyncio.sleep(0.3)
    report = await Snapshotter(hbroker, history_store).run_once()
    assert report is not None and (report.events, report.trimmed) == (0, 4)
    await _assert_stored_once_as_in_redis(hbroker, history_store, shard, ids, expected)
    assert await hbroker.redis.hlen(hbroker.shard(shard).messages) == 2
    for mid in ids:
        assert await hbroker.message_log.get(shard, mid) == expected[mid]


async def test_killed_in_the_middle_of_a_store_on_a_stale_read(hbroker: Broker, history_store, clock) -> None:
    """A predecessor read a record, the message moved on, the predecessor then stored
    its stale record and died: the successor's row is the newest, not the stale one."""
    shard, ids, device = await _traffic(hbroker)
    dying = Snapshotter(hbroker, history_store, lease_ms=200)
    assert await dying.epoch_matches()
    stale = await dying.read(shard)
    for m in await hbroker.messages.claim(device.ref, 2):
        await hbroker.messages.report_status(device.ref, m.id, "failed", "no signal")
    successor = Snapshotter(hbroker, history_store)
    await asyncio.sleep(0.3)
    await successor.run_once()
    await dying.store_batch(stale)  # the zombie's late write
    expected = {mid: await hbroker.message_log.get(shard, mid) for mid in ids}
    assert {r.status for r in expected.values()} == {"sent", "failed"}
    await _assert_stored_once_as_in_redis(hbroker, history_store, shard, ids, expected)


# The real server ---------------------------------------------------------------------

FAST = {
    "CONNECFY_SNAPSHOT_INTERVAL_MS": "200",
    "CONNECFY_HOT_RETENTION_SECONDS": "1",
    "CONNECFY_LEASE_SECONDS": "2",
    "CONNECFY_TASKS_PER_MINUTE": "1000000",
    "CONNECFY_TASKS_BURST": "1000000",
    "CONNECFY_SENDS_PER_SECOND": "1000000",
    "CONNECFY_SENDS_BURST": "1000000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "1000000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "1000000",
}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (granian workers, the private redis-server)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_everything(server: ServerProcess) -> None:
    assert server.process is not None
    for pid in [server.process.pid, *_descendants(server.process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while (server.data_dir / "redis" / "redis.sock").exists() and time.monotonic() < deadline:
        try:
            redis.Redis(unix_socket_path=str(server.data_dir / "redis" / "redis.sock")).ping()
        except redis.ConnectionError:
            break
        time.sleep(0.1)


class Load:
    """Steady traffic: batches sent with an API key, a phone claiming and reporting sent."""

    def __init__(self, world: World, key: str, phone: Phone) -> None:
        self.world, self.key, self.phone = world, key, phone
        self.accepted: list[str] = []
        self.held: list[str] = []  # claimed by the phone, not reported yet

    def tick(self, size: int = 20) -> None:
        response = self.world.batch(
            self.key,
            [
                {"to": TO, "message": f"load {len(self.accepted) + i}", "device_id": self.phone.device_id}
                for i in range(size)
            ],
        )
        if response.status_code == 202:
            self.accepted += [m["id"] for m in response.json()["messages"]]
        self.drain(limit=15)

    def drain(self, limit: int = 100) -> None:
        response = self.phone.tasks(limit=limit)
        if response.status_code == 200:
            self.held += [task["id"] for task in response.json()]
        still = []
        for mid in self.held:
            if self.phone.report(mid, "sent").status_code != 200:
                still.append(mid)
        self.held = still

    def settle(self, data_dir: Path, timeout: float = 30.0) -> dict[str, list[str]]:
        """Go on draining until the store says every accepted message was sent (a claim
        whose answer was lost in a crash comes back once its short lease runs out)."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            stored = _stored(data_dir)
            if all(stored.get(mid, ("",))[0] == "sent" for mid in self.accepted) or time.monotonic() > deadline:
                return stored
            time.sleep(0.2)


SENT = ("sent", ["queued", "claimed", "sent"])


def _stored(data_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """id -> (status, the statuses of its stored timeline), read straight from the SQLite
    file: a change stored twice, or one missing, shows in the timeline."""
    with sqlite3.connect(data_dir / "history.sqlite3") as db:
        rows = db.execute("SELECT id, status, record FROM messages").fetchall()
    return {
        message_id: (status, [step[0] for step in msgspec.json.decode(record)["timeline"]])
        for message_id, status, record in rows
    }


def _start(tmp_path: Path) -> ServerProcess:
    return ServerProcess(tmp_path, workers=2, settings=FAST).start()


def test_server_killed_with_sigkill_under_load_loses_nothing(tmp_path: Path) -> None:
    server = _start(tmp_path)
    world = World(server)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        load = Load(world, world.api_key(owner)["api_key"], phone)
        for _ in range(15):
            load.tick()
        assert load.accepted
        _kill_everything(server)
        world.close()
        server = _start(tmp_path)
        world = World(server)
        phone = Phone(phone.device_id, phone.token, phone.name, world.api(**{"X-Device-Token": phone.token}))
        load.world, load.phone = world, phone
        for _ in range(5):
            load.tick()
        stored = load.settle(tmp_path)
        assert {mid: stored.get(mid) for mid in load.accepted} == dict.fromkeys(load.accepted, SENT)
        assert len(stored) == len(load.accepted)  # nothing else
        assert len(set(load.accepted)) == len(load.accepted) == 400
        again = world.api()
        expect(again.post("/api/auth/login/", json={"email": owner.account["email"], "password": PASSWORD}), 200)
        listed = expect(again.get("/api/sms/", params={"limit": 500}), 200)
        assert [m["id"] for m in listed["items"]] == sorted(load.accepted, reverse=True)
        # Trimmed from Redis (hot retention 1 s), still shown as it was, timeline and all.
        first = load.accepted[0]
        assert not redis.Redis(unix_socket_path=str(tmp_path / "redis" / "redis.sock")).hexists(
            keys.ShardKeys(keys.account_shard(owner.account["id"])).messages, first
        )
        detail = expect(again.get(f"/api/sms/{first}/"), 200)
        assert detail == listed["items"][-1]
        assert (detail["status"], [step["status"] for step in detail["timeline"]][-1]) == ("sent", "sent")
    finally:
        world.close()
        code = server.stop()
    assert code == 0, server.output()


def test_redis_restarted_from_its_append_only_file_loses_nothing(tmp_path: Path) -> None:
    server = _start(tmp_path)
    world = World(server)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        load = Load(world, world.api_key(owner)["api_key"], phone)
        for _ in range(10):
            load.tick()
        socket_path = tmp_path / "redis" / "redis.sock"
        pid = int(redis.Redis(unix_socket_path=str(socket_path)).info("server")["process_id"])
        os.kill(pid, signal.SIGKILL)
        for _ in range(30):  # 503s while Redis is away, then traffic again
            load.tick()
            time.sleep(0.05)
        stored = load.settle(tmp_path)
        assert {mid: stored.get(mid) for mid in load.accepted} == dict.fromkeys(load.accepted, SENT)
        assert len(stored) == len(load.accepted)
        assert int(redis.Redis(unix_socket_path=str(socket_path)).info("server")["process_id"]) != pid
    finally:
        world.close()
        code = server.stop()
    assert code == 0, server.output()
