"""Device send windows: the hours of the day, in the device's own time zone, when its
phone may be handed new messages (``PATCH /api/devices/<id>/`` ``send_window``).

Lua has no time zone database, so the window is turned into the UTC intervals it opens
for, from yesterday to :data:`HORIZON_DAYS` ahead, and stored with it in the device hash:

- ``send_window``: the window as the owner gave it (JSON: start, end, timezone);
- ``send_open``: ``<start ms>-<end ms>,...`` in time order, what the claim script reads
  (includes/claiming.lua ``sendWindow``).

Outside every interval the claim hands the phone nothing new (redeliveries of what it
holds still go). The claim reports when fewer than :data:`REFRESH_DAYS` of intervals
are left, and the broker then writes the next ones (:meth:`SendWindows.refresh`); a
phone that claims nothing for so long has nothing to be late for, and past the last
interval the window counts as closed. Daylight-saving changes are the zone's
(``zoneinfo`` with the ``tzdata`` package: the same answer on every host). A window
whose end is before its start runs over midnight (22:00-06:00); start and end may not be
equal.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from functools import cache

import msgspec

from broker import errors
from broker.context import Context
from broker.records import DeviceRef, SendWindow

HORIZON_DAYS = 35
REFRESH_DAYS = 28
DAY_MS = 86_400_000
REFRESH_BELOW_MS = REFRESH_DAYS * DAY_MS
CLOCK_TIME = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$")


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_window(window: SendWindow) -> SendWindow:
    """The window, checked: each problem names its field (``send_window.start`` etc.)."""
    for name in ("start", "end"):
        value = getattr(window, name)
        if not isinstance(value, str) or not CLOCK_TIME.match(value):
            raise errors.InvalidInput(
                f"{name} must be a time of day as HH:MM (00:00 to 23:59)", field=f"send_window.{name}"
            )
    if window.start == window.end:
        raise errors.InvalidInput("start and end must differ (no window: send null)", field="send_window.end")
    if not isinstance(window.timezone, str) or window.timezone not in _zones():
        raise errors.InvalidInput(
            "timezone must be an IANA time zone name, e.g. Europe/Berlin", field="send_window.timezone"
        )
    return window


def _local(date: dt.date, clock: str, zone: zoneinfo.ZoneInfo) -> int:
    hours, minutes = (int(x) for x in clock.split(":"))
    moment = dt.datetime.combine(date, dt.time(hours, minutes), tzinfo=zone)
    return int(moment.timestamp() * 1000)


def open_intervals(window: SendWindow, now_ms: int, days: int = HORIZON_DAYS) -> str:
    """The UTC intervals (ms) the window opens for that end after ``now_ms``, up to
    ``days`` ahead, as the device hash's ``send_open`` holds them."""
    zone = zoneinfo.ZoneInfo(window.timezone)
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz=zone).date()
    overnight = window.end < window.start
    spans = []
    for offset in range(-1, days + 1):
        date = today + dt.timedelta(days=offset)
        start = _local(date, window.start, zone)
        end = _local(date + dt.timedelta(days=1) if overnight else date, window.end, zone)
        if end > now_ms and end > start:
            spans.append(f"{start}-{end}")
    return ",".join(spans)


class SendWindows:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def set(self, device: DeviceRef, window: SendWindow | None) -> None:
        """Give the device a send window, or take it away (None)."""
        shard = self.ctx.shard(device.shard)
        if window is None:
            await self.ctx.call("send-window", [shard.device(device.device_id)], [device.device_id, "", "", "*"])
            return
        window = check_window(window)
        await self.ctx.call(
            "send-window",
            [shard.device(device.device_id)],
            [device.device_id, msgspec.json.encode(window), open_intervals(window, self.ctx.now()), "*"],
        )

    async def refresh(self, device: DeviceRef) -> None:
        """Write the window's next intervals (the claim said few are left), unless the
        window changed or went meanwhile."""
        shard = self.ctx.shard(device.shard)
        raw = await self.ctx.redis.hget(shard.device(device.device_id), "send_window")
        if not raw:
            return
        window = msgspec.json.decode(raw, type=SendWindow)
        try:
            await self.ctx.call(
                "send-window",
                [shard.device(device.device_id)],
                [device.device_id, raw, open_intervals(window, self.ctx.now()), raw],
            )
        except errors.DeviceNotFound:
            pass
