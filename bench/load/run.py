"""One scenario run from start to verdict, and the ``capacity`` run.

A scenario run: start (or reach) the server; measure the baselines; sign up the bench
accounts and lift their limits; pair the phones; start them in their generator
processes (``fleet``) and let them warm up (until every phone has polled); open the
measured window (``window``); run the senders for ``--seconds`` with the scenario's
events; close the window; let the phones drain until every accepted message is finished
(or ``--drain-seconds`` pass); stop the generators and take in their records; read every
bench account's history back; check the invariants; report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.load import baselines, comparisons, report, scenarios
from bench.load.accounts import LIFTED_BUDGET, Account
from bench.load.client import KINDS, Http, Recorder, percentile
from bench.load.deployment import Deployment, LocalServer
from bench.load.fleet import Fleet
from bench.load.ledger import Ledger
from bench.load.loop_lag import LoopLag
from bench.load.phones import PhoneBehaviour, pair
from bench.load.redis_nodes import RedisNodes
from bench.load.senders import Sender, SenderSwarm
from bench.load.window import Window


class Sampler:
    """Server CPU, each Redis process's CPU and Redis memory once a second, and the
    progress line."""

    def __init__(self, deployment: Deployment, recorder: Recorder, ledger: Ledger, progress: bool) -> None:
        self.deployment = deployment
        self.recorder = recorder
        self.ledger = ledger
        self.progress = progress
        self.phase = "setup"
        self.memory: list[int] = []
        self.cpu: list[tuple[float, float]] = []  # (run second, server CPU seconds)
        self.redis_cpu: list[tuple[float, dict[str, float]]] = []  # (run second, CPU seconds by node)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = self.recorder.now()
            cpu = await asyncio.to_thread(self.deployment.cpu_seconds)
            if cpu is not None:
                self.cpu.append((now, cpu))
            redis_cpu = await asyncio.to_thread(self.deployment.redis_cpu_seconds)
            if redis_cpu:
                self.redis_cpu.append((now, redis_cpu))
            memory = await self.deployment.redis_memory()
            if memory is not None:
                self.memory.append(memory)
            if self.progress:
                print(
                    report.progress_line(self.recorder, now, self.ledger.open_count(), self.phase),
                    file=sys.stderr,
                    flush=True,
                )

    def cpu_percent(self, start: float, end: float) -> float | None:
        inside = [(t, c) for t, c in self.cpu if start <= t <= end]
        if len(inside) < 2:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100 * (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def redis_cpu_percent(self, start: float, end: float) -> dict[str, float]:
        """Each Redis process's CPU from ``start`` to ``end``, % of one core, by node."""
        inside = [(t, c) for t, c in self.redis_cpu if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return {}
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return {node: 100 * (c1[node] - c0[node]) / (t1 - t0) for node in c1 if node in c0}


async def new_sender(
    deployment: Deployment,
    recorder: Recorder,
    operator: Account,
    label: str,
    account_type: str,
    run_id: str,
    accounts: list[Account],
) -> Sender:
    """A signed-up account with its limits lifted and an API key; ``accounts`` keeps it
    for closing and for reading its history back."""
    account = Account(deployment.base_url, recorder, label)
    accounts.append(account)
    await account.signup(account_type, run_id)
    await operator.raise_limits(account.id)
    return Sender(account, await account.api_key())


async def run_scenario(args: argparse.Namespace, deployment: Deployment) -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    ledger = Ledger()
    sampler = Sampler(deployment, recorder, ledger, args.progress)
    sampling = asyncio.create_task(sampler.run())
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "rate": args.rate,
        "seconds": args.seconds,
        "time_scale": args.time_scale,
        "long_poll": args.long_poll,
        "target": deployment.base_url,
        "workers": deployment.workers,
        "redis_kind": deployment.redis_kind,
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    if args.baselines:
        sampler.phase = "baseline"
        result["baselines"] = await baselines.measure_baselines(
            baseline_redis_url(deployment), deployment.workers or 1, args.baseline_seconds, args.connections
        )
    http = Http(deployment.base_url, recorder, connections=args.connections_swarm)
    accounts: list[Account] = []
    behaviour = PhoneBehaviour(
        time_scale=args.time_scale,
        send_delay=args.send_delay,
        failed_share=args.failed_share,
        delivered_share=args.delivered_share,
        long_poll=args.long_poll,
    )
    phones = Fleet(deployment.base_url, recorder, ledger, behaviour, processes=args.generator_processes, seed=args.seed)
    window = Window(deployment, recorder)
    parent_lag = LoopLag(recorder.now)
    lagging = asyncio.create_task(parent_lag.run())
    senders: list[Sender] = []
    try:
        sampler.phase = "pairing"
        run_id = secrets.token_hex(4)
        operator = Account(deployment.base_url, recorder, "operator")
        accounts.append(operator)
        await operator.login(deployment.operator_email, deployment.operator_password)
        fairness = args.scenario == "pool-fairness"
        pool_count = args.phones if fairness else args.pool_phones
        own_count = 0 if fairness else args.phones - pool_count
        if fairness:
            huge = await new_sender(deployment, recorder, operator, "huge", "api_only", run_id, accounts)
            small = [
                await new_sender(deployment, recorder, operator, f"small-{n + 1}", "api_only", run_id, accounts)
                for n in range(args.small_senders)
            ]
            senders = [huge, *small]
            streams = scenarios.fairness_streams(huge, small, args)
        else:
            own = await new_sender(deployment, recorder, operator, "own", "self_managed", run_id, accounts)
            pool = (
                await new_sender(deployment, recorder, operator, "api-only", "api_only", run_id, accounts)
                if pool_count
                else None
            )
            senders = [own, *([pool] if pool else [])]
            own.devices = [
                p.device_id
                for p in await phones.pair(http, own.account, own_count, budget=lifted_budget(args, own_count))
            ]
            streams = scenarios.mixed_streams(own, pool, args.batch_size)
        budget = {"segments_per_minute": args.pool_budget} if fairness else lifted_budget(args, pool_count)
        await phones.pair(http, operator, pool_count, pool=True, budget=budget)
        result.update(phones=len(phones.credentials), pool_phones=pool_count)
        print(
            f"bench: {own_count} own phones and {pool_count} pool phones paired at {recorder.now():.1f} s",
            file=sys.stderr,
        )

        sampler.phase = "warm-up"
        await phones.start()
        print(
            f"bench: {len(phones.generators)} generator processes started, "
            f"{'long polls' if args.long_poll else 'polling'}, at {recorder.now():.1f} s",
            file=sys.stderr,
        )
        await asyncio.sleep(behaviour.warm_up_seconds)
        await window.open()
        start = window.start
        if fairness and args.backlog:
            sampler.phase = "backlog"
            await send_backlog(http, ledger, senders[0], args.backlog, args.batch_size, recorder)
        rate, marks = scenarios.rate_function(args, start)
        marks.update(scenarios.event_marks(args))
        swarm = SenderSwarm(http, ledger, streams, rate, max_in_flight=args.max_in_flight)
        sampler.phase = "load"
        events = asyncio.create_task(scenario_events(args, deployment, phones, start, marks))
        await swarm.run(start, start + args.seconds)
        await swarm.wait()
        await window.close()
        load_end = window.end
        restart_at = await events

        sampler.phase = "drain"
        drain_deadline = load_end + args.drain_seconds
        while (ledger.open_count() or phones.in_flight()) and recorder.now() < drain_deadline:
            await asyncio.sleep(0.25)
        drained = recorder.now()
        await phones.stop()
        sampler.phase = "checking"
        server_status: dict[str, str] = {}
        for account in accounts[1:]:
            server_status.update(await account.history())
        invariants = ledger.check(server_status)
    finally:
        sampling.cancel()
        lagging.cancel()
        await phones.stop()
        await http.close()
        for account in accounts:
            await account.close()

    result["marks"] = {name: start + at for name, at in marks.items()}
    result["requests"] = [
        report.latency_row(
            kind,
            recorder.latencies[kind],
            args.seconds if kind in ("send", "batch") else drained,
            sum(recorder.errors[kind].values()),
        )
        for kind in KINDS
    ]
    result["end_to_end"] = end_to_end(ledger, args.seconds)
    result["errors"] = {kind: dict(counts) for kind, counts in recorder.errors.items() if counts}
    result["client_lag_ms"] = {name: percentile(recorder.lags, q) * 1000 for name, q in (("p50", 50), ("p99", 99))}
    result["client_lag_ms"]["max"] = max(recorder.lags, default=0.0) * 1000
    result["client_cpu_percent"] = 100 * time.process_time() / max(recorder.now(), 1e-9)
    result["server"] = {
        "cpu_percent": sampler.cpu_percent(start, load_end),
        "redis_used_memory_max": max(sampler.memory, default=None),
        "redis_used_memory_last": sampler.memory[-1] if sampler.memory else None,
    }
    result["redis"] = {
        "kind": deployment.redis_kind,
        "cpu_percent_by_node": sampler.redis_cpu_percent(start, load_end),
        "slots_by_node": deployment.redis_nodes.slots() if deployment.redis_nodes else {},
    }
    result["drain_seconds"] = drained - load_end
    result["rejected_reports"] = phones.rejected_reports
    result["window"] = window.figures(
        ledger, phones, len(phones.credentials), "long poll" if args.long_poll else "poll", parent_lag
    )
    result["messages_accepted_per_second"] = len(ledger.accepted) / args.seconds
    result["scenario_figures"] = scenario_figures(args, ledger, recorder, restart_at)
    result["ratios"] = ratio_lines(result, drained)
    result["invariants"] = invariants
    result["series"] = [
        {
            "second": second,
            "requests": dict(row.requests),
            "errors": dict(row.errors),
            "messages": row.messages,
            "p99_ms": {k: round(percentile(v, 99) * 1000, 2) for k, v in row.latencies.items()},
        }
        for second, row in sorted(recorder.seconds.items())
    ]
    return result, recorder


def baseline_redis_url(deployment: Deployment) -> str | None:
    """The Redis for the no-op EVALSHA baselines: not a cluster's node (the baselines'
    keys would be redirected), so a cluster run has the bare GET baseline alone."""
    return None if deployment.redis_kind == "cluster" else deployment.redis_url


def lifted_budget(args: argparse.Namespace, phones: int) -> dict[str, int] | None:
    """The lifted send budget when the planned load could bring a phone near the server's
    default (30 segments a minute), else None: pairing is then two requests a phone,
    not three, which matters for a swarm of 20,000."""
    peak = args.rate * (args.burst_factor if args.scenario == "burst" else 1)
    return LIFTED_BUDGET if peak * 60 / max(1, phones) > 10 else None


async def send_backlog(http: Http, ledger: Ledger, sender: Sender, count: int, size: int, recorder: Recorder) -> None:
    """The huge sender's backlog, queued before the timed load starts."""
    for offset in range(0, count, size):
        n = min(size, count - offset)
        status, body, _ = await http.call(
            "batch",
            "POST",
            "/api/external/send-batch/",
            messages=n,
            json={
                "api_key": sender.api_key,
                "messages": [
                    {"to": f"+1555{2000000 + offset + i}", "message": f"backlog {offset + i}"} for i in range(n)
                ],
            },
        )
        if status == 202:
            now = recorder.now()
            for message in body["messages"]:
                ledger.accept(message["id"], sender.label, now, now, "platform pool")


async def scenario_events(
    args: argparse.Namespace, deployment: Deployment, phones: Fleet, start: float, marks: dict[str, float]
) -> float | None:
    """Churn and Redis restarts at their marks; returns when Redis was restarted."""
    recorder = phones.recorder

    async def until(mark: str) -> None:
        await asyncio.sleep(max(0.0, start + marks[mark] - recorder.now()))

    if args.scenario == "churn":
        phone_ids = [p.device_id for p in phones.credentials]
        leaving = phone_ids[: max(1, round(len(phone_ids) * args.churn_share))]
        await until("phones leave")
        await phones.go_offline(leaving)
        await until("phones return")
        await phones.come_back(leaving)
    if args.scenario == "redis-restart":
        await until("redis restart")
        restarted = recorder.now()
        await deployment.restart_redis()
        return restarted
    return None


def end_to_end(ledger: Ledger, seconds: float) -> list[dict[str, Any]]:
    entries = list(ledger.accepted.values())
    to_claim = [e.claimed - e.accepted for e in entries if e.claimed is not None]
    claim_to_sent = [e.sent - e.claimed for e in entries if e.sent is not None and e.claimed is not None]
    to_sent = [e.sent - e.accepted for e in entries if e.sent is not None]
    return [
        report.latency_row("202 → claimed", [max(0.0, v) for v in to_claim], seconds, 0),
        report.latency_row("claimed → sent report", claim_to_sent, seconds, 0),
        report.latency_row("202 → sent report", [max(0.0, v) for v in to_sent], seconds, 0),
    ]


def scenario_figures(
    args: argparse.Namespace, ledger: Ledger, recorder: Recorder, restart_at: float | None
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if args.scenario == "pool-fairness":
        waits: dict[str, list[float]] = {}
        for entry in ledger.accepted.values():
            if entry.claimed is not None:
                waits.setdefault(entry.sender, []).append(max(0.0, entry.claimed - entry.accepted))
        figures["wait_202_to_claimed_s"] = {
            sender: {
                "count": len(v),
                "p50": round(percentile(v, 50), 3),
                "p99": round(percentile(v, 99), 3),
                "max": round(max(v), 3),
            }
            for sender, v in sorted(waits.items())
        }
    if restart_at is not None:
        error_seconds = [s for s, second in recorder.seconds.items() if s >= int(restart_at) and second.errors]
        errors_after = sum(sum(recorder.seconds[s].errors.values()) for s in error_seconds)
        figures["redis_restart"] = {
            "restarted_at_s": round(restart_at, 2),
            "errors_after_restart": errors_after,
            "recovered_after_s": round(max(error_seconds) + 1 - restart_at, 2) if error_seconds else 0.0,
        }
    return figures


def ratio_lines(result: dict[str, Any], elapsed: float) -> list[str]:
    base = result.get("baselines")
    if not base:
        return []
    bare = base["bare"]["requests_per_second"]
    total = sum(row["count"] for row in result["requests"]) / elapsed
    lines = [
        f"baseline, same machine and workers ({base['tool']}): bare Litestar GET {bare:,.0f} req/s "
        f"(p99 {base['bare']['p99_ms']:.1f} ms)"
        + (
            f"; no-op EVALSHA {base['noop_evalsha_per_second']:,.0f} calls/s"
            if base.get("noop_evalsha_per_second")
            else ""
        ),
        f"this run: {total:,.0f} requests/s of all kinds = {100 * total / bare:.1f}% of the bare GET's "
        f"saturated rate (the run's load is planned, not saturating)",
    ]
    return lines


async def run_capacity(args: argparse.Namespace, deployment: Deployment) -> dict[str, Any]:
    recorder = Recorder()
    base = await baselines.measure_baselines(
        baseline_redis_url(deployment), deployment.workers or 1, args.baseline_seconds, args.connections
    )
    http = Http(deployment.base_url, recorder, connections=args.connections_swarm)
    accounts: list[Account] = []
    try:
        operator = Account(deployment.base_url, recorder, "operator")
        accounts.append(operator)
        await operator.login(deployment.operator_email, deployment.operator_password)
        own = await new_sender(
            deployment, recorder, operator, "capacity", "self_managed", secrets.token_hex(4), accounts
        )
        paired = await pair(http, own.account, args.phones)
        results = await baselines.capacity(
            deployment.base_url,
            [(p.device_id, p.token) for p in paired],
            own.api_key,
            seconds=args.capacity_seconds,
            connections=args.connections,
            batch_size=args.batch_size,
        )
    finally:
        await http.close()
        for account in accounts:
            await account.close()
    bare = base["bare"]["requests_per_second"]
    with_redis = (base.get("bare_redis") or {}).get("requests_per_second")
    rows = [
        {
            **r.__dict__,
            "messages_per_second": r.messages_per_second,
            "percent_of_bare": 100 * r.requests_per_second / bare,
            "percent_of_bare_redis": 100 * r.requests_per_second / with_redis if with_redis else None,
        }
        for r in results
    ]
    return {
        "scenario": "capacity",
        "target": deployment.base_url,
        "workers": deployment.workers,
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "baselines": base,
        "endpoints": rows,
    }


def print_capacity(result: dict[str, Any]) -> None:
    base = result["baselines"]
    print(
        f"\ncapacity of {result['target']} ({result['workers']} workers), {base['tool']}; "
        f"no-op EVALSHA {base['noop_evalsha_per_second'] or 0:,.0f} calls/s\n"
    )
    print(
        f"{'endpoint':24} {'req/s':>9} {'msgs/s':>9} {'% bare':>7} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'% bare+EVALSHA':>15}"
    )
    bare = base["bare"]
    for row in filter(None, (bare, base.get("bare_redis"))):
        print(
            f"{row['name']:24} {row['requests_per_second']:>9,.0f} {'':>9} "
            f"{100 * row['requests_per_second'] / bare['requests_per_second']:>6.1f}% "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['status_errors']:>8}"
        )
    for row in result["endpoints"]:
        with_redis = "" if row["percent_of_bare_redis"] is None else f"{row['percent_of_bare_redis']:>14.1f}%"
        print(
            f"{row['name']:24} {row['requests_per_second']:>9,.0f} {row['messages_per_second']:>9,.0f} "
            f"{row['percent_of_bare']:>6.1f}% {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['status_errors'] + row['socket_errors']:>8} {with_redis}"
        )


async def run_once(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """One run on its own deployment: a server (and Redis) started here and stopped
    after, or the target; prints its table. Returns its figures and whether it passed."""
    local: LocalServer | None = None
    nodes: RedisNodes | None = None
    if args.target:
        password = Path(args.operator_password_file).read_text().strip() if args.operator_password_file else ""
        deployment = Deployment(
            args.target,
            args.operator_email,
            password,
            redis_url=args.redis_url,
            server_pid=args.server_pid,
            restart_command=args.redis_restart_command,
        )
    else:
        extra = dict(setting.split("=", 1) for setting in args.server_setting)
        if args.redis != "private":
            # Started in this thread: each node ends with the thread that started it.
            nodes = RedisNodes(args.redis, primaries=args.primaries).start()
            print(f"bench: Redis {args.redis} at {', '.join(nodes.names())}", file=sys.stderr)
        local = LocalServer(workers=args.workers, time_scale=args.time_scale, extra=extra, redis_nodes=nodes)
        try:
            deployment = await asyncio.to_thread(local.start)
        except BaseException:
            if nodes is not None:
                nodes.stop()
            raise
    try:
        if args.scenario == "capacity":
            result = await run_capacity(args, deployment)
            print_capacity(result)
            ok = all(row["status_errors"] + row["socket_errors"] == 0 for row in result["endpoints"])
        else:
            result, recorder = await run_scenario(args, deployment)
            report.print_table(result)
            if args.png:
                report.write_plot(Path(args.png), recorder, result)
            ok = result["invariants"]["ok"]
    finally:
        if local is not None:
            status = await asyncio.to_thread(local.stop, Path(args.server_log) if args.server_log else None)
            if status not in (0, None):
                print(f"bench: connecfy serve exited with {status}", file=sys.stderr)
        if nodes is not None:
            nodes.stop()
    return result, ok


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM and SIGINT end the run through the finally blocks, so a server started
    # here is stopped, not left behind.
    main = asyncio.current_task()
    for number in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(number, main.cancel)
    if args.scenario in comparisons.NAMES:
        result = await comparisons.run(args, run_once)
        ok = result["ok"]
    else:
        result, ok = await run_once(args)
    if args.json:
        report.write_json(Path(args.json), result)
    return 0 if ok else 1
