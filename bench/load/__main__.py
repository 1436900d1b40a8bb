"""``python3 -m bench.load SCENARIO [options]``: see ``bench/load/__init__.py``."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence

from bench.load import comparisons, scenarios
from connecfy.cli import run_async


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.load",
        description=f"{scenarios.__doc__}\n{comparisons.__doc__}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=(*scenarios.NAMES, *comparisons.NAMES, "capacity"))
    load = parser.add_argument_group("load")
    load.add_argument("--phones", type=int, default=200, help="simulated phones in all (default 200)")
    load.add_argument(
        "--pool-phones", type=int, default=None, help="of which platform pool phones (default a tenth, at least 1)"
    )
    load.add_argument("--rate", type=float, default=20.0, help="messages per second planned (default 20)")
    load.add_argument("--seconds", type=float, default=30.0, help="seconds of sending (default 30)")
    load.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="phone intervals (15 s heartbeat, 20 s poll) times this (default 1)",
    )
    load.add_argument(
        "--long-poll",
        action="store_true",
        help="phones long-poll (tasks?wait=30, again at once after each answer; a heartbeat every 5 min) "
        "instead of polling every 20 s with a heartbeat every 15 s",
    )
    load.add_argument(
        "--generator-processes",
        type=int,
        default=None,
        help="processes the phones are split among (default: enough for at most 8,000 phones each, "
        "within the open-files limit)",
    )
    load.add_argument("--batch-size", type=int, default=50, help="messages per batch send (default 50)")
    load.add_argument("--send-delay", type=float, default=1.0, help="simulated SmsManager seconds at scale 1")
    load.add_argument("--failed-share", type=float, default=0.02)
    load.add_argument("--delivered-share", type=float, default=0.5)
    load.add_argument(
        "--drain-seconds",
        type=float,
        default=None,
        help="how long phones may take to finish after the senders stop (default 3 poll intervals + 2 leases, scaled)",
    )
    load.add_argument("--max-in-flight", type=int, default=5000, help="unanswered sends before the senders hold back")
    load.add_argument("--seed", type=int, default=None)
    special = parser.add_argument_group("scenario options")
    special.add_argument("--burst-factor", type=float, default=10.0)
    special.add_argument("--burst-seconds", type=float, default=30.0)
    special.add_argument("--churn-share", type=float, default=0.3)
    special.add_argument("--backlog", type=int, default=2000, help="pool-fairness: the huge sender's backlog")
    special.add_argument("--small-senders", type=int, default=10)
    special.add_argument("--small-rate", type=float, default=0.5, help="messages/s of each small sender")
    special.add_argument(
        "--pool-budget", type=int, default=600, help="pool-fairness: segments per minute of each pool phone"
    )
    special.add_argument("--rounds", type=int, default=1, help="poll-vs-long-poll: pairs of runs (default 1)")
    special.add_argument(
        "--fleets",
        type=int,
        nargs="+",
        default=[2000, 5000, 10000, 20000],
        help="largest-fleet: the fleets to try, smallest first (default 2000 5000 10000 20000)",
    )
    special.add_argument("--hold-claimed-p99-ms", type=float, default=1000.0)
    special.add_argument("--hold-p99-ms", type=float, default=500.0)
    special.add_argument("--hold-lag-p99-ms", type=float, default=50.0)
    server = parser.add_argument_group("server")
    server.add_argument("--target", help="base URL of a running deployment (default: start one here)")
    server.add_argument("--workers", type=int, default=2, help="workers of the server started here (default 2)")
    server.add_argument("--operator-email", default="")
    server.add_argument("--operator-password-file", default="")
    server.add_argument("--redis-url", help="the target's Redis, for memory figures and the no-op baseline")
    server.add_argument("--server-pid", type=int, help="the target's server process, for CPU figures")
    server.add_argument("--redis-restart-command", help="redis-restart on a target: a shell command")
    server.add_argument("--server-log", help="keep the log of the server started here at this path")
    server.add_argument(
        "--redis",
        choices=("private", "single", "cluster"),
        default="private",
        help="the Redis of the server started here: its own private one (default), one redis-server the bench "
        "starts on a loopback port, or a Redis Cluster of --primaries primaries the bench starts (REDIS_URL)",
    )
    server.add_argument("--primaries", type=int, default=3, help="--redis cluster: primaries (default 3, no replicas)")
    server.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CONNECFY_* setting for the server started here (repeatable)",
    )
    measure = parser.add_argument_group("measurement and output")
    measure.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="skip the bare Litestar and no-op EVALSHA baselines",
    )
    measure.add_argument("--baseline-seconds", type=float, default=5.0)
    measure.add_argument("--capacity-seconds", type=float, default=5.0)
    measure.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    measure.add_argument(
        "--connections-swarm", type=int, default=256, help="the senders' HTTP connections (each phone holds its own)"
    )
    measure.add_argument("--json", help="write every figure to this file")
    measure.add_argument("--png", help="plot throughput and latency over time to this file")
    measure.add_argument("--quiet", dest="progress", action="store_false", help="no progress line")
    args = parser.parse_args(argv)
    if args.pool_phones is None:
        args.pool_phones = max(1, args.phones // 10)
    if args.drain_seconds is None:
        args.drain_seconds = max(10.0, (3 * 20 + 2 * 120) * args.time_scale)
        if args.scenario == "pool-fairness":
            capacity = args.phones * args.pool_budget / 60
            args.drain_seconds += 1.5 * (args.backlog + args.rate * args.seconds) / capacity
    if args.target and not (args.operator_email and args.operator_password_file):
        parser.error("--target needs --operator-email and --operator-password-file")
    if args.redis != "private" and args.target:
        parser.error("--redis single or cluster starts a Redis for the server started here: not with --target")
    if args.redis != "private" and args.scenario == "redis-restart":
        parser.error("redis-restart restarts the server's private Redis: not with --redis single or cluster")
    if args.primaries < 3:
        parser.error("--primaries: a Redis Cluster needs at least 3")
    if args.generator_processes is not None and args.generator_processes < 1:
        parser.error("--generator-processes must be at least 1")
    if args.pool_phones >= args.phones and args.scenario != "pool-fairness":
        parser.error("--pool-phones must leave some of --phones to the sending account")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)
    from bench.load.run import main_async

    return run_async(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
