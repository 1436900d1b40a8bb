#!/usr/bin/env python3
"""Scale-out in one run: one Redis against a Redis Cluster, and the platform pool's
shards on the cluster. Every Redis here is started by the bench on loopback (Debian's
``redis-server``, append-only as ``deploy/redis/connecfy.conf``; the cluster has
``--primaries`` primaries, no replicas: ``bench/load/redis_nodes.py``).

Run it from the repository root::

    python3 bench/cluster_bench.py --json bench/results/cluster.json

Two parts, each alternating its configurations round by round (A B C, C B A, ...) so
that a drift of the machine's load falls on all of them:

``steady`` (over HTTP)
    ``python3 -m bench.load steady`` (a subprocess per run, each with its own ``connecfy
    serve --workers 2`` and its own Redis) with the same load against one redis-server
    (``--redis single``, the baseline), the cluster (``--redis cluster``) and the cluster
    with ``CONNECFY_POOL_SHARDS=4``. Per configuration, the medians over the rounds of
    each run's p50 and p99 of the sends (session and external), the batches, the claims
    (phones' polls), heartbeats and status reports; the server's CPU (workers and the
    background process) and each Redis node's CPU (``psutil``, user + system over the
    load's wall time), the nodes named by their slots: ``n1`` holds 0-5460, ``n2``
    5461-10922, ``n3`` 10923-16383 (with three primaries). Each run checks the bench's
    invariants (every accepted message claimed once and finished).

``pool`` (the broker, no HTTP)
    Platform pool claims with ``--senders`` API-only senders and ``--pool-phones`` pool
    phones, all made through the broker as the API makes them: the senders queue a
    backlog of ``--backlog`` messages (batches of 100, all senders at once), then every
    phone claims 10 at a time, all at once, until a claim hands it nothing; claims/s and
    messages/s are over that drain. Configurations: one redis-server with one pool shard
    (the baseline), and the cluster with ``CONNECFY_POOL_SHARDS`` 1 and 4
    (``--shards``). Each phone claims on its own clock, 10 s later each time, as in
    ``bench/broker_bench.py`` (a phone's send window stays the size a real phone's is);
    budgets, leases and presence are made long enough to stop nothing. Every message
    queued must be claimed exactly once (else exit 1). Reported per configuration: the
    medians of claims/s, messages/s, claim latency p50/p99, each node's CPU, the script
    calls each node ran per claim and their time in Redis (``INFO commandstats``), this
    process's CPU, the backlog's enqueue rate, and which node holds which pool shard;
    and CPU per claim (Redis in all, its busiest node, this process), which the
    machine's other load changes less than it changes rates. The busiest node's CPU per
    claim bounds what the cluster could claim with a core per node: 10^6 / it claims/s.

All of it shares the machine with the load generator (and with anything else running
on it): read ratios within one run, not absolute figures. The exit status is 1 when an
invariant broke or a run failed, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.broker_bench import event_loop_factory
from bench.load.client import percentile
from bench.load.redis_nodes import HOST, RedisNodes
from broker import Broker, Settings
from broker.context import wall_clock_ms
from broker.records import Account, OutgoingMessage, RegisteredDevice
from broker.redis_client import RedisClient, open_redis

ROOT = Path(__file__).resolve().parent.parent
TO = "+15551234567"
TEXT = "Your Connecfy code is 123456"
CLAIM_LIMIT = 10
CLAIM_CLOCK_STEP_MS = 10_000
BATCH = 100
BIG = 10**9

STEADY_CONFIGS: dict[str, tuple[str, int]] = {
    "single": ("single", 1),
    "cluster": ("cluster", 1),
    "cluster, 4 pool shards": ("cluster", 4),
}
STEADY_KINDS = ("send", "batch", "poll", "heartbeat", "status")


def alternating(names: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, name) in the order run: forwards, then backwards, and so on."""
    order = []
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            order.append((index + 1, name))
    return order


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def node_labels(slots_by_node: dict[str, str]) -> dict[str, str]:
    """``host:port`` → ``n1``, ``n2``, ... in the order of their first slot (so runs with
    different ports name the same slots alike); ``single`` for one node."""
    if len(slots_by_node) <= 1:
        return {name: "single" for name in slots_by_node}
    first = {name: int(slots.split(",")[0].split("-")[0]) for name, slots in slots_by_node.items()}
    return {name: f"n{i + 1}" for i, name in enumerate(sorted(first, key=first.__getitem__))}


# Part 1: the steady scenario over HTTP -------------------------------------------------


def steady_command(args: argparse.Namespace, kind: str, shards: int, out: Path, log: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "bench.load",
        "steady",
        "--redis",
        kind,
        "--primaries",
        str(args.primaries),
        "--phones",
        str(args.phones),
        "--rate",
        str(args.rate),
        "--seconds",
        str(args.seconds),
        "--time-scale",
        str(args.time_scale),
        "--no-baselines",
        "--quiet",
        "--json",
        str(out),
        "--server-log",
        str(log),
    ]
    if shards != 1:
        command += ["--server-setting", f"CONNECFY_POOL_SHARDS={shards}"]
    return command


def steady_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one ``bench.load steady`` run that this bench compares."""
    rows = {row["name"]: row for row in result["requests"] + result["end_to_end"]}
    redis_part = result.get("redis", {})
    labels = node_labels(redis_part.get("slots_by_node", {}))
    by_node = {labels.get(n, n): v for n, v in redis_part.get("cpu_percent_by_node", {}).items()}
    summary: dict[str, Any] = {
        f"{kind}_{q}_ms": rows[kind][f"{q}_ms"] for kind in STEADY_KINDS for q in ("p50", "p99") if kind in rows
    }
    summary |= {
        "requests_per_second": sum(rows[k]["per_second"] for k in STEADY_KINDS if k in rows),
        "errors": sum(rows[k]["errors"] for k in STEADY_KINDS if k in rows),
        "accepted_to_claimed_p50_ms": rows["202 → claimed"]["p50_ms"],
        "server_cpu_percent": result["server"]["cpu_percent"],
        "redis_cpu_percent_by_node": dict(sorted(by_node.items())),
        "redis_cpu_percent_total": sum(by_node.values()) if by_node else None,
        "redis_cpu_percent_busiest_node": max(by_node.values()) if by_node else None,
        "client_cpu_percent": result["client_cpu_percent"],
        "client_lag_p99_ms": result["client_lag_ms"]["p99"],
        "accepted": result["invariants"]["accepted"],
        "invariants_ok": result["invariants"]["ok"],
    }
    return summary


def server_warnings(log: Path) -> dict[str, int]:
    """The server log's warnings and errors, counted by logger and message (a 503's
    cause is logged as one), the most frequent first."""
    counts: Counter[str] = Counter()
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line:
                counts[f"(not JSON) {line.strip()[:200]}"] += 1
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            counts[f"{entry['level']} {entry.get('logger')}: {str(entry.get('message'))[:200]!r}"] += 1
    return dict(counts.most_common())


def run_steady(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    failed = False
    for round_no, name in alternating(list(STEADY_CONFIGS), args.steady_rounds):
        kind, shards = STEADY_CONFIGS[name]
        out = workdir / f"steady-{round_no}-{kind}-{shards}.json"
        log = workdir / f"steady-{round_no}-{kind}-{shards}.log"
        command = steady_command(args, kind, shards, out, log)
        print(f"steady, round {round_no}: {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.run_timeout)
        took = time.monotonic() - started
        if not out.exists():
            print(f"  failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}", file=sys.stderr)
            runs.append({"config": name, "round": round_no, "returncode": done.returncode, "failed": True})
            failed = True
            continue
        result = json.loads(out.read_text())
        result.pop("series", None)
        summary = steady_summary(result)
        summary["server_warnings"] = server_warnings(log)
        failed |= done.returncode != 0 or not summary["invariants_ok"]
        print(
            f"  {took:.0f} s; send p99 {summary['send_p99_ms']:.1f} ms, poll p99 {summary['poll_p99_ms']:.1f} ms; "
            f"Redis CPU { ({k: round(v) for k, v in summary['redis_cpu_percent_by_node'].items()}) }; "
            f"errors {summary['errors']}; invariants "
            f"{'OK' if summary['invariants_ok'] else 'BROKEN'}; exit {done.returncode}",
            file=sys.stderr,
            flush=True,
        )
        runs.append(
            {
                "config": name,
                "round": round_no,
                "returncode": done.returncode,
                "wall_seconds": took,
                "summary": summary,
                "result": result,
            }
        )
    medians = {}
    for name in STEADY_CONFIGS:
        summaries = [r["summary"] for r in runs if r["config"] == name and "summary" in r]
        if not summaries:
            continue
        numbers = [k for k, v in summaries[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
        figures: dict[str, Any] = {k: median([s[k] for s in summaries]) for k in numbers}
        nodes = sorted({n for s in summaries for n in s["redis_cpu_percent_by_node"]})
        figures["redis_cpu_percent_by_node"] = {
            n: median([s["redis_cpu_percent_by_node"].get(n) for s in summaries]) for n in nodes
        }
        figures["invariants_ok"] = all(s["invariants_ok"] for s in summaries)
        warnings: Counter[str] = Counter()
        for summary in summaries:
            warnings.update(summary["server_warnings"])
        figures["server_warnings_all_rounds"] = dict(warnings.most_common())
        figures["rounds"] = len(summaries)
        medians[name] = figures
    base = medians.get("single", {})
    ratios = {
        name: {
            k: ratio(v, base.get(k))
            for k, v in figures.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "rounds"
        }
        for name, figures in medians.items()
        if name != "single"
    }
    return {"runs": runs, "medians": medians, "ratios_to_single": ratios, "failed": failed}


# Part 2: platform pool claims through the broker ---------------------------------------

PHONE_CLOCK: ContextVar[int | None] = ContextVar("phone_clock", default=None)


def bench_clock() -> int:
    """A claiming phone's own clock (see the module's doc), else the wall clock."""
    at = PHONE_CLOCK.get()
    return wall_clock_ms() if at is None else at


def pool_settings(shards: int) -> Settings:
    return Settings(
        pool_shards=shards,
        device_segments_per_minute=BIG,
        device_segments_per_day=BIG,
        lease_seconds=10**7,
        presence_ttl_seconds=10**7,
        message_ttl_seconds=10**7,
        tasks_per_minute=BIG,
        tasks_burst=BIG,
        sends_per_second=BIG,
        sends_burst=BIG,
        quota_api_only=10**12,
    )


@dataclass
class NodeCounters:
    cpu_seconds: dict[str, float]
    evalsha_calls: dict[str, int]
    evalsha_usec: dict[str, int]


def read_nodes(nodes: RedisNodes) -> NodeCounters:
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for name in nodes.names():
        host, port = name.rsplit(":", 1)
        with redis.Redis(host=host, port=int(port), socket_timeout=10) as client:
            stats = client.info("commandstats").get("cmdstat_evalsha", {})
        calls[name] = int(stats.get("calls", 0))
        usec[name] = int(stats.get("usec", 0))
    return NodeCounters(nodes.cpu_seconds(), calls, usec)


@dataclass
class PoolRound:
    config: str
    round: int
    kind: str
    shards: int
    senders: int
    phones: int
    queued: int
    enqueue_seconds: float
    enqueue_cpu_percent_by_node: dict[str, float]
    drain_seconds: float
    claims: int
    claims_with_messages: int
    messages: int
    claim_p50_ms: float
    claim_p99_ms: float
    cpu_percent_by_node: dict[str, float]
    evalsha_per_claim_by_node: dict[str, float]
    script_us_per_claim_by_node: dict[str, float]
    client_cpu_percent: float
    shards_by_node: dict[str, list[str]]
    claimed_twice: int
    lost: int
    errors: list[str] = field(default_factory=list)

    @property
    def claims_per_second(self) -> float:
        return self.claims / self.drain_seconds

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.drain_seconds

    @property
    def enqueue_messages_per_second(self) -> float:
        return self.queued / self.enqueue_seconds

    def cpu_us_per_claim(self, percent: float) -> float:
        """A share of one core during the drain as CPU microseconds per claim."""
        return percent / 100 * 1e6 / self.claims_per_second

    def figures(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "claims_per_second": self.claims_per_second,
            "messages_per_second": self.messages_per_second,
            "enqueue_messages_per_second": self.enqueue_messages_per_second,
            "cpu_percent_total": sum(self.cpu_percent_by_node.values()),
            "redis_cpu_us_per_claim": self.cpu_us_per_claim(sum(self.cpu_percent_by_node.values())),
            "busiest_node_cpu_us_per_claim": self.cpu_us_per_claim(max(self.cpu_percent_by_node.values())),
            "client_cpu_us_per_claim": self.cpu_us_per_claim(self.client_cpu_percent),
        }


def per_node_percent(
    before: dict[str, float], after: dict[str, float], seconds: float, labels: dict[str, str]
) -> dict[str, float]:
    return {labels[n]: 100 * (after[n] - before[n]) / seconds for n in sorted(after, key=labels.__getitem__)}


def shards_by_node(nodes: RedisNodes, labels: dict[str, str], tags: Sequence[str]) -> dict[str, list[str]]:
    """Which node serves each pool shard's hash tag."""
    owners: dict[str, list[str]] = {label: [] for label in sorted(labels.values())}
    ranges = nodes.slots()
    for tag in tags:
        slot = key_slot(("{" + tag + "}").encode())
        for name, spans in ranges.items():
            if spans == "all" or any(int(a) <= slot <= int(b) for a, b in (s.split("-") for s in spans.split(","))):
                owners[labels[name]].append(tag)
                break
    return owners


async def pool_round(
    nodes: RedisNodes,
    client: RedisClient,
    config: str,
    round_no: int,
    shards: int,
    args: argparse.Namespace,
    backlog: int,
) -> PoolRound:
    """One drain of a fresh backlog on ``nodes`` (flushed first) with ``shards`` pool
    shards, through a new broker on ``client`` (kept from round to round, so its
    connections are made once)."""
    await asyncio.to_thread(nodes.flush)
    labels = node_labels(nodes.slots())
    broker = Broker(client, pool_settings(shards), clock=bench_clock)
    errors: list[str] = []
    await broker.start()
    run_id = uuid.uuid4().hex[:8]
    senders: list[Account] = [
        await broker.accounts.create(f"pool-{run_id}-{n}@bench.invalid", "api_only") for n in range(args.senders)
    ]
    phones: list[RegisteredDevice] = []
    for n in range(args.pool_phones):
        code = await broker.devices.create_pairing_code(None)
        phone = await broker.devices.register(code.code, f"bench pool phone {n}")
        await broker.presence.heartbeat(phone.ref)
        phones.append(phone)

    each = backlog // args.senders
    queued: list[str] = []

    async def fill(sender: Account) -> None:
        left = each
        while left:
            count = min(BATCH, left)
            result = await broker.messages.enqueue(sender, [OutgoingMessage(TO, TEXT)] * count)
            queued.extend(result.ids)
            left -= count

    before = await asyncio.to_thread(read_nodes, nodes)
    started = time.perf_counter()
    await asyncio.gather(*(fill(s) for s in senders))
    enqueue_seconds = time.perf_counter() - started
    after_enqueue = await asyncio.to_thread(read_nodes, nodes)

    latencies: list[float] = []
    claimed: list[str] = []
    counts = {"claims": 0, "with_messages": 0}
    start_ms = wall_clock_ms()

    async def drain(phone: RegisteredDevice) -> None:
        PHONE_CLOCK.set(start_ms)  # this task's own context
        while True:
            PHONE_CLOCK.set(PHONE_CLOCK.get() + CLAIM_CLOCK_STEP_MS)  # type: ignore[operator]
            asked = time.perf_counter()
            try:
                batch = await broker.messages.claim(phone.ref, CLAIM_LIMIT)
            except Exception as exc:  # a failed claim is reported, and ends this phone's drain
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.perf_counter() - asked)
            counts["claims"] += 1
            if not batch:
                return
            counts["with_messages"] += 1
            claimed.extend(m.id for m in batch)

    cpu_start = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(drain(p) for p in phones))
    drain_seconds = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_start
    after = await asyncio.to_thread(read_nodes, nodes)
    tags = await broker.pool_shards.in_use()
    unique = set(claimed)
    return PoolRound(
        config=config,
        round=round_no,
        kind=nodes.kind,
        shards=shards,
        senders=args.senders,
        phones=args.pool_phones,
        queued=len(queued),
        enqueue_seconds=enqueue_seconds,
        enqueue_cpu_percent_by_node=per_node_percent(
            before.cpu_seconds, after_enqueue.cpu_seconds, enqueue_seconds, labels
        ),
        drain_seconds=drain_seconds,
        claims=counts["claims"],
        claims_with_messages=counts["with_messages"],
        messages=len(claimed),
        claim_p50_ms=percentile(latencies, 50) * 1000,
        claim_p99_ms=percentile(latencies, 99) * 1000,
        cpu_percent_by_node=per_node_percent(after_enqueue.cpu_seconds, after.cpu_seconds, drain_seconds, labels),
        evalsha_per_claim_by_node={
            labels[n]: (after.evalsha_calls[n] - after_enqueue.evalsha_calls[n]) / max(1, counts["claims"])
            for n in sorted(after.evalsha_calls, key=labels.__getitem__)
        },
        script_us_per_claim_by_node={
            labels[n]: (after.evalsha_usec[n] - after_enqueue.evalsha_usec[n]) / max(1, counts["claims"])
            for n in sorted(after.evalsha_usec, key=labels.__getitem__)
        },
        client_cpu_percent=100 * client_cpu / drain_seconds,
        shards_by_node=shards_by_node(nodes, labels, tags),
        claimed_twice=len(claimed) - len(unique),
        lost=len(set(queued) - unique),
        errors=errors[:10],
    )


POOL_FIGURES = (
    "claims_per_second",
    "messages_per_second",
    "claim_p50_ms",
    "claim_p99_ms",
    "client_cpu_percent",
    "cpu_percent_total",
    "redis_cpu_us_per_claim",
    "busiest_node_cpu_us_per_claim",
    "client_cpu_us_per_claim",
    "enqueue_messages_per_second",
)


async def run_pool(args: argparse.Namespace) -> dict[str, Any]:
    configs: dict[str, tuple[str, int]] = {"single, 1 pool shard": ("single", 1)}
    configs |= {f"cluster, {n} pool shard{'s' if n > 1 else ''}": ("cluster", n) for n in args.shards}
    rounds: list[PoolRound] = []
    # Started in this thread: each node ends with the thread that started it.
    with RedisNodes("single") as single, RedisNodes("cluster", primaries=args.primaries) as cluster:
        nodes = {"single": single, "cluster": cluster}
        # Enough connections per node that no claim finds them all busy (the cluster
        # client fails such a command at once, where the single-node pool waits).
        options: dict[str, Any] = {"max_connections": 4 * args.pool_phones + 16, "command_timeout": 60}
        clients = {kind: await open_redis(n.url, **options) for kind, n in nodes.items()}
        try:
            warm_up = max(args.senders, args.backlog // 5)
            for name, (kind, shards) in configs.items():  # one small drain of each, not counted
                await pool_round(nodes[kind], clients[kind], name, 0, shards, args, warm_up)
            for round_no, name in alternating(list(configs), args.pool_rounds):
                kind, shards = configs[name]
                result = await pool_round(nodes[kind], clients[kind], name, round_no, shards, args, args.backlog)
                rounds.append(result)
                print(
                    f"pool, round {round_no}: {name}: {result.claims_per_second:,.0f} claims/s, "
                    f"{result.messages_per_second:,.0f} messages/s, p99 {result.claim_p99_ms:.1f} ms; "
                    f"Redis CPU { ({k: round(v) for k, v in result.cpu_percent_by_node.items()}) }; "
                    f"client CPU {result.client_cpu_percent:.0f}%; lost {result.lost}, twice {result.claimed_twice}"
                    + (f"; errors {result.errors[:2]}" if result.errors else ""),
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            for client in clients.values():
                await client.aclose()
    medians: dict[str, dict[str, Any]] = {}
    for name in configs:
        mine = [r.figures() for r in rounds if r.config == name]
        figures: dict[str, Any] = {k: median([r[k] for r in mine]) for k in POOL_FIGURES}
        for part in (
            "cpu_percent_by_node",
            "evalsha_per_claim_by_node",
            "script_us_per_claim_by_node",
            "enqueue_cpu_percent_by_node",
        ):
            figures[part] = {n: median([r[part][n] for r in mine]) for n in mine[0][part]}
        figures["shards_by_node"] = mine[0]["shards_by_node"]
        figures["rounds"] = len(mine)
        medians[name] = figures
    base = medians["single, 1 pool shard"]
    one = medians.get("cluster, 1 pool shard", {})
    return {
        "configs": {name: {"redis": kind, "pool_shards": n} for name, (kind, n) in configs.items()},
        "rounds": [r.figures() for r in rounds],
        "medians": medians,
        "ratios_to_single": {
            name: {k: ratio(figures[k], base[k]) for k in POOL_FIGURES} for name, figures in medians.items()
        },
        "ratios_to_cluster_1_shard": {
            name: {k: ratio(figures[k], one.get(k)) for k in POOL_FIGURES}
            for name, figures in medians.items()
            if name.startswith("cluster")
        },
        "failed": any(r.lost or r.claimed_twice or r.errors for r in rounds),
    }


# Output ---------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ",.1f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_steady(part: dict[str, Any], out: Callable[[str], None]) -> None:
    medians, ratios = part["medians"], part["ratios_to_single"]
    out("\nsteady over HTTP, medians over the rounds (ratio to single in brackets)\n")
    names = list(medians)
    out(f"{'':26}" + "".join(f"{n:>30}" for n in names))
    rows = [(f"{k} {q} ms", f"{k}_{q}_ms") for k in STEADY_KINDS for q in ("p50", "p99")]
    rows += [
        ("errors", "errors"),
        ("server CPU %", "server_cpu_percent"),
        ("Redis CPU % (all nodes)", "redis_cpu_percent_total"),
        ("Redis CPU % busiest node", "redis_cpu_percent_busiest_node"),
        ("generator CPU %", "client_cpu_percent"),
        ("generator lag p99 ms", "client_lag_p99_ms"),
    ]
    for label, key in rows:
        cells = []
        for n in names:
            value = medians[n].get(key)
            r = ratios.get(n, {}).get(key)
            cells.append(f"{fmt(value)}" + (f" ({r:.2f}×)" if r is not None else ""))
        out(f"{label:26}" + "".join(f"{c:>30}" for c in cells))
    for n in names:
        split = "; ".join(f"{node} {fmt(v, '.0f')}%" for node, v in medians[n]["redis_cpu_percent_by_node"].items())
        out(f"Redis CPU by node, {n}: {split}; invariants {'OK' if medians[n]['invariants_ok'] else 'BROKEN'}")
    for n in names:
        for warning, count in list(medians[n]["server_warnings_all_rounds"].items())[:5]:
            out(f"server log, {n}, all rounds: {count} × {warning}")


def print_pool(part: dict[str, Any], out: Callable[[str], None]) -> None:
    medians, ratios = part["medians"], part["ratios_to_single"]
    out("\nplatform pool claims through the broker, medians over the rounds (ratio to single in brackets)\n")
    names = list(medians)
    out(f"{'':26}" + "".join(f"{n:>30}" for n in names))
    labels = {
        "claims_per_second": "claims/s",
        "messages_per_second": "messages claimed/s",
        "claim_p50_ms": "claim p50 ms",
        "claim_p99_ms": "claim p99 ms",
        "cpu_percent_total": "Redis CPU % (all nodes)",
        "client_cpu_percent": "client CPU %",
        "redis_cpu_us_per_claim": "Redis CPU µs/claim",
        "busiest_node_cpu_us_per_claim": "busiest node µs/claim",
        "client_cpu_us_per_claim": "client CPU µs/claim",
        "enqueue_messages_per_second": "backlog enqueue msgs/s",
    }
    for key, label in labels.items():
        # A ratio is n/a when its single-node base read 0 (a run too short for Redis's CPU clock).
        cells = [f"{fmt(medians[n][key])} ({fmt(ratios[n][key], '.2f')}×)" for n in names]
        out(f"{label:26}" + "".join(f"{c:>30}" for c in cells))
    for n in names:
        m = medians[n]
        cpu = "; ".join(f"{node} {v:.0f}%" for node, v in m["cpu_percent_by_node"].items())
        calls = "; ".join(
            f"{node} {v:.2f} ({m['script_us_per_claim_by_node'][node]:.0f} µs)"
            for node, v in m["evalsha_per_claim_by_node"].items()
        )
        homes = "; ".join(f"{node}: {', '.join(t) or '-'}" for node, t in m["shards_by_node"].items())
        out(
            f"{n}: Redis CPU by node {cpu}; script calls per claim by node (their time in Redis) {calls}; pool shards {homes}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primaries", type=int, default=3, help="the cluster's primaries (default 3)")
    parser.add_argument("--skip-steady", action="store_true")
    parser.add_argument("--skip-pool", action="store_true")
    steady = parser.add_argument_group("steady (bench.load)")
    steady.add_argument("--steady-rounds", type=int, default=2)
    steady.add_argument("--phones", type=int, default=1000)
    steady.add_argument("--rate", type=float, default=75.0)
    steady.add_argument("--seconds", type=float, default=20.0)
    steady.add_argument("--time-scale", type=float, default=0.25)
    steady.add_argument("--run-timeout", type=float, default=300.0, help="seconds one steady run may take")
    pool = parser.add_argument_group("pool claims (broker)")
    pool.add_argument("--pool-rounds", type=int, default=3)
    pool.add_argument("--senders", type=int, default=40, help="API-only senders (default 40)")
    pool.add_argument("--pool-phones", type=int, default=64, help="pool phones claiming at once (default 64)")
    pool.add_argument("--backlog", type=int, default=40_000, help="messages queued before each drain")
    pool.add_argument("--shards", type=int, nargs="+", default=[1, 4], help="pool shards on the cluster (default 1 4)")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.senders < 1 or args.pool_phones < 1 or args.backlog < args.senders:
        parser.error("--senders and --pool-phones must be at least 1, --backlog at least --senders")
    return args


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    document: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_at_start": os.getloadavg(),
        "arguments": vars(args),
    }
    started = time.monotonic()
    if not args.skip_steady:
        with tempfile.TemporaryDirectory(prefix="connecfy-cluster-bench-") as workdir:
            document["steady"] = await asyncio.to_thread(run_steady, args, Path(workdir))
    if not args.skip_pool:
        document["pool"] = await run_pool(args)
    document["load_average_at_end"] = os.getloadavg()
    document["wall_seconds"] = time.monotonic() - started
    return document


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loop_factory, _ = event_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        document = runner.run(main_async(args))
    print(
        f"one run, {document['wall_seconds']:.0f} s; load average at start "
        f"{document['load_average_at_start'][0]:.2f}, at end {document['load_average_at_end'][0]:.2f} "
        f"({os.cpu_count()} CPUs); Redis nodes on {HOST}"
    )
    if "steady" in document:
        print_steady(document["steady"], print)
    if "pool" in document:
        print_pool(document["pool"], print)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    failed = document.get("steady", {}).get("failed") or document.get("pool", {}).get("failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
