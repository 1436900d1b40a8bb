#!/usr/bin/env python3
"""Redis memory under steady load with the snapshotter trimming: does it stay flat?

Run it from the repository root::

    python3 bench/memory_bench.py                      # 10 minutes, 1,000 messages/s
    python3 bench/memory_bench.py --minutes 3 --rate 500 --json /tmp/memory.json
    python3 bench/memory_bench.py --redis-url redis://127.0.0.1:6379/15 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without ``--redis-url`` it starts a private ``redis-server`` (no persistence) in a temp
directory; a URL of any node of a Redis Cluster is taken as the cluster (its primaries
are flushed and their ``used_memory`` added up). Without ``--database-url`` the history store is a SQLite file beside it.
One process drives the broker as phones and senders would: every 100 ms it queues
``rate / 10`` messages (one batch, spread over ``--devices`` phones of one
self-managed account), each phone claims what is waiting and reports every message
``sent``. A :class:`~broker.snapshotter.Snapshotter` runs beside it, as in a server,
with the hot retention window set to ``--hot-seconds`` (default 60 s) and the interval
to ``--interval-ms`` (default 2,000 ms).

Reported, as a table and optionally as JSON:

- Redis ``used_memory`` sampled every 5 s; after ``--warmup-seconds`` (default 120 s)
  the samples' spread around their mean (the target: within ±10 %), while the store's
  row count keeps growing;
- bytes per hot message: (steady ``used_memory`` - ``used_memory`` before the load) /
  messages still in Redis;
- snapshot lag: for every stored message, the time from its last status change to the
  write of its row, p50 and p99 in seconds (the target: p99 under twice the interval).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio.cluster import RedisCluster

from broker import Broker, Settings
from broker.history import HistoryStore, database_url
from broker.records import OutgoingMessage
from broker.redis_client import RedisClient, open_redis
from broker.snapshotter import Snapshotter
from connecfy.redis_server import RedisServer

TO = "+15551234567"
TICK = 0.1
SAMPLE_EVERY = 5.0
BIG = 1_000_000_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def phone(broker: Broker, device, stop: asyncio.Event, done: list[int]) -> None:
    while not stop.is_set():
        claimed = await broker.messages.claim(device.ref, 100)
        for message in claimed:
            await broker.messages.report_status(device.ref, message.id, "sent")
        done[0] += len(claimed)
        if len(claimed) < 100:
            await asyncio.sleep(TICK)


async def sender(broker: Broker, account, devices, rate: int, stop: asyncio.Event, queued: list[int]) -> None:
    per_tick = max(1, rate // 10)
    started = time.monotonic()
    ticks = 0
    while not stop.is_set():
        batch = [
            OutgoingMessage(TO, f"load {queued[0] + i}", devices[(queued[0] + i) % len(devices)].device_id)
            for i in range(per_tick)
        ]
        await broker.messages.enqueue(account, batch)
        queued[0] += per_tick
        ticks += 1
        await asyncio.sleep(max(0.0, started + ticks * TICK - time.monotonic()))


async def used_memory(client: RedisClient) -> int:
    """``used_memory`` of the Redis, or the sum over a cluster's primaries."""
    if isinstance(client, RedisCluster):
        per_node = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(info["used_memory"]) for info in per_node.values())
    return int((await client.info("memory"))["used_memory"])


async def run(args: argparse.Namespace, redis_url: str, store_url: str) -> dict:
    settings = Settings(
        redis_url=redis_url,
        hot_retention_seconds=args.hot_seconds,
        snapshot_interval_ms=args.interval_ms,
        quota_self_managed=BIG,
        device_segments_per_minute=BIG,
        device_segments_per_day=BIG,
        tasks_per_minute=BIG,
        tasks_burst=BIG,
        sends_per_second=BIG,
        sends_burst=BIG,
        lease_seconds=600,
    )
    client = await open_redis(redis_url)  # a Redis Cluster's node too
    if isinstance(client, RedisCluster):
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.flushall()
    store = HistoryStore(store_url)
    await store.start()
    broker = Broker(client, settings)
    await broker.start()
    account = await broker.accounts.create("bench@example.com", "self_managed")
    devices = []
    for i in range(args.devices):
        code = await broker.devices.create_pairing_code(account)
        devices.append(await broker.devices.register(code.code, f"phone {i}"))
        await broker.presence.heartbeat(devices[-1].ref)
    snapshotter = Snapshotter(broker, store)
    baseline = await used_memory(client)

    stop = asyncio.Event()
    queued, done = [0], [0]
    tasks = [
        asyncio.create_task(sender(broker, account, devices, args.rate, stop, queued)),
        asyncio.create_task(snapshotter.run_forever()),
        *(asyncio.create_task(phone(broker, d, stop, done)) for d in devices),
    ]
    samples = []
    started = time.monotonic()
    end = started + args.minutes * 60
    shard = broker.shard(account.shard)
    while time.monotonic() < end:
        await asyncio.sleep(SAMPLE_EVERY)
        for d in devices:
            await broker.presence.heartbeat(d.ref)
        sample = {
            "t": round(time.monotonic() - started, 1),
            "used_memory": await used_memory(client),
            "hot_messages": int(await client.hlen(shard.messages)),
            "stream": int(await client.xlen(shard.events)),
            "stored": await store.count_messages(),
            "queued": queued[0],
            "sent": done[0],
        }
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    steady = [s for s in samples if s["t"] >= args.warmup_seconds]
    memory = [s["used_memory"] for s in steady]
    mean = statistics.mean(memory) if memory else 0
    spread = max(abs(m - mean) / mean for m in memory) if memory else 0.0
    lags = [x / 1000 for x in await store.lag_ms()]
    hot = statistics.mean(s["hot_messages"] for s in steady) if steady else 0
    elapsed = samples[-1]["t"] if samples else 0
    result = {
        "minutes": args.minutes,
        "rate_target": args.rate,
        "sent_per_second": round(done[0] / elapsed, 1) if elapsed else 0,
        "hot_seconds": args.hot_seconds,
        "interval_ms": args.interval_ms,
        "used_memory_mean": round(mean),
        "used_memory_min": min(memory, default=0),
        "used_memory_max": max(memory, default=0),
        "used_memory_spread_pct": round(100 * spread, 2),
        "flat_within_10pct": bool(memory) and spread <= 0.10,
        "store_rows_start_of_steady": steady[0]["stored"] if steady else 0,
        "store_rows_end": samples[-1]["stored"] if samples else 0,
        "hot_messages_mean": round(hot),
        "bytes_per_hot_message": round((mean - baseline) / hot) if hot else None,
        "lag_p50_s": round(percentile(lags, 0.50), 3),
        "lag_p99_s": round(percentile(lags, 0.99), 3),
        "lag_p99_under_2x_interval": percentile(lags, 0.99) < 2 * args.interval_ms / 1000,
        "samples": samples,
    }
    await store.close()
    await client.aclose()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1_000, help="messages per second")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--hot-seconds", type=int, default=60)
    parser.add_argument("--interval-ms", type=int, default=2_000)
    parser.add_argument("--warmup-seconds", type=float, default=120.0)
    parser.add_argument("--redis-url", default=None, help="a Redis to use (it is flushed)")
    parser.add_argument("--database-url", default=None, help="a history store (default: SQLite in a temp dir)")
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="connecfy-memory-bench-") as root:
        store_url = database_url(Settings(database_url=args.database_url or "", data_dir=root))
        server = None
        redis_url = args.redis_url
        if redis_url is None:
            server = RedisServer(Path(root) / "redis", appendonly=False).start()
            redis_url = server.url
        try:
            result = asyncio.run(run(args, redis_url, store_url))
        finally:
            if server is not None:
                server.stop()
    summary = {k: v for k, v in result.items() if k != "samples"}
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
