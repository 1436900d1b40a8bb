"""What senders read of their messages: one message, pages of them (Redis for the hot
ones, the history store for those trimmed from it, merged), counts per state, stats;
and the trim of finished messages the history store holds."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from broker import errors, ids, keys
from broker.context import Context
from broker.devices import Devices
from broker.history import HistoryStore, counterpart
from broker.records import DIRECTIONS, STATUSES, Account, DeviceInfo, Event, MessagePage, MessageRecord
from broker.redis_client import fields, text
from broker.validation import check_sender

MAX_PAGE = 500
"""The most messages one page of the list holds."""
SCAN_LIMIT = 5_000
"""The most ids a filtered page reads before it hands back a cursor."""
THREAD_ROUNDS = 4
"""The most reads of the threads index one page of the inbox makes (more than one only
when it meets threads whose messages are gone, which it drops)."""


class Filters(msgspec.Struct, frozen=True):
    """What a page of messages is narrowed to; None: any."""

    status: str | None = None
    device_id: str | None = None
    direction: str | None = None
    phone: str | None = None  # the conversation with that number (to it, or from it), or sender name
    campaign: str | None = None  # the campaign the messages were queued for

    def check(self) -> Filters:
        """The filters with each value checked (InvalidInput naming the field) and the
        number normalised."""
        if self.status is not None and self.status not in STATUSES:
            raise errors.InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise errors.InvalidInput(f"direction must be one of {', '.join(DIRECTIONS)}", field="direction")
        if self.phone is None:
            return self
        return msgspec.structs.replace(self, phone=check_sender(self.phone, "phone"))

    @property
    def narrowing(self) -> bool:
        return any(v is not None for v in (self.status, self.device_id, self.direction, self.phone, self.campaign))

    def match(self, record: MessageRecord) -> bool:
        return (
            (self.status is None or record.status == self.status)
            and (self.device_id is None or record.device == self.device_id)
            and (self.direction is None or record.direction == self.direction)
            and (self.phone is None or counterpart(record) == self.phone)
            and (self.campaign is None or record.campaign == self.campaign)
        )


QUEUED_LOOKBACK = 100  # queued messages a pool status reads to find the oldest


class PoolStatus(msgspec.Struct, frozen=True):
    """The platform pool as an API-only sender sees it: how many phones could take its
    messages now, and since when its oldest queued message waits."""

    phones: int  # paired pool phones
    phones_online: int  # of them, seen within the presence TTL
    oldest_queued_ms: int | None  # creation of the oldest queued message (of the newest QUEUED_LOOKBACK)


class Stats(msgspec.Struct, frozen=True):
    counts: dict[str, int]
    devices: list[DeviceInfo]
    pool: PoolStatus | None = None  # API-only accounts only


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
        direction: str | None = None,
        phone: str | None = None,
        campaign: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        scan_limit: int = SCAN_LIMIT,
    ) -> MessagePage:
        """A sender's messages, newest first, from Redis (hot ones) and the history store
        (stored ones, trimmed from Redis or not) merged by id without duplicates: a
        message shows from the moment it is queued and stays after it is trimmed.
        Optionally only one status, device or direction, or the conversation with one
        number (``phone``: messages to it and from it; or a sender name: what it sent),
        or one campaign's; and only those made (accepted, or received) from ``since_ms``
        to ``until_ms``, both included: ids are time-sortable, so these are id bounds.

        Each source is complete from the top down to its own bound (the last id it
        looked at, or nothing left); the page keeps only what lies above the higher of
        the two bounds, so no message is skipped between pages."""
        filters = Filters(status, device_id, direction, phone, campaign).check()
        if cursor is not None and not ids.is_plain_id(cursor):
            raise errors.InvalidInput("cursor is not one this server gave out", field="cursor")
        if until_ms is not None:
            below = ids.first_message_id(until_ms + 1)
            cursor = below if cursor is None else min(cursor, below)
        lowest = None if since_ms is None else ids.first_message_id(since_ms)
        hot = await self._list_hot(account, limit, cursor, filters, scan_limit, lowest)
        if self.history is None:
            return hot
        stored = await self.history.list_messages(
            account.id,
            limit=limit,
            before=cursor,
            lowest=lowest,
            status=filters.status,
            device=filters.device_id,
            direction=filters.direction,
            phone=filters.phone,
            campaign=filters.campaign,
        )
        return await self._merge(account, hot, stored, limit, filters)

    async def _merge(
        self, account: Account, hot: MessagePage, stored: list[MessageRecord], limit: int, filters: Filters
    ) -> MessagePage:
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
                if not filters.match(record):
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
        filters: Filters,
        scan_limit: int,
        lowest: str | None = None,
    ) -> MessagePage:
        """A sender's messages, newest first, ``limit`` a page, those ``filters`` let
        through, ids from ``lowest`` up (``cursor`` checked by :meth:`page`). A filtered
        page reads at most ``scan_limit`` ids; ``next_cursor`` then points past what was
        read, so a client pages on through sparse matches."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise errors.InvalidInput(f"limit must be 1 to {MAX_PAGE}", field="limit")
        redis = self.ctx.redis
        shard = self.ctx.shard(account.shard)
        index = shard.sent(account.id)
        items: list[MessageRecord] = []
        upper = "+" if cursor is None else f"({cursor}"
        floor = "-" if lowest is None else f"[{lowest}"
        scanned = 0
        last: str | None = None
        while len(items) < limit and scanned < scan_limit:
            chunk = min(MAX_PAGE, scan_limit - scanned) if filters.narrowing else limit
            found = [text(i) for i in await redis.zrevrangebylex(index, upper, floor, start=0, num=chunk)]
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
                if filters.match(record):
                    items.append(record)
                    if len(items) == limit:
                        break
            upper = f"({last}"
            if len(found) < chunk:
                if len(items) < limit:
                    last = None
                break
        return MessagePage(items, last)

    async def conversations(self, account: Account, *, limit: int = 50, cursor: str | None = None) -> MessagePage:
        """The inbox's threads: one per number (or sender name) that wrote to the account,
        as its conversation's newest message, received or sent, newest first;
        ``next_cursor`` is the id of the last one, and the next page holds those whose
        newest message is older (a thread that moved up meanwhile is not shown again).

        Read from the account's threads index, which the enqueue and inbound scripts keep
        (see includes/threads.lua): a page costs its own size, however long the history
        and whether or not the snapshotter has stored its messages yet. The records come
        from Redis, else the history store; a thread whose newest message is in neither
        (past the history's retention) is dropped from the index as it is met."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise errors.InvalidInput(f"limit must be 1 to {MAX_PAGE}", field="limit")
        if cursor is not None and not ids.is_plain_id(cursor):
            raise errors.InvalidInput("cursor is not one this server gave out", field="cursor")
        shard = self.ctx.shard(account.shard)
        index = shard.threads(account.id)
        upper = "+" if cursor is None else f"({cursor}"  # "<id>|..." sorts after "<id>"
        threads: list[MessageRecord] = []
        last_read: str | None = None
        for _ in range(THREAD_ROUNDS):
            wanted = limit + 1 - len(threads)
            members = [text(m) for m in await self.ctx.redis.zrevrangebylex(index, upper, "-", start=0, num=wanted)]
            heads = [m.partition("|")[::2] for m in members]  # (newest id, counterpart)
            found = await self._records(account.shard, [message_id for message_id, _ in heads])
            gone: list[str] = []
            for message_id, other_end in heads:
                record = found.get(message_id)
                if record is None:
                    gone += [other_end, message_id]
                else:
                    threads.append(record)
            if gone:
                await self.ctx.call("thread-forget", [index, shard.thread_newest(account.id)], gone)
            if len(members) < wanted:
                last_read = None  # the index is read to its end
                break
            last_read = heads[-1][0]
            if len(threads) > limit:
                break
            upper = f"({members[-1]}"
        if len(threads) > limit:
            return MessagePage(threads[:limit], threads[limit - 1].id)
        # Short: the end of the index, or rounds spent dropping threads (the next page
        # goes on below the last one read).
        return MessagePage(threads, last_read)

    async def _records(self, shard_tag: str, message_ids: list[str]) -> dict[str, MessageRecord]:
        """The records of ``message_ids`` found: from Redis, else from the history store."""
        if not message_ids:
            return {}
        raws = await self.ctx.redis.hmget(self.ctx.shard(shard_tag).messages, message_ids)
        found = {
            i: msgspec.json.decode(raw, type=MessageRecord) for i, raw in zip(message_ids, raws, strict=True) if raw
        }
        missing = [i for i in message_ids if i not in found]
        if missing and self.history is not None:
            found.update(await self.history.messages_by_id(shard_tag, missing))
        return found

    async def stats(self, account: Account) -> Stats:
        """Counts per state for the account, and its devices with presence and counts; for
        an API-only account, the platform pool's status instead of devices."""
        counts = await self.account_counts(account)
        if account.account_type == "api_only":
            return Stats(counts, [], await self.pool_status(account, counts["queued"]))
        return Stats(counts, await self.devices.list_for(account))

    async def pool_status(self, account: Account, queued: int) -> PoolStatus:
        """One pipeline over the pool shards (``SCARD`` of the phones, ``ZCOUNT`` of the
        last-seen set above the presence horizon, as :mod:`broker.gauges` counts them),
        and, while messages wait, one page of the sender's queued ones."""
        shards = await self.devices.pool_shards.in_use()
        horizon = f"({self.ctx.now() - self.ctx.settings.presence_ttl_seconds * 1000}"
        pipe = self.ctx.redis.pipeline(transaction=False)
        for tag in shards:
            shard = self.ctx.shard(tag)
            pipe.scard(shard.devices)
            pipe.zcount(shard.last_seen, horizon, "+inf")
        replies = await pipe.execute()
        oldest = None
        if queued > 0:
            waiting = await self.page(account, limit=QUEUED_LOOKBACK, status="queued")
            oldest = min((r.created for r in waiting.items), default=None)
        return PoolStatus(sum(int(n) for n in replies[0::2]), sum(int(n) for n in replies[1::2]), oldest)

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
        """The status changes in the shard's stream, oldest first (what the snapshotter
        and the webhook dispatcher read; devices' changes of presence left out)."""
        entries = await self.ctx.redis.xrange(self.ctx.shard(shard_tag).events, count=count)
        found = []
        for stream_id, raw in entries or []:
            f = fields(raw or {})
            if "id" not in f:
                continue
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
