"""Messages over time for the overview chart: hourly buckets of the account's recent
messages (read through the same history listing as ``GET /api/sms/``)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from broker.records import MessageRecord

HOUR_MS = 3_600_000
HOURS = 24
RECENT_MESSAGES = 500  # the newest this many are counted; the chart says so when it is full


class Bar(msgspec.Struct, frozen=True):
    start_ms: int
    total: int
    failed: int


class Activity(msgspec.Struct, frozen=True):
    bars: list[Bar]
    peak: int
    total: int
    truncated: bool  # more than RECENT_MESSAGES messages: older hours are undercounted


def hourly_activity(records: Iterable[MessageRecord], now_ms: int, *, truncated: bool = False) -> Activity:
    """Messages created in each of the last 24 hours (the last bar is the current hour)."""
    first = (now_ms // HOUR_MS - (HOURS - 1)) * HOUR_MS
    totals = [0] * HOURS
    failed = [0] * HOURS
    for record in records:
        slot = (record.created - first) // HOUR_MS
        if 0 <= slot < HOURS:
            totals[slot] += 1
            if record.status in ("failed", "expired"):
                failed[slot] += 1
    bars = [Bar(first + i * HOUR_MS, totals[i], failed[i]) for i in range(HOURS)]
    return Activity(bars, max(totals), sum(totals), truncated)
