"""Counts and success rate for the logged-in account, with its devices' presence."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get

from api.credentials import account_of, session_guard
from api.devices import DeviceOut, device_out
from api.openapi import SESSION, SESSION_COOKIE_ONLY, documented
from api.state import broker_of
from broker.clock import iso_utc


class PoolStatusOut(msgspec.Struct):
    """The platform pool that sends an API-only account's messages."""

    phones: int  # pool phones paired
    phones_online: int  # of them, online now
    oldest_queued_at: str | None  # when the account's oldest message still queued was made; None: none waits


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
    received: int  # SMS the account's phones received (not in total_messages, nor in the rate)
    opted_out: int  # numbers on the account's suppression list
    devices: list[DeviceOut]
    scheduled: int = 0  # waiting for their send_at (counted in total_messages)
    pool: PoolStatusOut | None = None  # API-only accounts: the platform pool's status; else None


class StatsController(Controller):
    path = "/api/stats"
    guards = [session_guard]
    tags = ["dashboard: stats"]

    @get("/", operation_id="stats", **documented(SESSION, security=SESSION_COOKIE_ONLY))
    async def stats(self, request: Request[Any, Any, Any]) -> StatsOut:
        """O(devices): the counters are kept by the scripts as statuses change."""
        broker = broker_of(request)
        account = account_of(request)
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
            counts["received"],
            await broker.suppressions.count(account),
            [device_out(d) for d in stats.devices],
            scheduled=counts["scheduled"],
            pool=None
            if stats.pool is None
            else PoolStatusOut(stats.pool.phones, stats.pool.phones_online, iso_utc(stats.pool.oldest_queued_ms)),
        )
