"""Presence: a phone's heartbeat (battery and versions with it), and whether it is online."""

from __future__ import annotations

from broker.context import Context
from broker.records import DeviceRef
from broker.validation import MAX_FIELD_CHARS, check_text, check_whole_number


class Presence:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def heartbeat(
        self,
        device: DeviceRef,
        *,
        battery: int | None = None,
        android_version: str | None = None,
        app_version: str | None = None,
    ) -> int:
        """Refresh presence; returns the last-seen time (ms). DeviceNotFound once removed."""
        if battery is not None:
            check_whole_number(battery, "battery", low=0, high=100)
        for name, value in (("android_version", android_version), ("app_version", app_version)):
            if value is not None:
                check_text(value, name, max_chars=MAX_FIELD_CHARS)
        shard = self.ctx.shard(device.shard)
        did = device.device_id
        reply = await self.ctx.call(
            "heartbeat",
            [shard.device(did), shard.device_presence(did), shard.last_seen],
            [
                did,
                self.ctx.now(),
                self.ctx.settings.presence_ttl_seconds * 1000,
                "" if battery is None else battery,
                android_version or "",
                app_version or "",
            ],
        )
        return int(reply)

    async def is_online(self, device: DeviceRef) -> bool:
        seen = await self.ctx.redis.zscore(self.ctx.shard(device.shard).last_seen, device.device_id)
        return seen is not None and seen + self.ctx.settings.presence_ttl_seconds * 1000 > self.ctx.now()
