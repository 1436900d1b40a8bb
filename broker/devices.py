"""Phones: pairing codes, registration (the device token shown once), the token lookup
every phone request starts with, the device list with presence and counts, changes to a
device's name and send budget, and removal."""

from __future__ import annotations

import msgspec

from broker import errors, ids, keys
from broker.context import Context
from broker.credential_cache import CredentialCache
from broker.keys import ShardKeys
from broker.pool_shards import PoolShards
from broker.records import (
    STATUSES,
    Account,
    DeviceInfo,
    DeviceRef,
    PairingCode,
    RegisteredDevice,
    SendWindow,
    SweepReport,
)
from broker.redis_client import fields, text
from broker.validation import check_name, check_whole_number, normalize_phone_number

MAX_TOKEN_CHARS = 128
MAX_SEGMENTS_BUDGET = 1_000_000
PAIRING_CODE_TRIES = 8


class Devices:
    def __init__(self, ctx: Context, pool_shards: PoolShards) -> None:
        self.ctx = ctx
        self.pool_shards = pool_shards
        self._tokens: CredentialCache[DeviceRef] = CredentialCache()  # token hash -> device

    async def _owner_shards(self, owner: Account | None) -> tuple[str, ...]:
        """The shards holding ``owner``'s devices: its own, or every platform pool shard."""
        return await self.pool_shards.in_use() if owner is None else (keys.account_shard(owner.id),)

    async def create_pairing_code(self, owner: Account | None) -> PairingCode:
        """A one-time code pairing a phone to ``owner``'s account, or to the platform pool
        when ``owner`` is None (the operator's pool phones; the code names the pool phone's
        home shard)."""
        ttl_ms = self.ctx.settings.pairing_code_ttl_seconds * 1000
        home = await self.pool_shards.home_for_phone() if owner is None else keys.account_shard(owner.id)
        shard = self.ctx.shard(home)
        for _ in range(PAIRING_CODE_TRIES):
            code = ids.pairing_code()
            if await self.ctx.redis.set(keys.pairing_code_index(code), shard.tag, px=ttl_ms, nx=True):
                await self.ctx.redis.set(shard.pairing_code(code), "" if owner is None else owner.id, px=ttl_ms)
                return PairingCode(code, self.ctx.now() + ttl_ms)
        raise RuntimeError("could not find a free pairing code")

    async def register(self, code: str, device_name: str, phone_number: str = "") -> RegisteredDevice:
        """Redeem a pairing code; the device token is returned this once, stored hashed."""
        if not ids.is_plain_id(code, 16):
            raise errors.PairingCodeInvalid()
        device_name = check_name(device_name, "device_name")
        if phone_number:
            phone_number = normalize_phone_number(phone_number, "phone_number")
        code = code.upper()
        redis = self.ctx.redis
        tag = await redis.get(keys.pairing_code_index(code))
        if tag is None:
            raise errors.PairingCodeInvalid()
        shard = self.ctx.shard(text(tag))
        device_id = ids.short_id()
        token = ids.secret_token()
        token_sha = ids.sha256_hex(token)
        # The token index is written first: if the script then fails, the index points
        # at no device and is dropped; a crash in between leaves only a dead pointer.
        index = keys.device_token_index(token_sha)
        await self.ctx.set_waited(index, f"{shard.tag}|{device_id}")
        settings = self.ctx.settings
        try:
            owner = await self.ctx.call(
                "register-device",
                [shard.pairing_code(code), shard.device(device_id), shard.devices],
                [
                    device_id,
                    token_sha,
                    device_name,
                    phone_number,
                    self.ctx.now(),
                    settings.device_segments_per_minute,
                    settings.device_segments_per_day,
                ],
            )
        except BaseException:
            await redis.delete(index)
            raise
        await redis.delete(keys.pairing_code_index(code))
        return RegisteredDevice(
            device_id=device_id, device_token=token, device_name=device_name, shard=shard.tag, account_id=text(owner)
        )

    async def find_by_token(self, token: str) -> DeviceRef | None:
        """The device a token belongs to, or None. Tokens are looked up by SHA-256."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            return None
        value = await self.ctx.redis.get(keys.device_token_index(ids.sha256_hex(token)))
        if value is None:
            return None
        tag, _, device_id = text(value).partition("|")
        return DeviceRef(tag, device_id)

    async def for_token(self, token: str) -> DeviceRef | None:
        """:meth:`find_by_token`, remembered in this process: a token names one device for
        life, so only its first use costs a Redis round trip. Whether that device still
        exists is not remembered: the script of every call a device makes checks it (claim
        and heartbeat raise DeviceNotFound, a status report MessageNotFound), and the
        caller then drops the entry with :meth:`forget_token` and checks afresh."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = ids.sha256_hex(token)
        device = self._tokens.get(digest)
        if device is None:
            device = await self.find_by_token(token)
            if device is not None:
                self._tokens.remember(digest, device)
        return device

    def forget_token(self, token: str) -> None:
        self._tokens.forget(ids.sha256_hex(token))

    async def owned(self, owner: Account, device_id: str) -> DeviceRef:
        """``owner``'s device ``device_id`` (in its own shard, or in the platform pool
        for the operator), or DeviceNotFound: another account's device is not found."""
        if ids.is_plain_id(device_id):
            tags = [keys.account_shard(owner.id), *(await self.pool_shards.in_use() if owner.operator else ())]
            for tag in tags:
                if await self.ctx.redis.sismember(self.ctx.shard(tag).devices, device_id):
                    return DeviceRef(tag, device_id)
        raise errors.DeviceNotFound()

    async def get(self, device: DeviceRef) -> dict[str, str]:
        raw = await self.ctx.redis.hgetall(self.ctx.shard(device.shard).device(device.device_id))
        if not raw:
            raise errors.DeviceNotFound()
        return fields(raw)

    async def list_for(self, owner: Account | None) -> list[DeviceInfo]:
        """The devices of an account, or of the platform pool when ``owner`` is None,
        with presence and per-device message counts, oldest paired first."""
        found: list[DeviceInfo] = []
        for tag in await self._owner_shards(owner):
            shard = self.ctx.shard(tag)
            device_ids = sorted(text(d) for d in await self.ctx.redis.smembers(shard.devices))
            found += await self._infos(shard, device_ids)
        return sorted(found, key=lambda d: (d.created_ms, d.device_id))

    async def info(self, device: DeviceRef) -> DeviceInfo:
        """One device as :meth:`list_for` shows it."""
        found = await self._infos(self.ctx.shard(device.shard), [device.device_id])
        if not found:
            raise errors.DeviceNotFound()
        return found[0]

    async def _infos(self, shard: ShardKeys, device_ids: list[str]) -> list[DeviceInfo]:
        """Device hashes, their counters and pool pauses, in one round trip; removed
        devices are left out. A pool phone's counts are added up over every pool shard it
        claimed from, and it shows the pause that ends last."""
        if not device_ids:
            return []
        counted = await self.pool_shards.in_use() if keys.is_pool_shard(shard.tag) else (shard.tag,)
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            for device_id in device_ids:
                pipe.hgetall(shard.device(device_id))
                for tag in counted:
                    pipe.hmget(self.ctx.shard(tag).counters, [f"d:{device_id}:{st}" for st in STATUSES])
                for tag in counted:
                    pipe.hget(self.ctx.shard(tag).pool_failures, device_id)
            replies = await pipe.execute()
        per_device = 1 + 2 * len(counted)
        now = self.ctx.now()
        ttl_ms = self.ctx.settings.presence_ttl_seconds * 1000
        found = []
        for index, device_id in enumerate(device_ids):
            raw = replies[per_device * index]
            if not raw:
                continue
            first = per_device * index + 1
            counts = [sum(int(c[i] or 0) for c in replies[first : first + len(counted)]) for i in range(len(STATUSES))]
            pause = pool_pause(replies[first + len(counted) : per_device * (index + 1)], now)
            f = fields(raw)
            last_seen = int(f["last_seen"]) if "last_seen" in f else None
            found.append(
                DeviceInfo(
                    device_id=device_id,
                    device_name=f["name"],
                    phone_number=f.get("phone_number", ""),
                    online=last_seen is not None and last_seen + ttl_ms > now,
                    last_seen_ms=last_seen,
                    battery=int(f["battery"]) if "battery" in f else None,
                    android_version=f.get("android_version"),
                    app_version=f.get("app_version"),
                    segments_per_minute=int(f["per_minute"]),
                    segments_per_day=int(f["per_day"]),
                    created_ms=int(f["created"]),
                    counts=dict(zip(STATUSES, counts, strict=True)),
                    send_window=msgspec.json.decode(f["send_window"], type=SendWindow)
                    if f.get("send_window")
                    else None,
                    pool_paused_until_ms=pause[0] if pause else None,
                    pool_pause_reason=pause[1] if pause else None,
                )
            )
        return found

    async def update(
        self,
        device: DeviceRef,
        *,
        name: str | None = None,
        segments_per_minute: int | None = None,
        segments_per_day: int | None = None,
    ) -> None:
        if name is not None:
            name = check_name(name, "device_name")
        for field, value in (("segments_per_minute", segments_per_minute), ("segments_per_day", segments_per_day)):
            if value is not None:
                check_whole_number(value, field, low=1, high=MAX_SEGMENTS_BUDGET)
        shard = self.ctx.shard(device.shard)
        await self.ctx.call(
            "update-device",
            [shard.device(device.device_id)],
            [device.device_id, name or "", segments_per_minute or "", segments_per_day or ""],
        )

    async def remove(self, device: DeviceRef) -> SweepReport:
        """Remove a device; its token stops working at once. Messages queued for it fail
        with ``device_removed``; pool messages it held go back to the pool (a pool phone's
        from every pool shard it claimed from)."""
        shard = self.ctx.shard(device.shard)
        token_sha = await self.ctx.redis.hget(shard.device(device.device_id), "token_sha256")
        if token_sha is None:
            raise errors.DeviceNotFound()
        await self.ctx.redis.delete(keys.device_token_index(text(token_sha)))
        report = await self._remove_from(shard, device.device_id, shard.last_seen)
        if keys.is_pool_shard(shard.tag):
            for tag in await self.pool_shards.in_use():
                if tag != shard.tag:
                    other = self.ctx.shard(tag)
                    more = await self._remove_from(other, device.device_id, other.pool_visitors)
                    report = SweepReport(lost=report.lost + more.lost, returned=report.returned + more.returned)
        return report

    async def _remove_from(self, shard: ShardKeys, did: str, seen: str) -> SweepReport:
        """The remove-device script over one shard until nothing of the device is left
        there; ``seen`` is the presence set to drop it from (last-seen in its home shard,
        the pool visitors elsewhere)."""
        failed = returned = 0
        while True:
            reply = await self.ctx.call(
                "remove-device",
                [
                    shard.device(did),
                    shard.device_window(did),
                    shard.device_presence(did),
                    shard.devices,
                    seen,
                    shard.messages,
                    shard.counters,
                    shard.queue,
                    shard.leased,
                    shard.lease_checks,
                    shard.expiry,
                    shard.pool,
                    shard.pool_state,
                    shard.events,
                    shard.waiting,
                    shard.pool_high,
                    shard.pool_failures,
                    shard.offline,
                ],
                [did, self.ctx.now(), self.ctx.settings.sweep_batch, self.ctx.wake_command, shard.wake_channel],
            )
            failed, returned = failed + int(reply[0]), returned + int(reply[1])
            if not int(reply[2]):
                return SweepReport(lost=failed, returned=returned)


def pool_pause(entries: list[bytes | str | None], now: int) -> tuple[int, str] | None:
    """The pause that ends last among a device's ``pool-failures`` entries (one per shard,
    ``<streak>|<until ms>|<why>``, includes/failures.lua), if one is still running."""
    running = []
    for raw in entries:
        if raw:
            _, until, why = text(raw).split("|", 2)
            if int(until) > now:
                running.append((int(until), why))
    return max(running, default=None)
