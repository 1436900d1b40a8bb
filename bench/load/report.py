"""What a run prints and writes: the live progress line, the table, JSON and a PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.load.client import KINDS, Recorder, percentile
from bench.load.deployment import LATENCY_THRESHOLD_MS


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def progress_line(recorder: Recorder, elapsed: float, open_messages: int, phase: str) -> str:
    """One line on the second before the last full one (the generator processes' rows of
    a second come up to a tick later): requests and p99 latency per kind, errors (and
    the total so far), accepted messages not yet finished by the phones."""
    second = recorder.seconds.get(int(elapsed) - 2)
    parts = [f"{elapsed:6.0f}s {phase:<8}"]
    for kind in KINDS:
        count = second.requests[kind] if second else 0
        p99 = percentile(second.latencies[kind], 99) if second else 0.0
        parts.append(f"{kind} {count:>4}/s {p99 * 1000:>4.0f}ms")
    errors = sum(second.errors.values()) if second else 0
    parts.append(f"err {errors}/s ({recorder.error_count()})")
    parts.append(f"open {open_messages}")
    return " | ".join(parts)


def latency_row(name: str, values: list[float], seconds: float, errors: int) -> dict[str, Any]:
    return {
        "name": name,
        "count": len(values),
        "per_second": len(values) / seconds if seconds else 0.0,
        "p50_ms": percentile(values, 50) * 1000,
        "p95_ms": percentile(values, 95) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": max(values, default=0.0) * 1000,
        "errors": errors,
    }


def print_table(result: dict[str, Any], out: Any = sys.stdout) -> None:
    """The run's table; "% bare" is each kind's rate as a share of the bare Litestar
    GET's saturated rate measured in the same run (what one endpoint could do at all)."""
    w = out.write
    w(
        f"\nscenario {result['scenario']}: {result['phones']} phones, {result['rate']} messages/s planned, "
        f"{result['seconds']} s of load, time scale {result['time_scale']}, target {result['target']}\n\n"
    )
    bare = result.get("baselines", {}).get("bare", {}).get("requests_per_second")
    w(
        f"{'':24} {'count':>9} {'per s':>9} {'% bare':>7} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9} "
        f"{'errors':>7}\n"
    )
    for row in result["requests"] + result["end_to_end"]:
        if not row["count"] and not row["errors"]:
            continue
        share = f"{100 * row['per_second'] / bare:>6.2f}%" if bare and row in result["requests"] else " " * 7
        w(
            f"{row['name']:24} {row['count']:>9,} {row['per_second']:>9,.1f} {share} {row['p50_ms']:>9,.1f} "
            f"{row['p95_ms']:>9,.1f} {row['p99_ms']:>9,.1f} {row['max_ms']:>9,.1f} {row['errors']:>7,}\n"
        )
    if result.get("errors"):
        w(f"\nerrors by kind: {json.dumps(result['errors'])}\n")
    lag = result["client_lag_ms"]
    w(
        f"client lag (planned → sent): p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms"
        " (large values mean the load generator, not the server, fell behind)\n"
    )
    server = result["server"]
    cpu = "n/a" if server["cpu_percent"] is None else f"{server['cpu_percent']:.0f}% of one core"
    mem = (
        "n/a" if server["redis_used_memory_max"] is None else f"{server['redis_used_memory_max'] / 2**20:,.1f} MiB max"
    )
    redis = result.get("redis", {})
    within = " (its private Redis included)" if redis.get("kind") == "private" else ""
    w(
        f"server CPU during load{within}: {cpu}; Redis used_memory: {mem}; load generator CPU: "
        f"{result['client_cpu_percent']:.0f}% of one core\n"
    )
    by_node = redis.get("cpu_percent_by_node")
    if by_node:
        slots = redis.get("slots_by_node", {})
        parts = [
            f"{node} {share:.0f}%" + (f" (slots {slots[node]})" if node in slots else "")
            for node, share in by_node.items()
        ]
        w(
            f"Redis ({redis['kind']}) CPU during load, % of one core: {'; '.join(parts)}; total {sum(by_node.values()):.0f}%\n"
        )
    for line in result.get("ratios", []):
        w(f"{line}\n")
    for name, figures in result.get("scenario_figures", {}).items():
        w(f"{name}: {json.dumps(figures)}\n")
    if result.get("window"):
        print_window(result["window"], out)
    inv = result["invariants"]
    verdict = "OK" if inv["ok"] else "BROKEN"
    w(
        f"\ninvariants {verdict}: {inv['accepted']:,} accepted; final states {inv['final_states']}; "
        f"lost {inv['lost']}, claimed by two phones {inv['claimed_twice']}, status mismatch "
        f"{inv['status_mismatch']}, unknown claims {inv['unknown_claims']}, unfinished on server "
        f"{inv['not_final_on_server']}; redeliveries to the same phone {inv['redeliveries']}, sends without "
        f"an answer {inv['uncertain_sends']}, queued without a 202 {inv['queued_without_202']}\n"
    )
    if not inv["ok"]:
        w(f"examples: {json.dumps(inv['examples'])}\n")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f} MiB"


def print_window(window: dict[str, Any], out: Any = sys.stdout) -> None:
    """The measured window: client and server p50/p99 per kind, requests per phone per
    minute, 202 → claimed by queue, the generators, memory at both ends."""
    w = out.write
    w(
        f"\nmeasured window {window['start_s']:.1f}–{window['end_s']:.1f} s ({window['seconds_counted']} whole "
        "seconds); server-side from its /metrics histograms (linear within buckets; "
        "'n/a' past the last bucket)\n"
    )
    w(
        f"{'':14} {'client n':>9} {'p50 ms':>9} {'p99 ms':>9} {'server n':>9} {'p50 ms':>9} {'p99 ms':>9}"
        f" {'per phone/min':>13}\n"
    )
    server = window["server"].get("kinds", {})
    per_phone = window["requests_per_phone_minute"]
    for kind in KINDS:
        c, s = window["client"].get(kind), server.get(kind)
        if not c and not s:
            continue
        c, s = c or {}, s or {}
        w(
            f"{kind:14} {c.get('count', 0):>9,} {_ms(c.get('p50_ms')):>9} {_ms(c.get('p99_ms')):>9} "
            f"{s.get('count', 0):>9,} {_ms(s.get('p50_ms')):>9} {_ms(s.get('p99_ms')):>9} "
            f"{per_phone.get(kind, ''):>13}\n"
        )
    w(f"requests per phone per minute, all phone kinds: {per_phone.get('all', 0):.2f}\n")
    claims = window["server"].get("claims")
    if claims and claims["claims"]:
        w(
            f"server claims: {claims['claims']:,} handing over {claims['messages']:,} messages "
            f"({claims['messages'] / claims['claims']:.2f} a claim)\n"
        )
    for key, pauses in window["server"].get("gc", {}).items():
        process, generation = key.split()
        longest = pauses["longest_up_to_ms"]
        w(
            f"server GC pauses, {process}s' generation {generation}: {pauses['count']:,}, {pauses['total_ms']:,.0f} ms in all, "
            f"{pauses['over_50ms']:,} over 50 ms, the longest "
            + ("over 1 s" if longest is None else f"up to {longest:g} ms")
            + "\n"
        )
    latency = window.get("redis_latency_events")
    if latency is not None:
        events = ", ".join(f"{name} {e['count']:,} (longest {e['max_ms']:,} ms)" for name, e in sorted(latency.items()))
        w(f"Redis latency monitor, events over {LATENCY_THRESHOLD_MS} ms: {events or 'none'}\n")
    for queue, row in window["claimed_after_202"].items():
        w(
            f"202 → claimed, {queue}: {row['count']:,} messages, p50 {row['p50_ms']:,.0f} ms, "
            f"p99 {row['p99_ms']:,.0f} ms, max {row['max_ms']:,.0f} ms\n"
        )
    generators = window["generators"]
    for g in generators["by_process"]:
        lag = g["loop_lag_ms"]
        cpu = "n/a" if g["cpu_percent"] is None else f"{g['cpu_percent']:.0f}%"
        w(
            f"generator {g['process']}: {g['phones']:,} phones, CPU {cpu} of a core, event-loop lag p50 "
            f"{lag['p50_ms']:.1f} ms p99 {lag['p99_ms']:.1f} ms max {lag['max_ms']:.1f} ms, "
            f"up to {g['connections_max']:,} connections"
            + (
                f", {g['long_polls_answered_early']:,} long polls answered early"
                if g["long_polls_answered_early"]
                else ""
            )
            + "\n"
        )
    parent = window["parent_loop_lag_ms"]
    w(
        f"senders' process: event-loop lag p50 {parent['p50_ms']:.1f} ms p99 {parent['p99_ms']:.1f} ms; "
        f"phones' source addresses: {generators['source_addresses']:,}\n"
    )
    start, end = window["memory"]["start"] or {}, window["memory"]["end"] or {}
    w(
        f"server RSS (all its processes but Redis) {_mib(start.get('server_rss_bytes'))} → "
        f"{_mib(end.get('server_rss_bytes'))}; Redis used_memory {_mib(start.get('redis_used_memory'))} → "
        f"{_mib(end.get('redis_used_memory'))}, RSS {_mib(start.get('redis_rss_bytes'))} → "
        f"{_mib(end.get('redis_rss_bytes'))}\n"
    )


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def write_plot(path: Path, recorder: Recorder, result: dict[str, Any]) -> None:
    """Throughput (requests and messages per second) and p99 latency per kind over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = sorted(recorder.seconds)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for kind in KINDS:
        top.plot(seconds, [recorder.seconds[s].requests[kind] for s in seconds], label=f"{kind} req/s")
        bottom.plot(
            seconds, [percentile(recorder.seconds[s].latencies[kind], 99) * 1000 for s in seconds], label=f"{kind} p99"
        )
    top.plot(seconds, [recorder.seconds[s].messages for s in seconds], "k--", label="messages accepted/s")
    top.plot(seconds, [sum(recorder.seconds[s].errors.values()) for s in seconds], "r:", label="errors/s")
    top.set_ylabel("per second")
    top.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("seconds since start")
    bottom.legend(loc="upper right", fontsize=8)
    for name, at in result.get("marks", {}).items():
        for axis in (top, bottom):
            axis.axvline(at, color="grey", linewidth=0.8)
        top.annotate(name, (at, 0), fontsize=8, rotation=90, va="bottom")
    figure.suptitle(f"{result['scenario']}: {result['phones']} phones, {result['rate']} msg/s planned")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
