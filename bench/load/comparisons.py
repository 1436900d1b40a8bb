"""Runs made of several steady runs, each on a server of its own (started afresh, so that
memory and Redis figures start from the same place):

``poll-vs-long-poll``  the same fleet and rate twice, back to back: phones polling every
                       20 s (and heartbeating every 15 s), then long-polling
                       (``wait=30``, a heartbeat every 5 min); ``--rounds`` pairs, in
                       alternating order. A table of both and their ratio (median over
                       the rounds).
``largest-fleet``      the fleets of ``--fleets`` in turn (a tenth of each in the
                       platform pool) at ``--rate``, until one does not hold; a fleet
                       holds when the invariants hold, no request failed, 202 → claimed
                       has p99 ≤ ``--hold-claimed-p99-ms`` from every queue, every
                       non-waiting request kind has client p99 ≤ ``--hold-p99-ms``, and
                       no long poll was answered early (a worker full of waits). A fleet
                       whose generators' event loops ran late (p99 >
                       ``--hold-lag-p99-ms``) fails as limited by the load generator, not
                       the server. Each fleet's reasons are kept.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

NAMES = ("poll-vs-long-poll", "largest-fleet")
RunOnce = Callable[[argparse.Namespace], Awaitable[tuple[dict[str, Any], bool]]]
NOT_WAITING = ("send", "batch", "heartbeat", "status")


def steady(args: argparse.Namespace, label: str, **changes: Any) -> argparse.Namespace:
    """The arguments of one steady run; its server log (``--server-log``) is kept beside
    the one named, with ``label`` in its name."""
    sub = copy.copy(args)
    sub.scenario = "steady"
    sub.png = None
    if args.server_log:
        path = Path(args.server_log)
        sub.server_log = str(path.with_name(f"{path.stem}-{label}{path.suffix}"))
    for name, value in changes.items():
        setattr(sub, name, value)
    return sub


async def run(args: argparse.Namespace, run_once: RunOnce) -> dict[str, Any]:
    if args.scenario == "poll-vs-long-poll":
        return await poll_vs_long_poll(args, run_once)
    return await largest_fleet(args, run_once)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a fleet is judged by, flat, from one run's result (None: not measured)."""
    window = result["window"]
    server = window["server"].get("kinds", {})
    client = window["client"]
    tasks = "long poll" if result["long_poll"] else "poll"
    memory = window["memory"]
    figures: dict[str, Any] = {
        "requests/phone/min, all": window["requests_per_phone_minute"]["all"],
        "requests/phone/min, polls": window["requests_per_phone_minute"].get(tasks),
        "requests/phone/min, heartbeats": window["requests_per_phone_minute"].get("heartbeat"),
        "requests/phone/min, reports": window["requests_per_phone_minute"].get("status"),
    }
    for queue in ("device queue", "own pool", "platform pool"):
        claimed = window["claimed_after_202"].get(queue, {})
        figures[f"202 → claimed p50 ms, {queue}"] = claimed.get("p50_ms")
        figures[f"202 → claimed p99 ms, {queue}"] = claimed.get("p99_ms")
    for kind in ("send", "batch", tasks, "heartbeat", "status"):
        name = "tasks (a long poll's includes its wait)" if kind == tasks else kind
        figures[f"{name} p99 ms, server"] = server.get(kind, {}).get("p99_ms")
        figures[f"{name} p99 ms, client"] = client.get(kind, {}).get("p99_ms")
    figures.update(
        {
            "server CPU % of a core": result["server"]["cpu_percent"],
            "generator loop lag p99 ms, worst process": window["generators"]["loop_lag_p99_ms_worst"],
            "generator CPU % of a core, all processes": window["generators"]["cpu_percent_total"],
            "connections held by the phones, most": window["generators"]["connections_max_sum"],
            "server RSS MiB, start": mib((memory["start"] or {}).get("server_rss_bytes")),
            "server RSS MiB, end": mib((memory["end"] or {}).get("server_rss_bytes")),
            "Redis used_memory MiB, start": mib((memory["start"] or {}).get("redis_used_memory")),
            "Redis used_memory MiB, end": mib((memory["end"] or {}).get("redis_used_memory")),
            "errors": sum(sum(c.values()) for c in result["errors"].values()),
            "invariants": "OK" if result["invariants"]["ok"] else "BROKEN",
        }
    )
    return figures


def mib(value: float | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(values) or not numbers:
        return values[0] if values and all(v == values[0] for v in values) else None
    middle = statistics.median(numbers)
    return int(middle) if all(isinstance(v, int) for v in numbers) and middle == int(middle) else round(middle, 2)


async def poll_vs_long_poll(args: argparse.Namespace, run_once: RunOnce) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"polling": [], "long polls": []}
    ok = True
    for round_number in range(args.rounds):
        order = [False, True] if round_number % 2 == 0 else [True, False]
        for long_poll in order:
            mode = "long polls" if long_poll else "polling"
            print(f"bench: round {round_number + 1}, {mode}", file=sys.stderr)
            label = f"{'long-poll' if long_poll else 'poll'}-{round_number + 1}"
            result, passed = await run_once(steady(args, label, long_poll=long_poll))
            runs[mode].append(result)
            ok = ok and passed
    polling = {name: median([headline(r)[name] for r in runs["polling"]]) for name in headline(runs["polling"][0])}
    long = {name: median([headline(r)[name] for r in runs["long polls"]]) for name in headline(runs["long polls"][0])}
    rows = [[name, polling[name], long[name], ratio(long[name], polling[name])] for name in polling]
    result = {
        "scenario": args.scenario,
        "phones": args.phones,
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "rounds": args.rounds,
        "command": " ".join(sys.argv),
        "table": {"header": ["", "polling (20 s)", "long polls (wait=30)", "long / polling"], "rows": rows},
        "runs": runs,
        "ok": ok,
    }
    print_table(
        f"\npoll-vs-long-poll: {args.phones} phones, {args.rate} messages/s, {args.seconds} s, "
        f"medians of {args.rounds} run(s) each",
        result["table"],
    )
    return result


def ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 3)
    return None


def holds(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Why this run's fleet does not hold (empty: it holds)."""
    reasons = []
    window = result["window"]
    if not result["invariants"]["ok"]:
        reasons.append("invariants broken")
    errors = sum(sum(c.values()) for c in result["errors"].values())
    if errors:
        reasons.append(f"{errors} requests failed: {result['errors']}")
    for queue, claimed in window["claimed_after_202"].items():
        if claimed["p99_ms"] > args.hold_claimed_p99_ms:
            reasons.append(f"202 → claimed p99 {claimed['p99_ms']:.0f} ms from the {queue}")
    for kind in NOT_WAITING:
        p99 = window["client"].get(kind, {}).get("p99_ms")
        if p99 is not None and p99 > args.hold_p99_ms:
            reasons.append(f"{kind} p99 {p99:.0f} ms (client)")
    early = window["generators"]["long_polls_answered_early"]
    if result["long_poll"] and early:
        reasons.append(f"{early} long polls answered at once (a worker full of waits, or stopping)")
    lag = window["generators"]["loop_lag_p99_ms_worst"]
    if lag > args.hold_lag_p99_ms:
        reasons.append(f"load generator behind: event-loop lag p99 {lag:.0f} ms")
    return reasons


async def largest_fleet(args: argparse.Namespace, run_once: RunOnce) -> dict[str, Any]:
    fleets = []
    largest = None
    for phones in sorted(args.fleets):
        print(f"bench: fleet of {phones} phones", file=sys.stderr)
        result, _ = await run_once(steady(args, str(phones), phones=phones, pool_phones=max(1, phones // 10)))
        reasons = holds(result, args)
        fleets.append({"phones": phones, "holds": not reasons, "reasons": reasons, "result": result})
        if reasons:
            break
        largest = phones
    names = list(headline(fleets[0]["result"]))
    table = {
        "header": ["", *(f"{f['phones']:,} phones" for f in fleets)],
        "rows": [[name, *(headline(f["result"])[name] for f in fleets)] for name in names]
        + [["holds", *("yes" if f["holds"] else "no" for f in fleets)]],
    }
    result = {
        "scenario": args.scenario,
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "long_poll": args.long_poll,
        "command": " ".join(sys.argv),
        "criteria": {
            "claimed_p99_ms": args.hold_claimed_p99_ms,
            "p99_ms": args.hold_p99_ms,
            "generator_lag_p99_ms": args.hold_lag_p99_ms,
        },
        "largest_fleet_that_held": largest,
        "limited_by": fleets[-1]["reasons"],
        "table": table,
        "fleets": fleets,
        "ok": largest is not None,
    }
    print_table(
        f"\nlargest-fleet at {args.rate} messages/s, {args.workers} workers, "
        f"{'long polls' if args.long_poll else 'polling'}: the largest that held: {largest}",
        table,
    )
    if fleets[-1]["reasons"]:
        print(f"{fleets[-1]['phones']:,} phones did not hold: {'; '.join(fleets[-1]['reasons'])}")
    return result


def cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, table: dict[str, Any]) -> None:
    print(title + "\n")
    widths = [max(len(cell(row[i])) for row in [table["header"], *table["rows"]]) for i in range(len(table["header"]))]
    for row in [table["header"], *table["rows"]]:
        print(
            "  ".join(
                cell(v).ljust(w) if i == 0 else cell(v).rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
