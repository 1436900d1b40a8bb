#!/usr/bin/env python3
"""What waiting for a replica costs a send: ``Broker.enqueue`` of one message with
``CONNECFY_REDIS_WAIT_REPLICAS`` 1 next to 0, in one run against the same Redis.

Run it from the repository root::

    python3 bench/wait_bench.py                       # private primary and replica
    python3 bench/wait_bench.py --cluster             # also the test suite's cluster
    python3 bench/wait_bench.py --seconds 3 --rounds 5 --concurrency 1,16 \\
        --cluster --json bench/results/wait-run.json

Targets, each started by the bench in a temporary directory and stopped after it:

``replica``
    a private ``redis-server`` (``/usr/bin/redis-server`` when present) with one replica
    of its own (``--replicaof``), both append-only off, on loopback.
``cluster`` (``--cluster``)
    the test suite's Redis Cluster (``tests/support/cluster.py``: three primaries with a
    replica each, on loopback; needs ``redis-cli``).

On each target, for each concurrency of ``--concurrency`` (asyncio tasks sharing one
client made as a server makes its own, ``broker.redis_client.redis_for``), rounds of
``--seconds`` alternate between the two settings, the first of each pair taking turns,
so that drift of the machine weighs on both alike: one warm-up pair, then ``--rounds``
measured pairs. Each task sends to its own phone (self-managed accounts with budgets
and limits out of the way). Every call's latency is kept; a round gives its p50, p99
and calls/s, and the table the median of those over the measured rounds, with WAIT 1's
as a multiple of WAIT 0's from the same run. The count of ``WAIT`` commands the
primaries ran is checked against the waited sends (one each, none at 0).

The replica shares the machine with the primary and the client: on a 2-core box the
figures include the competition for CPU, not only the loopback round trip to the
replica. ``--json PATH`` writes every figure, per round, with the command line and the
machine. The exit status is 0 whatever the figures (a measurement, not a test) unless
something failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker import Broker, Settings
from broker.records import Account, DeviceRef, OutgoingMessage
from broker.redis_client import RedisClient, redis_for
from connecfy.redis_server import RedisServer, find_redis_server

DEBIAN_REDIS = "/usr/bin/redis-server"
TO = "+15551234567"
TEXT = "Your Connecfy code is 123456"
ACCOUNTS = 8
WAITS = (0, 1)
BENCH_LIMITS = {
    "device_segments_per_minute": 10**9,
    "device_segments_per_day": 10**9,
    "sends_per_second": 10**9,
    "sends_burst": 10**9,
}


# Figures ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """The value at ``share`` (0..1) of ``sorted_values`` (nearest rank)."""
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass(frozen=True)
class Round:
    wait: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    waits_on_server: int

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


@dataclass
class Cell:
    """One target and concurrency: the measured rounds of each setting."""

    target: str
    concurrency: int
    rounds: dict[int, list[Round]]

    def median(self, wait: int, figure: str) -> float:
        return statistics.median(getattr(r, figure) for r in self.rounds[wait])

    def figures(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            **{
                f"wait_{wait}": {
                    "median": {f: self.median(wait, f) for f in ("p50_ms", "p99_ms", "calls_per_second")},
                    "rounds": [{**asdict(r), "calls_per_second": r.calls_per_second} for r in self.rounds[wait]],
                }
                for wait in WAITS
            },
        }


# Targets ---------------------------------------------------------------------------------


def private_redis_binary() -> str:
    return DEBIAN_REDIS if os.access(DEBIAN_REDIS, os.X_OK) else find_redis_server()


@contextlib.contextmanager
def primary_with_replica(binary: str) -> Any:
    """A private primary and its replica, in sync; yields (url, blocking clients of the primaries)."""
    with tempfile.TemporaryDirectory(prefix="connecfy-wait-bench-") as root:
        options = ("--repl-diskless-sync-delay", "0")
        with RedisServer(Path(root) / "primary", binary=binary, appendonly=False, options=options) as primary:
            replica_options = ("--replicaof", "127.0.0.1", str(primary.port))
            with RedisServer(Path(root) / "replica", binary=binary, appendonly=False, options=replica_options):
                client = redis.Redis(port=primary.port, single_connection_client=True)
                deadline = time.monotonic() + 10
                while True:  # in sync once it acknowledges a write
                    client.set("{wait-bench}:ready", "1")
                    if client.execute_command("WAIT", 1, 100) == 1:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the replica did not follow within 10 s")
                client.delete("{wait-bench}:ready")
                try:
                    yield primary.url, [client]
                finally:
                    client.close()


@contextlib.contextmanager
def test_cluster(binary: str) -> Any:
    """The test suite's cluster; yields (url of one node, blocking clients of the primaries)."""
    from tests.support.cluster import RedisClusterProcess

    with (
        tempfile.TemporaryDirectory(prefix="connecfy-wait-bench-") as root,
        RedisClusterProcess(binary, root) as cluster,
    ):
        yield cluster.url, [node.client for node in cluster.primaries()]


# Measuring -------------------------------------------------------------------------------


async def fleet(broker: Broker, devices: int) -> list[tuple[Account, DeviceRef]]:
    accounts = [
        await broker.accounts.create(f"wait-bench-{n}@connecfy-bench.invalid", "self_managed", daily_quota=10**12)
        for n in range(min(ACCOUNTS, devices))
    ]
    paired = []
    for n in range(devices):
        account = accounts[n % len(accounts)]
        code = await broker.devices.create_pairing_code(account)
        paired.append((account, (await broker.devices.register(code.code, f"phone {n}")).ref))
    return paired


def wait_calls(primaries: Sequence[redis.Redis]) -> int:
    return sum(int(c.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) for c in primaries)


async def run_round(
    broker: Broker, phones: list[tuple[Account, DeviceRef]], seconds: float, primaries: Sequence[redis.Redis]
) -> Round:
    latencies: list[float] = []

    async def task(account: Account, device: DeviceRef, deadline: float) -> None:
        message = [OutgoingMessage(TO, TEXT, device.device_id)]
        while time.perf_counter() < deadline:
            started = time.perf_counter_ns()
            await broker.messages.enqueue(account, message)
            latencies.append((time.perf_counter_ns() - started) / 1e6)

    waits_before = wait_calls(primaries)
    start = time.perf_counter()
    await asyncio.gather(*(task(account, device, start + seconds) for account, device in phones))
    elapsed = time.perf_counter() - start
    waits = wait_calls(primaries) - waits_before
    latencies.sort()
    wait = broker.settings.redis_wait_replicas
    if waits != (len(latencies) if wait else 0):
        raise RuntimeError(f"WAIT {wait}: {waits} WAIT commands for {len(latencies)} sends")
    return Round(wait, len(latencies), elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99), waits)


async def measure_cell(
    client: RedisClient, target: str, concurrency: int, args: argparse.Namespace, primaries: Sequence[redis.Redis]
) -> Cell:
    brokers = {wait: Broker(client, Settings(**BENCH_LIMITS, redis_wait_replicas=wait)) for wait in WAITS}
    await brokers[0].start()
    phones = await fleet(brokers[0], concurrency)
    rounds: dict[int, list[Round]] = {wait: [] for wait in WAITS}
    for index in range(args.rounds + 1):
        order = WAITS if index % 2 == 0 else WAITS[::-1]
        for wait in order:
            result = await run_round(brokers[wait], phones, args.seconds, primaries)
            label = "warm-up" if index == 0 else f"round {index}/{args.rounds}"
            print(
                f"  {target:8} {concurrency:3} tasks WAIT {wait} {label:11} p50 {result.p50_ms:6.2f} ms "
                f"p99 {result.p99_ms:6.2f} ms {result.calls_per_second:8,.0f} calls/s",
                file=sys.stderr,
            )
            if index:
                rounds[wait].append(result)
    return Cell(target, concurrency, rounds)


async def measure_target(
    target: str, url: str, primaries: Sequence[redis.Redis], args: argparse.Namespace
) -> list[Cell]:
    cells = []
    for concurrency in args.concurrency:
        settings = Settings(redis_url=url, redis_max_connections=max(concurrency, 4))
        client = await redis_for(settings)
        try:
            cells.append(await measure_cell(client, target, concurrency, args, primaries))
        finally:
            await client.flushall()  # the target is the bench's own
            await client.aclose()
    return cells


# Output ----------------------------------------------------------------------------------


def print_table(cells: Sequence[Cell]) -> None:
    print(
        f"{'target':8} {'tasks':>5} {'p50 W0':>8} {'p50 W1':>8} {'x':>5} {'p99 W0':>8} {'p99 W1':>8} {'x':>5} "
        f"{'calls/s W0':>11} {'calls/s W1':>11} {'x':>5}"
    )
    for cell in cells:
        row = [f"{cell.target:8} {cell.concurrency:5}"]
        for figure, unit in (("p50_ms", "ms"), ("p99_ms", "ms"), ("calls_per_second", "")):
            zero, one = cell.median(0, figure), cell.median(1, figure)
            if unit:
                row.append(f"{zero:6.2f}{unit} {one:6.2f}{unit} {one / zero:5.2f}")
            else:
                row.append(f"{zero:11,.0f} {one:11,.0f} {one / zero:5.2f}")
        print(" ".join(row))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A send's latency with WAIT 1 next to WAIT 0, in one run.")
    parser.add_argument("--cluster", action="store_true", help="also measure on the test suite's Redis Cluster")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 16],
        help="comma-separated task counts (default 1,16)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each round (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per setting (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if min(args.concurrency) < 1 or args.rounds < 1 or not 0 < args.seconds <= 600:
        parser.error("--concurrency and --rounds must be at least 1, --seconds in (0, 600]")
    return args


async def bench(args: argparse.Namespace) -> tuple[dict[str, Any], list[Cell]]:
    binary = private_redis_binary()
    targets: list[tuple[str, Callable[[str], Any]]] = [("replica", primary_with_replica)]
    if args.cluster:
        targets.append(("cluster", test_cluster))
    cells: list[Cell] = []
    version = ""
    for name, start in targets:
        with start(binary) as (url, primaries):
            version = str(primaries[0].info("server")["redis_version"])
            cells += await measure_target(name, url, primaries, args)
    environment = {
        "command": sys.argv,
        "redis_version": version,
        "redis": f"private {binary}, appendonly off, on loopback",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
    }
    return environment, cells


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; warm-up + {args.rounds} rounds "
        f"x {args.seconds:g} s per setting, alternating; medians\n",
        flush=True,
    )
    environment, cells = asyncio.run(bench(args))
    print()
    print_table(cells)
    if args.json:
        document = {**environment, "cells": [cell.figures() for cell in cells]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
