"""Two hosts, one Redis Cluster, one PostgreSQL: background work shared out by shard.

Two real ``connecfy serve`` (separate data directories, so two hosts) on the session's
Redis Cluster (``REDIS_URL`` of one node) and the session's PostgreSQL
(``CONNECFY_DATABASE_URL``). Senders send through both hosts, phones (their own, and a
platform pool phone) claim and report through both, every account has a webhook
endpoint on one local receiver:

- the shards are split between the two background processes, each holding some;
- every message is claimed once and finishes, has one row in PostgreSQL, and each of its
  status changes reaches the receiver once;
- one host's background process is then stopped with SIGSTOP (a frozen process: serve's
  supervisor only restarts a child that exited, so nothing replaces it, as on a host
  that hangs): within the lease (10 s) the other host's background process holds every
  shard, and the traffic sent meanwhile gets the same ledger; once resumed, the stale
  process finds its leases gone, and the shards are split again.

And the guard of history across hosts: a second host on the same Redis without
``CONNECFY_DATABASE_URL`` (so a local SQLite file) is refused in one line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from redis.cluster import RedisCluster

from broker.history import HistoryStore, metadata
from broker.leases import LEASE_MS, Member
from tests.support.cluster import RedisClusterProcess
from tests.support.e2e_server import CONNECFY, Api, ServerProcess, expect, free_port, server_env
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PASSWORD, TO, Phone, World
from tests.support.ledger import Ledger, PhoneLoop
from tests.support.webhook_receiver import Receiver

FAST = {
    "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
    "CONNECFY_WEBHOOK_POLL_MS": "50",
    "CONNECFY_SNAPSHOT_INTERVAL_MS": "200",
    "CONNECFY_HOT_RETENTION_SECONDS": "1",  # finished messages leave Redis: the trim runs too
    "CONNECFY_SENDS_PER_SECOND": "10000",
    "CONNECFY_SENDS_BURST": "10000",
    "CONNECFY_TASKS_PER_MINUTE": "100000",
    "CONNECFY_TASKS_BURST": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "100000",
    "CONNECFY_AUTH_BURST": "1000",
    "CONNECFY_POOL_SHARDS": "3",  # the platform pool in three shards, spread over the primaries
}
SENDERS = 4  # self-managed accounts, each with a phone; and one API-only sender on the pool
PER_ROUND = 3  # messages each sender sends in a round, alternating hosts
SETTLE_S = 20.0  # bound on each wait for the fleet to catch up


# Looking at the shared Redis and PostgreSQL ------------------------------------------


def node_client(cluster: RedisClusterProcess) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=cluster.live_nodes()[0].port, decode_responses=True)


def shard_holders(redis: RedisCluster) -> dict[str, str | None]:
    """Every shard -> the holder of its background lease (None: free)."""
    found = {}
    for shard in sorted(redis.smembers("{shards}")):
        value = redis.get("{" + shard + "}:background")
        found[shard] = value.partition("|")[0] if value else None
    return found


def live_members(redis: RedisCluster) -> list[Member]:
    return [Member.parse(m) for m in redis.zrangebyscore("{background}", int(time.time() * 1000), "+inf")]


def holder_of(redis: RedisCluster, server: ServerProcess) -> str:
    """The holder name of ``server``'s background process (the registry names its data dir)."""
    where = str(server.data_dir.resolve())
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        found = [m.holder for m in live_members(redis) if m.label.endswith(where)]
        if len(found) == 1:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no background process of {where} in the registry: {live_members(redis)}")


def background_pid(server: ServerProcess) -> int:
    assert server.process is not None
    [found] = [p.pid for p in psutil.Process(server.process.pid).children() if "background" in p.cmdline()]
    return found


def wait_until(what: str, check: Any, timeout: float = SETTLE_S) -> float:
    """Poll ``check()`` until it is true: the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


async def _stored(url: str) -> dict[str, str]:
    store = HistoryStore(url)
    try:
        return {record.id: record.status for _, record in await store.message_rows()}
    finally:
        await store.close()


def stored(url: str) -> dict[str, str]:
    """Message id -> status, as PostgreSQL has them."""
    return asyncio.run(_stored(url))


async def _empty(url: str) -> None:
    store = HistoryStore(url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
    finally:
        await store.close()


# The fleet ---------------------------------------------------------------------------


class Sender:
    def __init__(self, readers: list[Api], key: str) -> None:
        self.readers = readers  # its session on each host
        self.key = key


def signed_up_on_both(worlds: list[World], home: int, account_type: str, prefix: str) -> tuple[Api, Api]:
    """A new account's session on its home host, and on the other."""
    user = worlds[home].signup(account_type, prefix=prefix)
    again = worlds[1 - home].api()
    expect(again.post("/api/auth/login/", json={"email": user.account["email"], "password": PASSWORD}), 200)
    return user, again


def on_both(worlds: list[World], phone: Phone, ledger: Ledger) -> list[PhoneLoop]:
    """The phone as each host sees it: the same device and token, through each."""
    return [
        PhoneLoop(Phone(phone.device_id, phone.token, phone.name, w.api(**{"X-Device-Token": phone.token})), ledger)
        for w in worlds
    ]


def send_round(worlds: list[World], senders: list[Sender], ledger: Ledger, tag: str) -> list[str]:
    """Each sender sends :data:`PER_ROUND` messages, alternating hosts: the ids accepted."""
    ids = []
    for i in range(PER_ROUND):
        for n, sender in enumerate(senders):
            host = (i + n) % 2
            response = worlds[host].external({"api_key": sender.key, "to": TO, "message": f"{tag} {i}"})
            expect(response, 202)
            ids += ledger.sent(response, sender.readers[host])
    return ids


def drain(loops: list[PhoneLoop], ledger: Ledger) -> None:
    """The phones claim and report through both hosts until every message is finished."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        for loop in loops:
            loop.step()
        if not any(loop.unreported for loop in loops) and not ledger.unfinished():
            return
        time.sleep(0.05)
    raise AssertionError(f"not finished within {SETTLE_S} s: {ledger.unfinished()}")


def check_delivered_once(receiver: Receiver, ids: list[str]) -> None:
    """Each message's queued, claimed and sent events reached the receiver, each once."""
    wanted = {(i, s) for i in ids for s in ("queued", "claimed", "sent")}

    def arrived() -> bool:
        seen = {(r.event["data"]["message_id"], r.event["data"]["status"]) for r in receiver.delivered()}
        return wanted <= seen

    wait_until("every webhook event delivered", arrived)
    time.sleep(0.5)  # a duplicate would arrive by now
    delivered = receiver.delivered()
    per_event = Counter(r.event["id"] for r in delivered)
    assert max(per_event.values()) == 1, [e for e, n in per_event.items() if n > 1]
    per_change = Counter(
        (r.event["data"]["message_id"], r.event["data"]["status"])
        for r in delivered
        if r.event["data"]["message_id"] in set(ids)
    )
    assert set(per_change) == wanted and set(per_change.values()) == {1}


def check_stored_once(url: str, ids: list[str]) -> None:
    """One row per message in PostgreSQL (the id is its key), at its final status."""
    wait_until("every message stored as sent", lambda: all(stored(url).get(i) == "sent" for i in ids))


@pytest.fixture
def hosts(
    redis_cluster: RedisClusterProcess, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[ServerProcess], RedisCluster, str]]:
    redis_cluster.flush()
    asyncio.run(_empty(postgres_server.url))
    settings = {
        **FAST,
        "REDIS_URL": f"redis://127.0.0.1:{redis_cluster.live_nodes()[-1].port}",
        "CONNECFY_DATABASE_URL": postgres_server.url,
    }
    servers: list[ServerProcess] = []
    redis = node_client(redis_cluster)
    try:
        for name in ("host-a", "host-b"):
            servers.append(ServerProcess(tmp_path_factory.mktemp(name), settings=settings).start())
        yield servers, redis, postgres_server.url
    finally:
        for server in servers:
            for child in psutil.Process(server.process.pid).children() if server.process else []:
                if "background" in child.cmdline():
                    os.kill(child.pid, signal.SIGCONT)  # so it can stop
            assert server.stop() == 0, server.output()[-3000:]
        redis.close()


class MoveWatch(threading.Thread):
    """Notes when every shard is held by ``holder``, polling the leases every 50 ms."""

    def __init__(self, redis: RedisCluster, holder: str) -> None:
        super().__init__(daemon=True)
        self.redis = redis
        self.holder = holder
        self.started = time.monotonic()
        self.moved_after: float | None = None

    def run(self) -> None:
        while time.monotonic() - self.started < LEASE_MS / 1000 + SETTLE_S:
            if set(shard_holders(self.redis).values()) == {self.holder}:
                self.moved_after = time.monotonic() - self.started
                return
            time.sleep(0.05)


def test_two_hosts_share_the_shards_and_a_frozen_hosts_shards_move_within_the_lease(
    hosts: tuple[list[ServerProcess], RedisCluster, str],
) -> None:
    servers, redis, database = hosts
    a, b = servers
    worlds = [World(a), World(b)]
    receiver = Receiver()
    ledger = Ledger()
    try:
        # Senders with their phones and their webhook endpoints, across both hosts.
        senders: list[Sender] = []
        loops: list[PhoneLoop] = []
        for n in range(SENDERS):
            home = n % 2
            user, again = signed_up_on_both(worlds, home, "self_managed", f"sender{n}")
            expect(user.post("/api/webhooks/", json={"url": receiver.url}), 201)
            loops += on_both(worlds, worlds[1 - home].pair(again, f"phone {n}"), ledger)
            senders.append(Sender([user, again][:: 1 if home == 0 else -1], worlds[home].api_key(user)["api_key"]))
        # An API-only sender on the platform pool, and a pool phone the operator paired.
        a.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        operator = worlds[1].api()
        expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
        loops += on_both(worlds, worlds[1].pair(operator, "pool phone", pool=True), ledger)
        user, again = signed_up_on_both(worlds, 0, "api_only", "api")
        expect(user.post("/api/webhooks/", json={"url": receiver.url}), 201)
        senders.append(Sender([user, again], worlds[0].api_key(user)["api_key"]))

        # Both background processes hold shards: between them all of them, each once.
        holder_a, holder_b = holder_of(redis, a), holder_of(redis, b)
        wait_until(
            "the shards split between the hosts", lambda: set(shard_holders(redis).values()) == {holder_a, holder_b}
        )
        # The senders, the operator, the API-only sender, and the pool's three shards.
        assert len(shard_holders(redis)) == SENDERS + 2 + 3

        first = send_round(worlds, senders, ledger, "first")
        drain(loops, ledger)
        ledger.check()
        check_stored_once(database, first)
        check_delivered_once(receiver, first)

        # Host b's background process freezes. Its shards stay its own until their leases
        # run out, then host a's takes them; the traffic goes on through both meanwhile.
        frozen = background_pid(b)
        assert holder_b in shard_holders(redis).values()
        os.kill(frozen, signal.SIGSTOP)
        watch = MoveWatch(redis, holder_a)
        watch.start()
        second = send_round(worlds, senders, ledger, "second")
        drain(loops, ledger)
        watch.join()
        assert watch.moved_after is not None, shard_holders(redis)
        # Within the lease (and a beat): b last renewed at most a beat before it froze.
        assert (LEASE_MS - 2_000) / 1000 < watch.moved_after < LEASE_MS / 1000 + 2, watch.moved_after
        assert psutil.Process(frozen).status() == psutil.STATUS_STOPPED  # nothing replaced it
        ledger.check()
        check_stored_once(database, first + second)
        check_delivered_once(receiver, first + second)

        # Resumed, the stale process finds its renewals refused, and the two share the
        # shards out again; nothing is stored or delivered twice.
        os.kill(frozen, signal.SIGCONT)
        wait_until(
            "the shards split between the hosts again",
            lambda: set(shard_holders(redis).values()) == {holder_a, holder_b},
        )
        third = send_round(worlds, senders, ledger, "third")
        drain(loops, ledger)
        ledger.check()
        check_stored_once(database, first + second + third)
        check_delivered_once(receiver, first + second + third)
        assert sorted(stored(database)) == sorted(ledger.accepted)
        assert "shards to other processes (held past the lease)" in b.output()
    finally:
        receiver.close()
        for world in worlds:
            world.close()


def test_a_second_host_keeping_history_in_sqlite_is_refused_in_one_line(
    redis_cluster: RedisClusterProcess, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis_cluster.flush()
    url = f"redis://127.0.0.1:{redis_cluster.live_nodes()[0].port}"
    first = ServerProcess(tmp_path_factory.mktemp("sqlite-host"), settings={"REDIS_URL": url}).start()
    redis = node_client(redis_cluster)
    try:
        holder_of(redis, first)  # its background process is live
        for database, says in (
            ({}, "this one would keep history in a local SQLite file"),
            ({"CONNECFY_DATABASE_URL": postgres_server.url}, "keeps history in a local SQLite file on this Redis"),
        ):
            second = tmp_path_factory.mktemp("second-host")
            result = subprocess.run(
                [str(CONNECFY), "serve", "--port", str(free_port()), "--data-dir", str(second)],
                env={**server_env(), "REDIS_URL": url, **database},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 1, result
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("connecfy: another host's background process ("), lines
            assert says in lines[0] and "set CONNECFY_DATABASE_URL to a PostgreSQL URL" in lines[0], lines
            assert str(first.data_dir.resolve()) in lines[0]  # which host is in the way
            assert list(second.iterdir()) == []  # refused before it touched anything
        assert [m.holder for m in live_members(redis)] == [holder_of(redis, first)]  # nothing else joined
    finally:
        redis.close()
        assert first.stop() == 0, first.output()[-3000:]
