"""Counts and success rate for the logged-in account, with its devices' presence."""

from __future__ import annotations

import msgspec
from litestar import Controller, get

from api.credentials import session_guard
from api.devices import DeviceOut, device_out
from broker import Broker
from broker.records import Account


class StatsOut(msgspec.Struct):
    total_messages: int
    sent: int  # sent or delivered, as the API doc counts it
    failed: int
    success_rate: float  # 100 * sent / (sent + failed), one decimal; 0.0 before any outcome
    delivered: int
    queued: int
    claimed: int
    expired: int
    cancelled: int
    devices: list[DeviceOut]


class StatsController(Controller):
    path = "/api/stats"
    guards = [session_guard]
    tags = ["dashboard: stats"]

    @get("/", operation_id="stats")
    async def stats(self, account: Account, broker: Broker) -> StatsOut:
        """O(devices): the counters are kept by the scripts as statuses change."""
        stats = await broker.message_log.stats(account)
        counts = stats.counts
        sent = counts["sent"] + counts["delivered"]
        decided = sent + counts["failed"]
        rate = round(100 * sent / decided, 1) if decided else 0.0
        return StatsOut(
            counts["total"],
            sent,
            counts["failed"],
            rate,
            counts["delivered"],
            counts["queued"],
            counts["claimed"],
            counts["expired"],
            counts["cancelled"],
            [device_out(d) for d in stats.devices],
        )
