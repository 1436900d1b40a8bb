"""What senders read of their messages: one message, pages of them (Redis for the hot
ones, the history store for those trimmed from it, merged), counts per state, stats;
and the trim of finished messages the history store holds."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from broker import errors, ids, keys
from broker.context import Context
from broker.devices import Devices
from broker.history import HistoryStore
from broker.records import STATUSES, Account, DeviceInfo, Event, MessagePage, MessageRecord
from broker.redis_client import fields, text

MAX_PAGE = 500
"""The most messages one page of the list holds."""
SCAN_LIMIT = 5_000
"""The most ids a filtered page reads before it hands back a cursor."""


class Stats(msgspec.Struct, frozen=True):
    counts: dict[str, int]
    devices: list[DeviceInfo]


class MessageLog:
    def __init__(self, ctx: Context, devices: Devices) -> None:
        self.ctx = ctx
        self.devices = devices
        self.history: HistoryStore | None = None
        """The history store, when attached: reads of messages no longer in Redis go there."""

    async def get(self, shard_tag: str, message_id: str) -> MessageRecord:
        """A message from Redis while it is hot, else from the history store."""
        raw = await self.ctx.redis.hget(self.ctx.shard(shard_tag).messages, message_id)
        if raw is not None:
            return msgspec.json.decode(raw, type=MessageRecord)
        stored = None
        if self.history is not None and ids.is_plain_id(message_id):
            stored = await self.history.message(shard_tag, message_id)
        if stored is None:
            raise errors.MessageNotFound()
        return stored

    async def trimmed(self, shard_tag: str, message_id: str) -> MessageRecord | None:
        """A finished message that left Redis after its hot window, as the store keeps it."""
        if self.history is None or await self.ctx.redis.hexists(self.ctx.shard(shard_tag).messages, message_id):
            return None
        return await self.history.message(shard_tag, message_id)

    async def page(
        self,
        account: Account,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
        device_id: str | None = None,
        scan_limit: int = SCAN_LIMIT,
    ) -> MessagePage:
        """A sender's messages, newest first, from Redis (hot ones) and the history store
        (stored ones, trimmed from Redis or not) merged by id without duplicates: a
        message shows from the moment it is queued and stays after it is trimmed.

        Each source is complete from the top down to its own bound (the last id it
        looked at, or nothing left); the page keeps only what lies above the higher of
        the two bounds, so no message is skipped between pages."""
        hot = await self._list_hot(account, limit, cursor, status, device_id, scan_limit)
        if self.history is None:
            return hot
        stored = await self.history.list_messages(
            account.id, limit=limit, before=cursor, status=status, device=device_id
        )
        bounds = [b for b in (hot.next_cursor, stored[-1].id if len(stored) == limit else None) if b is not None]
        bound = max(bounds) if bounds else None
        # A stored row may be behind Redis (a change not yet snapshotted): Redis decides.
        shard = self.ctx.shard(account.shard)
        live = await self.ctx.redis.hmget(shard.messages, [r.id for r in stored]) if stored else []
        merged = {r.id: r for r in hot.items}
        for record, raw in zip(stored, live, strict=True):
            if record.id in merged:
                continue
            if raw is not None:
                record = msgspec.json.decode(raw, type=MessageRecord)
                if (status is not None and record.status != status) or (
                    device_id is not None and record.device != device_id
                ):
                    continue
            merged[record.id] = record
        items = sorted((r for r in merged.values() if bound is None or r.id >= bound), key=lambda r: r.id, reverse=True)
        if len(items) >= limit:
            return MessagePage(items[:limit], items[limit - 1].id)
        return MessagePage(items, bound)

    async def _list_hot(
        self,
        account: Account,
        limit: int,
        cursor: str | None,
        status: str | None,
        device_id: str | None,
        scan_limit: int,
    ) -> MessagePage:
        """A sender's messages, newest first, ``limit`` a page, optionally only one status
        or one device. A filtered page reads at most ``scan_limit`` ids; ``next_cursor``
        then points past what was read, so a client pages on through sparse matches."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise errors.InvalidInput(f"limit must be 1 to {MAX_PAGE}", field="limit")
        if status is not None and status not in STATUSES:
            raise errors.InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
        if cursor is not None and not ids.is_plain_id(cursor):
            raise errors.InvalidInput("cursor is not one this server gave out", field="cursor")
        redis = self.ctx.redis
        shard = self.ctx.shard(account.shard)
        index = shard.sent(account.id)
        items: list[MessageRecord] = []
        upper = "+" if cursor is None else f"({cursor}"
        scanned = 0
        last: str | None = None
        while len(items) < limit and scanned < scan_limit:
            chunk = limit if status is None and device_id is None else min(MAX_PAGE, scan_limit - scanned)
            found = [text(i) for i in await redis.zrevrangebylex(index, upper, "-", start=0, num=chunk)]
            if not found:
                last = None
                break
            scanned += len(found)
            records = await redis.hmget(shard.messages, found)
            for message_id, raw in zip(found, records, strict=True):
                last = message_id
                if raw is None:
                    continue
                record = msgspec.json.decode(raw, type=MessageRecord)
                if (status is None or record.status == status) and (device_id is None or record.device == device_id):
                    items.append(record)
                    if len(items) == limit:
                        break
            upper = f"({last}"
            if len(found) < chunk:
                if len(items) < limit:
                    last = None
                break
        return MessagePage(items, last)

    async def stats(self, account: Account) -> Stats:
        """Counts per state for the account, and its devices with presence and counts."""
        counts = await self.account_counts(account)
        devices = [] if account.account_type == "api_only" else await self.devices.list_for(account)
        return Stats(counts, devices)

    async def counters(self, shard_tag: str) -> dict[str, int]:
        """The raw counters hash of a shard (``a:<account>:<status>``, ``d:<device>:<status>``)."""
        raw = await self.ctx.redis.hgetall(self.ctx.shard(shard_tag).counters)
        return {text(k): int(v) for k, v in raw.items()}

    async def account_counts(self, account: Account) -> dict[str, int]:
        """The account's messages per state, and in all (its own fields only: the platform
        pool's counters hash holds every API-only sender's)."""
        names = (*STATUSES, "total")
        values = await self.ctx.redis.hmget(
            self.ctx.shard(account.shard).counters, [f"a:{account.id}:{n}" for n in names]
        )
        return {name: int(value or 0) for name, value in zip(names, values, strict=True)}

    async def events(self, shard_tag: str, count: int = 1000) -> list[Event]:
        """The shard's status-change stream, oldest first (what the snapshotter and the
        webhook dispatcher read)."""
        entries = await self.ctx.redis.xrange(self.ctx.shard(shard_tag).events, count=count)
        found = []
        for stream_id, raw in entries or []:
            f = fields(raw or {})
            found.append(
                Event(text(stream_id), f["id"], f["account"], f["status"], f["device"], int(f["at"]), f["error"])
            )
        return found

    async def trim(self, shard_tag: str, account_id: str, cutoff_ms: int, pairs: Sequence[str], *, lease: str) -> int:
        """Remove a sender's finished messages last changed by ``cutoff_ms`` that the
        history store holds (``pairs``: id, stored version, ...); see trim-4.lua. Only
        for the holder of the shard's background lease: ``lease`` is
        ``<holder>|<fencing token>`` as the holder was given it, and :class:`LockLost`
        (nothing removed) when the lease is no longer that."""
        shard = self.ctx.shard(shard_tag)
        lease_key = keys.shard_lease(shard_tag)
        removed = int(
            await self.ctx.call(
                "trim",
                [shard.messages, shard.trim, shard.sent(account_id), lease_key],
                [lease, account_id, cutoff_ms, *pairs],
            )
        )
        if removed < 0:
            raise errors.LockLost(lease_key)
        return removed
