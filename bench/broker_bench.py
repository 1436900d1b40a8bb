#!/usr/bin/env python3
"""Broker throughput against one real Redis: enqueue and claim next to a no-op EVALSHA.

Run it from the repository root (it needs nothing installed beyond the project's own
dependencies)::

    python3 bench/broker_bench.py                         # private redis-server, 32 tasks
    python3 bench/broker_bench.py --seconds 3 --rounds 5 --json bench/results/run.json
    python3 bench/broker_bench.py --redis-url redis://127.0.0.1:6379/15

Four phases run one after the other, each with ``--concurrency`` asyncio tasks sharing
one ``redis.asyncio`` client and its connection pool (hiredis parser, uvloop when
importable), each as one warm-up round then ``--rounds`` measured rounds of
``--seconds`` each:

``no-op``
    ``EVALSHA`` of ``return 1`` (loaded with ``SCRIPT LOAD``) with one key and two
    arguments: the ceiling this client, pool and concurrency can reach at all.
``enqueue``
    ``Broker.enqueue`` of one message to a device's own queue. Each task sends to its
    own device; the devices belong to a few self-managed accounts whose daily quota is
    far above anything a run can send.
``batch``
    ``Broker.enqueue`` of ``--batch`` messages (default 100) in one call, each task to
    its own device: the batch send's path; its figure to read is messages/s.
``claim``
    ``Broker.claim`` of 10 messages for a device. Each task claims for its own device,
    whose queue is topped up before every round (with batched ``Broker.enqueue``,
    outside the measured time) to 1.5 times what the fastest round so far could
    take; every claim must return exactly 10 messages or the run fails. Device
    budgets are raised (``Settings(device_segments_per_minute=..., ...)``) so they
    never stop a claim. Each device claims on its own clock, 10 s later each time
    (a phone polling at ``tasks_per_minute`` = 6): the claim script re-reads the
    device's whole 60-second send window on every call, and a phone's real window
    is small (its per-minute budget bounds it), whereas thousands of claims per
    second on wall-clock time would grow it without bound and measure that instead.
    Leases are made long enough that no message is redelivered during a run.

The table gives, per phase, the median over the measured rounds of:

- ``calls/s`` and its ratio to the no-op, with ``PASS`` at >= 50% (the issue's
  target) and ``BELOW`` under it; ``msgs/s`` for claim (10 per call);
- ``srv us/call``: Redis's own time per ``EVALSHA`` (``INFO commandstats``,
  ``cmdstat_evalsha``), i.e. the script's cost independent of the Python client,
  and that as a multiple of the no-op's;
- ``srv busy``: that time summed over the round as a share of wall time;
  ``srv CPU``: the Redis process's CPU (``INFO cpu``, user + sys, network I/O
  included) as a share of wall time; ``client CPU``: this Python process's.
  A phase with client CPU near 100% and server CPU well under it is bound by
  the client, not by Redis.

The command statistics are read as before/after differences around each round rather
than zeroed with ``CONFIG RESETSTAT``: the figure is the same, and a Redis given with
``--redis-url`` keeps its statistics (other clients' ``EVALSHA`` calls during a run do
count, though). The private Redis (``/usr/bin/redis-server`` when present, else
``connecfy.redis_server.find_redis_server()``; temp dir, appendonly off) is flushed
between phases. A Redis given with ``--redis-url`` is never flushed: the bench writes
only keys of its own fresh accounts (plus their e-mail and device-token index keys and
their entries in ``{shards}``) and deletes them after each phase; the scripts stay in
its script cache. ``--json PATH`` writes every figure, per round, with the command
line, Redis version, CPU count and Python version. The exit status is 0 whatever the
ratios (this is a measurement, not a test) unless something failed.

The client and the Redis server each want a whole core: run it on an otherwise idle
machine (the header prints the load average) or the figures measure the neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import DefaultParser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker import Broker, Settings, ids, keys
from broker.records import Account, DeviceRef, OutgoingMessage
from connecfy.redis_server import RedisServer, find_redis_server

DEBIAN_REDIS = "/usr/bin/redis-server"
NOOP_SCRIPT = "return 1"
TARGET_RATIO = 0.5
ACCOUNTS = 4
TO = "+15551234567"
TEXT = "Your Connecfy code is 123456"
CLAIM_LIMIT = 10
CLAIM_CLOCK_STEP_MS = 10_000
REFILL_HEADROOM = 1.5

BENCH_SETTINGS = Settings(
    device_segments_per_minute=10**9,
    device_segments_per_day=10**9,
    lease_seconds=10**7,
    sends_per_second=10**9,
    sends_burst=10**9,
    tasks_per_minute=10**9,
    tasks_burst=10**9,
)


# Figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerCounters:
    """Cumulative counters of the Redis process at one moment."""

    evalsha_calls: int
    evalsha_usec: int
    cpu_seconds: float


async def read_server_counters(client: aioredis.Redis) -> ServerCounters:
    stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    cpu = await client.info("cpu")
    return ServerCounters(
        evalsha_calls=int(stats.get("calls", 0)),
        evalsha_usec=int(stats.get("usec", 0)),
        cpu_seconds=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    )


@dataclass(frozen=True)
class RoundResult:
    calls: int
    messages: int
    seconds: float
    client_cpu_seconds: float
    server_calls: int
    server_usec: int
    server_cpu_seconds: float
    ran_dry: bool

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def server_usec_per_call(self) -> float:
        return self.server_usec / self.server_calls if self.server_calls else math.nan

    @property
    def server_busy(self) -> float:
        return self.server_usec / 1e6 / self.seconds

    @property
    def server_cpu(self) -> float:
        return self.server_cpu_seconds / self.seconds

    @property
    def client_cpu(self) -> float:
        return self.client_cpu_seconds / self.seconds

    def figures(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "calls_per_second": self.calls_per_second,
            "messages_per_second": self.messages_per_second,
            "server_usec_per_call": self.server_usec_per_call,
            "server_busy": self.server_busy,
            "server_cpu": self.server_cpu,
            "client_cpu": self.client_cpu,
        }


MEDIAN_FIGURES = (
    "calls_per_second",
    "messages_per_second",
    "server_usec_per_call",
    "server_busy",
    "server_cpu",
    "client_cpu",
)


@dataclass
class PhaseResult:
    name: str
    warmup: RoundResult
    rounds: list[RoundResult]

    def median(self, figure: str) -> float:
        return statistics.median(getattr(r, figure) for r in self.rounds)

    @property
    def dry_rounds(self) -> int:
        return sum(r.ran_dry for r in self.rounds)

    def figures(self) -> dict[str, Any]:
        return {
            "median": {name: self.median(name) for name in MEDIAN_FIGURES},
            "warmup": self.warmup.figures(),
            "rounds": [r.figures() for r in self.rounds],
            "rounds_that_ran_dry": self.dry_rounds,
        }


# Phases ----------------------------------------------------------------------------


class Phase(Protocol):
    name: str

    async def prepare(self, calls_per_task: int) -> None:
        """Make room for up to ``calls_per_task`` calls per task in the next round."""

    def has_work(self, task: int) -> bool:
        """False once the task has used what ``prepare`` made room for."""

    async def call(self, task: int) -> int:
        """One measured call; returns how many messages it moved."""


class NoopPhase:
    name = "no-op"

    def __init__(self, client: aioredis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self.sha = ""

    async def load(self) -> None:
        self.sha = await self.client.script_load(NOOP_SCRIPT)

    async def prepare(self, calls_per_task: int) -> None:
        pass

    def has_work(self, task: int) -> bool:
        return True

    async def call(self, task: int) -> int:
        reply = await self.client.evalsha(self.sha, 1, self.key, "bench", 12345)
        if reply != 1:
            raise RuntimeError(f"no-op script replied {reply!r}")
        return 0


@dataclass
class Fleet:
    """Self-managed accounts and one paired device per task, all made by this run."""

    accounts: list[Account] = field(default_factory=list)
    devices: list[tuple[Account, DeviceRef]] = field(default_factory=list)
    index_keys: list[str] = field(default_factory=list)


async def build_fleet(broker: Broker, fleet: Fleet, run_id: str, device_count: int) -> None:
    """Fill ``fleet`` (as it goes, so that a failure half-way still leaves it to clean up)."""
    for n in range(min(ACCOUNTS, device_count)):
        email = f"bench-{run_id}-{n}@connecfy-bench.invalid"
        fleet.index_keys.append(keys.email_index(email))
        fleet.accounts.append(await broker.accounts.create(email, "self_managed", daily_quota=10**12))
    for n in range(device_count):
        account = fleet.accounts[n % len(fleet.accounts)]
        code = await broker.devices.create_pairing_code(account)
        device = await broker.devices.register(code.code, f"bench phone {n}")
        fleet.index_keys.append(keys.device_token_index(ids.sha256_hex(device.device_token)))
        fleet.devices.append((account, device.ref))


async def remove_fleet(client: aioredis.Redis, fleet: Fleet) -> None:
    """Delete every key of the fleet's shards, its index keys and its ``{shards}`` entries."""
    for account in fleet.accounts:
        prefix = keys.ShardKeys(account.shard).prefix
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            await client.unlink(key)
        await client.srem(keys.SHARDS, account.shard)
    if fleet.index_keys:
        await client.unlink(*fleet.index_keys)


class EnqueuePhase:
    """``Broker.enqueue`` of ``size`` messages in one call, each task to its own device:
    one message (the single send's path) or a batch (the batch send's)."""

    def __init__(self, broker: Broker, fleet: Fleet, size: int = 1) -> None:
        self.broker = broker
        self.fleet = fleet
        self.size = size
        self.name = "enqueue" if size == 1 else "batch"

    async def prepare(self, calls_per_task: int) -> None:
        pass

    def has_work(self, task: int) -> bool:
        return True

    async def call(self, task: int) -> int:
        account, device = self.fleet.devices[task]
        result = await self.broker.messages.enqueue(account, [OutgoingMessage(TO, TEXT, device.device_id)] * self.size)
        if result.duplicate or len(result.ids) != self.size:
            raise RuntimeError(f"enqueue of {self.size} returned {len(result.ids)} ids")
        return self.size


class ClaimPhase:
    name = "claim"

    def __init__(self, broker: Broker, fleet: Fleet, start_ms: int) -> None:
        self.broker = broker
        self.fleet = fleet
        self.queued = [0] * len(fleet.devices)
        self.claims_left = [0] * len(fleet.devices)
        self.clocks = [start_ms] * len(fleet.devices)
        # One broker per device, each on that device's own clock (they share the client
        # and the loaded scripts): the broker's clock is the only time a claim is given.
        self.claimers = [
            Broker(broker.redis, broker.settings, broker.scripts, clock=self._clock_of(task))
            for task in range(len(fleet.devices))
        ]

    def _clock_of(self, task: int) -> Callable[[], int]:
        return lambda: self.clocks[task]

    async def prepare(self, calls_per_task: int) -> None:
        await asyncio.gather(
            *(self.refill(task, calls_per_task * CLAIM_LIMIT) for task in range(len(self.fleet.devices)))
        )

    async def refill(self, task: int, wanted: int) -> None:
        """Queue messages for the task's device until it holds ``wanted``."""
        account, device = self.fleet.devices[task]
        batch_max = self.broker.settings.batch_max_messages
        while self.queued[task] < wanted:
            count = min(batch_max, wanted - self.queued[task])
            batch = [OutgoingMessage(TO, TEXT, device.device_id)] * count
            result = await self.broker.messages.enqueue(account, batch)
            self.queued[task] += len(result.ids)
        self.claims_left[task] = self.queued[task] // CLAIM_LIMIT

    def has_work(self, task: int) -> bool:
        return self.claims_left[task] > 0

    async def call(self, task: int) -> int:
        self.clocks[task] += CLAIM_CLOCK_STEP_MS
        _, device = self.fleet.devices[task]
        claimed = await self.claimers[task].messages.claim(device, CLAIM_LIMIT)
        if len(claimed) != CLAIM_LIMIT:
            raise RuntimeError(f"claim returned {len(claimed)} messages, not {CLAIM_LIMIT}")
        self.queued[task] -= CLAIM_LIMIT
        self.claims_left[task] -= 1
        return CLAIM_LIMIT


# Running ---------------------------------------------------------------------------


async def work(phase: Phase, task: int, deadline: float) -> tuple[int, int, bool]:
    """Call until the deadline (or until the task's share runs out): calls, messages, ran dry."""
    calls = messages = 0
    while time.perf_counter() < deadline:
        if not phase.has_work(task):
            return calls, messages, True
        messages += await phase.call(task)
        calls += 1
    return calls, messages, False


async def run_round(client: aioredis.Redis, phase: Phase, concurrency: int, seconds: float) -> RoundResult:
    before = await read_server_counters(client)
    cpu_start = time.process_time()
    start = time.perf_counter()
    tallies = await asyncio.gather(*(work(phase, task, start + seconds) for task in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    after = await read_server_counters(client)
    return RoundResult(
        calls=sum(t[0] for t in tallies),
        messages=sum(t[1] for t in tallies),
        seconds=elapsed,
        client_cpu_seconds=cpu,
        server_calls=after.evalsha_calls - before.evalsha_calls,
        server_usec=after.evalsha_usec - before.evalsha_usec,
        server_cpu_seconds=after.cpu_seconds - before.cpu_seconds,
        ran_dry=any(t[2] for t in tallies),
    )


async def run_phase(
    client: aioredis.Redis, phase: Phase, args: argparse.Namespace, expected_rate: float
) -> PhaseResult:
    """A warm-up round, then ``args.rounds`` measured ones; progress goes to stderr."""
    results = []
    for index in range(args.rounds + 1):
        calls_per_task = math.ceil(expected_rate * args.seconds * REFILL_HEADROOM / args.concurrency) + 1
        await phase.prepare(calls_per_task)
        result = await run_round(client, phase, args.concurrency, args.seconds)
        expected_rate = max(expected_rate, result.calls_per_second)
        label = "warm-up" if index == 0 else f"round {index}/{args.rounds}"
        dry = " (ran dry)" if result.ran_dry else ""
        print(
            f"  {phase.name:8} {label:11} {result.calls_per_second:10,.0f} calls/s "
            f"{result.server_usec_per_call:8.1f} us/call on the server{dry}",
            file=sys.stderr,
        )
        results.append(result)
    return PhaseResult(phase.name, results[0], results[1:])


async def run_broker_phase(
    client: aioredis.Redis,
    args: argparse.Namespace,
    run_id: str,
    make_phase: Callable[[Broker, Fleet], Phase],
    expected_rate: float,
    private: bool,
) -> PhaseResult:
    """Set up a broker and a fleet, measure, then leave the Redis as it was."""
    broker = Broker(client, BENCH_SETTINGS)
    await broker.start()
    fleet = Fleet()
    try:
        await build_fleet(broker, fleet, run_id, args.concurrency)
        return await run_phase(client, make_phase(broker, fleet), args, expected_rate)
    finally:
        if private:
            await client.flushdb()
        else:
            await remove_fleet(client, fleet)


async def measure(client: aioredis.Redis, args: argparse.Namespace, private: bool) -> list[PhaseResult]:
    run_id = uuid.uuid4().hex[:12]
    pool_registered = await client.sismember(keys.SHARDS, keys.pool_shard())
    noop = NoopPhase(client, f"connecfy-bench:{run_id}:noop")
    await noop.load()
    try:
        baseline = await run_phase(client, noop, args, expected_rate=0)
        enqueue = await run_broker_phase(
            client, args, run_id, EnqueuePhase, baseline.median("calls_per_second"), private
        )
        batch = await run_broker_phase(
            client,
            args,
            run_id,
            lambda b, f: EnqueuePhase(b, f, args.batch),
            enqueue.median("calls_per_second") / args.batch,
            private,
        )
        claim = await run_broker_phase(
            client, args, run_id, lambda b, f: ClaimPhase(b, f, b.clock()), enqueue.median("calls_per_second"), private
        )
    finally:
        if not private and not pool_registered:
            await client.srem(keys.SHARDS, keys.pool_shard())
    return [baseline, enqueue, batch, claim]


# Environment and output ------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def private_redis_binary() -> str:
    return DEBIAN_REDIS if os.access(DEBIAN_REDIS, os.X_OK) else find_redis_server()


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"


def client_description() -> str:
    parser = DefaultParser.__name__
    return f"redis-py {redis.__version__} ({'hiredis' if 'Hiredis' in parser else parser})"


def print_table(phases: Sequence[PhaseResult]) -> None:
    baseline = phases[0]
    base_rate = baseline.median("calls_per_second")
    base_usec = baseline.median("server_usec_per_call")
    print(
        f"{'phase':8} {'calls/s':>10} {'vs no-op':>9} {'>=50%':>6} {'msgs/s':>10} "
        f"{'srv us/call':>12} {'x no-op':>8} {'srv busy':>9} {'srv CPU':>8} {'client CPU':>11}"
    )
    for phase in phases:
        rate = phase.median("calls_per_second")
        usec = phase.median("server_usec_per_call")
        ratio = rate / base_rate
        verdict = "-" if phase is baseline else ("PASS" if ratio >= TARGET_RATIO else "BELOW")
        messages = f"{phase.median('messages_per_second'):10,.0f}" if phase.name in ("claim", "batch") else f"{'-':>10}"
        print(
            f"{phase.name:8} {rate:10,.0f} {ratio:9.1%} {verdict:>6} {messages} "
            f"{usec:12.1f} {usec / base_usec:8.1f} {phase.median('server_busy'):9.0%} "
            f"{phase.median('server_cpu'):8.0%} {phase.median('client_cpu'):11.0%}"
        )
    for phase in phases:
        if phase.dry_rounds:
            print(
                f"note: {phase.name}: {phase.dry_rounds} measured round(s) ran out of queued "
                "messages before the deadline (figures cover the time actually run)"
            )


def write_json(path: str, environment: dict[str, Any], phases: Sequence[PhaseResult]) -> None:
    base_rate = phases[0].median("calls_per_second")
    document = {
        **environment,
        "target_ratio": TARGET_RATIO,
        "phases": {
            phase.name: {
                **phase.figures(),
                "ratio_to_noop": phase.median("calls_per_second") / base_rate,
            }
            for phase in phases
        },
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Calls per second of Broker.enqueue and Broker.claim next to a no-op EVALSHA."
    )
    parser.add_argument(
        "--redis-url",
        help="use this running Redis instead of a private one (never flushed; the bench deletes only its own keys)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="asyncio tasks (default 32)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each round (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up (default 5)")
    parser.add_argument("--batch", type=int, default=100, help="messages per call in the batch phase (default 100)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or not 0 < args.seconds <= 600:
        parser.error("--concurrency and --rounds must be at least 1, --seconds in (0, 600]")
    return args


async def bench(args: argparse.Namespace, loop_name: str) -> tuple[dict[str, Any], list[PhaseResult]]:
    with contextlib.ExitStack() as stack:
        if args.redis_url:
            url, binary, private = args.redis_url, None, False
        else:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="connecfy-bench-"))
            binary = private_redis_binary()
            url = stack.enter_context(RedisServer(data_dir, binary=binary, appendonly=False)).url
            private = True
        client = aioredis.Redis.from_url(
            url, max_connections=args.concurrency, socket_timeout=30, socket_connect_timeout=5
        )
        try:
            version = (await client.info("server"))["redis_version"]
            where = f"private {binary}, appendonly off" if private else redact(url)
            environment = {
                "command": [redact(a) for a in sys.argv],
                "redis_version": str(version),
                "redis": where,
                "python": platform.python_version(),
                "event_loop": loop_name,
                "client": client_description(),
                "cpu_count": os.cpu_count(),
                "load_average_at_start": os.getloadavg(),
                "platform": platform.platform(),
                "concurrency": args.concurrency,
                "seconds_per_round": args.seconds,
                "rounds": args.rounds,
            }
            print(
                f"redis {version} ({where}); python {environment['python']}, {loop_name}, "
                f"{environment['client']}; {environment['cpu_count']} CPUs, "
                f"load average {environment['load_average_at_start'][0]:.2f}"
            )
            print(
                f"{args.concurrency} tasks on one client (pool of {args.concurrency}); "
                f"warm-up + {args.rounds} rounds x {args.seconds:g} s per phase; medians\n",
                flush=True,
            )
            return environment, await measure(client, args, private)
        finally:
            await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loop_factory, loop_name = event_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        environment, phases = runner.run(bench(args, loop_name))
    print()
    print_table(phases)
    if args.json:
        write_json(args.json, environment, phases)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
