"""The server's own view of a run: its ``/metrics`` read at the start and the end of the
measured window, and the difference.

``connecfy_http_request_duration_seconds`` is a histogram by route template and method,
summed over every worker; the difference of two snapshots holds the requests answered
in between. A quantile is read from it as Prometheus's ``histogram_quantile`` does
(linear within the bucket it falls in), so it is as coarse as the buckets (1, 2.5, 5,
10, 25, 50, 100, 250 ms ... 10 s): a quantile beyond the last finite bound (a long poll
that waited 30 s) is given as None, with that bound. Request counts by status come
from ``connecfy_http_requests``, claims and claimed messages from ``connecfy_claims``
and ``connecfy_claimed_messages``, and the workers' garbage-collector pauses from
``connecfy_gc_pause_seconds`` (by process and generation: how many, their total, and the bucket the
longest fell in), the cause to rule in or out when every request kind's latency jumps in
the same second.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

DURATION = "connecfy_http_request_duration_seconds"
GC_PAUSES = "connecfy_gc_pause_seconds"
REQUESTS = "connecfy_http_requests"


def request_kind(route: str, method: str, tasks_kind: str) -> str | None:
    """The bench's request kind of a route template and method (None: not one of ours)."""
    if method == "GET" and route.startswith("/api/devices/") and route.endswith("/tasks/ (long poll)"):
        return "long poll"  # the server times long polls under a label of their own
    if method == "GET" and route.startswith("/api/devices/") and route.endswith("/tasks/"):
        return tasks_kind
    if method != "POST":
        return None
    if route.startswith("/api/devices/") and route.endswith("/heartbeat/"):
        return "heartbeat"
    if route.startswith("/api/sms/") and route.endswith("/status/"):
        return "status"
    if route in ("/api/sms/send/", "/api/external/send/"):
        return "send"
    if route == "/api/external/send-batch/":
        return "batch"
    return None


@dataclass
class Snapshot:
    """Cumulative bucket counts by (route, method), statuses by (route, method), and
    the claim counters, as one scrape saw them."""

    buckets: dict[tuple[str, str], dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    statuses: dict[tuple[str, str], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    counters: dict[str, float] = field(default_factory=dict)
    # The collector's pauses by "<process> <generation>" (worker 2: the workers' full collections).
    gc_buckets: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    gc_seconds: dict[str, float] = field(default_factory=dict)


def parse(text: str) -> Snapshot:
    snapshot = Snapshot()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == DURATION + "_bucket":
                key = (labels["route"], labels["method"])
                snapshot.buckets[key][float(labels["le"])] = sample.value
            elif sample.name == REQUESTS + "_total":
                key = (labels["route"], labels["method"])
                snapshot.statuses[key][labels["status"]] = sample.value
            elif sample.name in ("connecfy_claims_total", "connecfy_claimed_messages_total"):
                snapshot.counters[sample.name] = sample.value
            elif sample.name == GC_PAUSES + "_bucket":
                key = f"{labels['process']} {labels['generation']}"
                snapshot.gc_buckets[key][float(labels["le"])] = sample.value
            elif sample.name == GC_PAUSES + "_sum":
                snapshot.gc_seconds[f"{labels['process']} {labels['generation']}"] = sample.value
    return snapshot


async def scrape(base_url: str, token: str | None = None) -> Snapshot | None:
    """The server's /metrics now, or None when it cannot be read."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(base_url.rstrip("/") + "/metrics", headers=headers) as response,
        ):
            if response.status != 200:
                return None
            return parse(await response.text())
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-th quantile (0–1) of cumulative ``buckets`` (upper bound → count), in
    seconds, linear within its bucket; None when it lies beyond the last finite bound."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return 0.0
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return None
            inside = count - previous_count
            share = (rank - previous_count) / inside if inside > 0 else 1.0
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return None


def window(before: Snapshot | None, after: Snapshot | None, tasks_kind: str) -> dict[str, Any]:
    """What the server answered between the two snapshots: per request kind (``kinds``)
    the count, p50 and p99 (ms; None beyond the last bucket, ``top_bucket_ms``) and the
    statuses; and the claims (``claims``: calls and messages handed over). Empty when
    either snapshot is missing."""
    if before is None or after is None:
        return {}
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    statuses: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key, counts in after.buckets.items():
        kind = request_kind(*key, tasks_kind)
        if kind is None:
            continue
        earlier = before.buckets.get(key, {})
        for bound, count in counts.items():
            buckets[kind][bound] += count - earlier.get(bound, 0.0)
    for key, counts in after.statuses.items():
        kind = request_kind(*key, tasks_kind)
        if kind is None:
            continue
        earlier = before.statuses.get(key, {})
        for status, count in counts.items():
            if count - earlier.get(status, 0.0):
                statuses[kind][status] += count - earlier.get(status, 0.0)
    kinds: dict[str, Any] = {}
    for kind, counts in sorted(buckets.items()):
        finite = [b for b in counts if not math.isinf(b)]
        p50, p99 = quantile(counts, 0.5), quantile(counts, 0.99)
        kinds[kind] = {
            "count": int(max(counts.values(), default=0)),
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "top_bucket_ms": max(finite, default=0.0) * 1000,
            "statuses": {s: int(n) for s, n in sorted(statuses[kind].items())},
        }
    claims = after.counters.get("connecfy_claims_total", 0.0) - before.counters.get("connecfy_claims_total", 0.0)
    claimed = after.counters.get("connecfy_claimed_messages_total", 0.0) - before.counters.get(
        "connecfy_claimed_messages_total", 0.0
    )
    return {"kinds": kinds, "claims": {"claims": int(claims), "messages": int(claimed)}, "gc": gc_pauses(before, after)}


def gc_pauses(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """The collector's pauses between the snapshots, by kind of process and generation
    (``worker 2``: the workers' full collections, all workers together): how many, their total (ms), how many took over 50 ms, and the upper
    bound of the bucket the longest fell in (ms; None past the last bucket)."""
    found: dict[str, Any] = {}
    for key, counts in sorted(after.gc_buckets.items()):
        earlier = before.gc_buckets.get(key, {})
        between = {bound: count - earlier.get(bound, 0.0) for bound, count in counts.items()}
        total = between.get(math.inf, 0.0)
        if not total:
            continue
        longest = min((b for b, n in between.items() if n >= total), default=math.inf)
        seconds = after.gc_seconds.get(key, 0.0) - before.gc_seconds.get(key, 0.0)
        found[key] = {
            "count": int(total),
            "total_ms": round(seconds * 1000, 1),
            "over_50ms": int(total - between.get(0.05, 0.0)),
            "longest_up_to_ms": None if math.isinf(longest) else longest * 1000,
        }
    return found
