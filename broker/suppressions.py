"""Suppression lists: the numbers a sender may not message, because they replied STOP (or
another opt-out word) or the sender added them. One list per sender, in the shard its
messages live in (its own, or its home shard of the platform pool), so the enqueue script
checks every recipient in the same call that queues (see enqueue-15.lua)."""

from __future__ import annotations

import msgspec

from broker import errors
from broker.context import Context
from broker.records import Account
from broker.redis_client import text
from broker.validation import check_text, normalize_phone_number

MAX_REASON_CHARS = 200
PAGE_MAX = 500
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})


class Suppression(msgspec.Struct, frozen=True):
    phone: str
    reason: str
    created_ms: int


class SuppressionPage(msgspec.Struct, frozen=True):
    items: list[Suppression]
    next_cursor: str | None


class _Entry(msgspec.Struct, frozen=True):
    reason: str
    created_ms: int


def keyword(message: str) -> str | None:
    """``"stop"`` or ``"start"`` when a received message's whole text, trimmed and in any
    case, is an opt-out or an opt-in word; else None."""
    word = message.strip().upper()
    if word in OPT_OUT_WORDS:
        return "stop"
    if word in OPT_IN_WORDS:
        return "start"
    return None


class Suppressions:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def add(self, account: Account, phone: str, reason: str = "") -> bool:
        """Put ``phone`` on the list; False when it was there already (kept as it was)."""
        phone = normalize_phone_number(phone, "phone")
        reason = check_text(reason, "reason", max_chars=MAX_REASON_CHARS) if reason else "added by the sender"
        shard = self.ctx.shard(account.shard)
        entry = msgspec.json.encode(_Entry(reason, self.ctx.now())).decode()
        changed = await self.ctx.call(
            "suppression", [shard.suppressed(account.id), shard.suppression(account.id)], ["add", phone, entry]
        )
        return bool(int(changed))

    async def remove(self, account: Account, phone: str) -> None:
        """Take ``phone`` off the list; NotSuppressed when it is not on it."""
        phone = normalize_phone_number(phone, "phone")
        shard = self.ctx.shard(account.shard)
        removed = await self.ctx.call(
            "suppression", [shard.suppressed(account.id), shard.suppression(account.id)], ["remove", phone]
        )
        if not int(removed):
            raise errors.NotSuppressed()

    async def page(self, account: Account, cursor: str | None = None, limit: int = 100) -> SuppressionPage:
        """The list in number order, ``limit`` at a time after ``cursor`` (the last number
        of the previous page)."""
        if not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
            raise errors.InvalidInput(f"limit must be 1 to {PAGE_MAX}", field="limit")
        if cursor is not None:
            cursor = normalize_phone_number(cursor, "cursor")
        shard = self.ctx.shard(account.shard)
        start = "-" if cursor is None else f"({cursor}"
        phones = [
            text(p) for p in await self.ctx.redis.zrangebylex(shard.suppressed(account.id), start, "+", 0, limit + 1)
        ]
        more = len(phones) > limit
        phones = phones[:limit]
        entries = await self.ctx.redis.hmget(shard.suppression(account.id), phones) if phones else []
        items = [
            Suppression(phone, entry.reason, entry.created_ms)
            for phone, raw in zip(phones, entries, strict=True)
            if raw is not None
            for entry in (msgspec.json.decode(raw, type=_Entry),)
        ]
        return SuppressionPage(items, phones[-1] if more else None)

    async def get(self, account: Account, phone: str) -> Suppression:
        """One entry of the list; NotSuppressed when ``phone`` is not on it."""
        phone = normalize_phone_number(phone, "phone")
        raw = await self.ctx.redis.hget(self.ctx.shard(account.shard).suppression(account.id), phone)
        if raw is None:
            raise errors.NotSuppressed()
        entry = msgspec.json.decode(raw, type=_Entry)
        return Suppression(phone, entry.reason, entry.created_ms)

    async def count(self, account: Account) -> int:
        return int(await self.ctx.redis.zcard(self.ctx.shard(account.shard).suppressed(account.id)))
