"""Campaigns: one message per row of a CSV file, from a template, validated before
anything is queued and queued by the background job a chunk at a time.

A campaign lives in its sender's shard (the account's, or an API-only account's home
pool shard), so every key it has shares the shard's hash tag (see :mod:`broker.keys`):

- upload (:meth:`Campaigns.create`): the file is checked (:mod:`broker.campaign_files`),
  its unique numbers looked up in the suppression list, and only then the campaign is
  stored as a ``draft`` with its report and its valid rows. A bad file stores nothing.
- start: ``sending``; the background process holding the shard
  (:func:`broker.jobs.campaigns_forever`) queues the rows through the batch send's
  enqueue script, a chunk at a time. Chunk ``k`` goes under the idempotency key
  ``campaign:<id>:<k>``, and the rows it covers (the plan) are written down before the
  call: a process that dies after the call and before recording it leaves the plan, and
  the next holder's call with the same plan is answered as a repeat, queueing nothing.
  A plan changes only after the script refused it (which stores nothing): a chunk
  larger than what the send limit or daily quota has left is cut down to it, numbers
  suppressed since the upload are passed over (counted as ``skipped``).
- ``paused`` while the daily quota is used up, or the send limit holds the campaign for
  longer than :data:`PAUSE_AFTER_MS`; the job tries again by itself (every
  :data:`QUOTA_RETRY_MS` for the quota) and the campaign goes back to ``sending``.
- ``done`` once every valid row is queued; ``cancelled`` by the sender at any time:
  no further row is queued and the job cancels every message of the campaign that no
  phone holds yet.

Keys expire by policy, not TTL: a draft never started is deleted after
``campaign_draft_ttl_seconds``, a done or cancelled campaign (its hash, its message ids
and its counters) after ``campaign_retention_days``; the rows go as soon as they are all
queued or the campaign is cancelled. The messages themselves follow the usual history
rules and keep their ``campaign`` id in the history store.
"""

from __future__ import annotations

import asyncio
import time
from typing import IO, Any

import msgspec

from broker import errors, ids
from broker.accounts import Accounts
from broker.campaign_files import CheckedRow, RowProblem, check_file, parse_template
from broker.clock import iso_utc
from broker.context import Context
from broker.limits import AccountLimits
from broker.messages import Messages, check_schedule
from broker.records import STATUSES, Account, OutgoingMessage
from broker.redis_client import fields, text
from broker.validation import MAX_MESSAGE_CHARS, MAX_NAME_CHARS, check_country, check_name, check_text

CHUNK_ROWS = 500
"""The most rows one enqueue call of a campaign takes (less when the account's send
burst, daily quota or the batch limit is smaller)."""
PAUSE_AFTER_MS = 5_000
"""A send limit that holds a campaign longer than this shows it as ``paused``."""
QUOTA_RETRY_MS = 5_000
"""How often a campaign paused by the daily quota tries again."""
CANCEL_BATCH = 200
SUPPRESSION_BATCH = 1_000
ROWS_BATCH = 1_000
ROWS_PER_PIPELINE = 10_000
STATES = ("draft", "sending", "paused", "done", "cancelled")
PAGE_MAX = 100


class CampaignRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the sender asks for beside the file."""

    name: str
    template: str
    phone_column: str = "phone"
    device_id: str | None = None
    send_at: str | None = None
    priority: str | None = None
    valid_for: int | None = None
    default_country: str | None = None  # ISO 3166 code for national numbers; the account's, else the server's


class Report(msgspec.Struct, frozen=True):
    """The validation report: ``rows`` in the file (blank lines not counted), of them
    ``valid`` (to be sent), ``invalid_rows`` (``invalid`` lists the first 100),
    ``duplicates`` (a number already in an earlier row) and ``opted_out`` (on the
    suppression list); ``max_segments``: the segments of the longest rendered message,
    ``segments``: all valid rows' messages together."""

    rows: int
    valid: int
    invalid: list[RowProblem]
    invalid_rows: int
    duplicates: int
    opted_out: int
    max_segments: int
    segments: int


class Counts(msgspec.Struct, frozen=True):
    """``queued``: rows made into messages so far; ``sent`` (delivered included, as in
    the stats), ``delivered``, ``failed`` (expired included): what became of them;
    ``skipped``: rows that will not be sent: numbers suppressed after the upload, rows
    not yet queued when the campaign was cancelled, and messages cancelled."""

    queued: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    expired: int = 0


class Campaign(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    state: str
    reason: str  # why it is paused or was cancelled: quota_exceeded, rate_limited, device_removed, ""
    template: str
    phone_column: str
    device_id: str | None
    send_at: int | None
    priority: str
    valid_for: int | None
    created: int
    started: int | None
    finished: int | None
    resume_at: int | None
    report: Report
    counts: Counts


class CampaignPage(msgspec.Struct, frozen=True):
    items: list[Campaign]
    next_cursor: str | None


class Plan(msgspec.Struct, array_like=True):
    """Chunk ``chunk``: rows ``start`` to ``end`` (not included) but the ``skips`` (offsets from start)."""

    chunk: int
    start: int
    end: int
    skips: list[int]


def _member(account_id: str, campaign_id: str) -> str:
    return f"{account_id}|{campaign_id}"


def _int(value: str | None) -> int:
    return int(value) if value else 0


class Campaigns:
    def __init__(self, ctx: Context, accounts: Accounts, limits: AccountLimits, messages: Messages) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.limits = limits
        self.messages = messages

    # Upload ----------------------------------------------------------------------------

    async def create(self, account: Account, request: CampaignRequest, file: IO[bytes]) -> Campaign:
        """Check the request and the file, and store the campaign as a draft with its
        report; raises (storing nothing) when either cannot make a campaign."""
        settings = self.ctx.settings
        now = self.ctx.now()
        name = check_name(request.name, "name")
        template_text = check_text(request.template, "template", min_chars=1, max_chars=MAX_MESSAGE_CHARS)
        phone_column = check_text(request.phone_column.strip(), "phone_column", min_chars=1, max_chars=MAX_NAME_CHARS)
        template = parse_template(template_text)
        example = OutgoingMessage(
            "+15550000000", "-", request.device_id, request.send_at, request.valid_for, None, request.priority
        )
        route, device_id = self.messages.route(account, example, 0)
        send_at, valid_ms, _, priority = check_schedule(example, route, now)
        shard = self.ctx.shard(account.shard)
        if route == "device" and not await self.ctx.redis.sismember(shard.devices, device_id):
            raise errors.DeviceNotFound("no such device")
        country = request.default_country or account.default_country or settings.default_country
        region = check_country(country) if country else None
        checked = await asyncio.to_thread(check_file, file, template, phone_column, region)
        suppressed = await self._suppressed(account, checked.numbers)
        rows: list[bytes] = []
        max_segments = total_segments = 0
        for row, to, segments in zip(checked.valid, checked.numbers, checked.segments, strict=True):
            if to in suppressed:
                continue
            rows.append(row)
            max_segments = max(max_segments, segments)
            total_segments += segments
        report = Report(
            rows=checked.rows,
            valid=len(rows),
            invalid=checked.invalid,
            invalid_rows=checked.invalid_rows,
            duplicates=checked.duplicates,
            opted_out=len(checked.valid) - len(rows),
            max_segments=max_segments,
            segments=total_segments,
        )
        campaign_id = ids.message_id(now)
        stored = {
            "account": account.id,
            "name": name,
            "template": template_text,
            "phone_column": phone_column,
            "device": device_id,
            "send_at": send_at,
            "valid_for": valid_ms // 1000,
            "priority": priority,
            "state": "draft",
            "report": msgspec.json.encode(report),
            "valid": len(rows),
            "chunk": 0,
            "next_row": 0,
            "skipped": 0,
            "created": now,
            "updated": now,
        }
        member = _member(account.id, campaign_id)
        rows_key = shard.campaign_rows(account.id, campaign_id)
        # Its deletion time first: rows written by an upload cut short (Redis gone part
        # way) are deleted with the draft that never was. The rows in pipelines of
        # ROWS_PER_PIPELINE, so the client's buffer stays small; the hash last.
        await self.ctx.redis.zadd(shard.campaigns_expiry(), {member: now + settings.campaign_draft_ttl_seconds * 1000})
        for first in range(0, len(rows), ROWS_PER_PIPELINE):
            pipe = self.ctx.redis.pipeline(transaction=False)
            for start in range(first, min(len(rows), first + ROWS_PER_PIPELINE), ROWS_BATCH):
                pipe.rpush(rows_key, *rows[start : min(start + ROWS_BATCH, first + ROWS_PER_PIPELINE)])
            await pipe.execute()
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.hset(shard.campaign(account.id, campaign_id), mapping=stored)  # type: ignore[arg-type]
        pipe.zadd(shard.campaigns(account.id), {campaign_id: 0})
        await pipe.execute()
        return await self.get(account, campaign_id)

    async def _suppressed(self, account: Account, numbers: list[str]) -> set[str]:
        """Which of ``numbers`` are on the account's suppression list."""
        key = self.ctx.shard(account.shard).suppression(account.id)
        if not numbers or not await self.ctx.redis.exists(key):
            return set()
        found: set[str] = set()
        for first in range(0, len(numbers), SUPPRESSION_BATCH):
            batch = numbers[first : first + SUPPRESSION_BATCH]
            listed = await self.ctx.redis.hmget(key, batch)
            found.update(n for n, on in zip(batch, listed, strict=True) if on is not None)
        return found

    # Reads -----------------------------------------------------------------------------

    async def get(self, account: Account, campaign_id: str) -> Campaign:
        if not ids.is_plain_id(campaign_id):
            raise errors.CampaignNotFound()
        found = await self._read(account, [campaign_id])
        if not found:
            raise errors.CampaignNotFound()
        return found[0]

    async def page(self, account: Account, *, limit: int = 50, cursor: str | None = None) -> CampaignPage:
        """The account's campaigns, newest first."""
        if not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
            raise errors.InvalidInput(f"limit must be 1 to {PAGE_MAX}", field="limit")
        if cursor is not None and not ids.is_plain_id(cursor):
            raise errors.InvalidInput("cursor is not one this server gave out", field="cursor")
        index = self.ctx.shard(account.shard).campaigns(account.id)
        upper = "+" if cursor is None else f"({cursor}"
        found = [text(i) for i in await self.ctx.redis.zrevrangebylex(index, upper, "-", start=0, num=limit)]
        items = await self._read(account, found)
        return CampaignPage(items, found[-1] if len(found) == limit else None)

    async def _read(self, account: Account, campaign_ids: list[str]) -> list[Campaign]:
        if not campaign_ids:
            return []
        shard = self.ctx.shard(account.shard)
        names = ("total", "sent", "delivered", "failed", "expired", "cancelled")
        pipe = self.ctx.redis.pipeline(transaction=False)
        for campaign_id in campaign_ids:
            pipe.hgetall(shard.campaign(account.id, campaign_id))
            pipe.hmget(shard.counters, [f"c:{campaign_id}:{n}" for n in names])
        replies = await pipe.execute()
        found = []
        for campaign_id, raw, counted in zip(campaign_ids, replies[0::2], replies[1::2], strict=True):
            if not raw:
                continue
            f = fields(raw)
            c = dict(zip(names, (int(v or 0) for v in counted), strict=True))
            counts = Counts(
                queued=c["total"],
                sent=c["sent"] + c["delivered"],
                delivered=c["delivered"],
                failed=c["failed"] + c["expired"],
                skipped=_int(f.get("skipped")) + c["cancelled"],
                cancelled=c["cancelled"],
                expired=c["expired"],
            )
            found.append(
                Campaign(
                    id=campaign_id,
                    name=f["name"],
                    state=f["state"],
                    reason=f.get("reason", ""),
                    template=f["template"],
                    phone_column=f["phone_column"],
                    device_id=f.get("device") or None,
                    send_at=_int(f.get("send_at")) or None,
                    priority=f.get("priority", "normal"),
                    valid_for=_int(f.get("valid_for")) or None,
                    created=_int(f.get("created")),
                    started=_int(f.get("started")) or None,
                    finished=_int(f.get("finished")) or None,
                    resume_at=_int(f.get("resume_at")) or None,
                    report=msgspec.json.decode(f["report"], type=Report),
                    counts=counts,
                )
            )
        return found

    # Start and cancel ---------------------------------------------------------------------

    async def _move(
        self, account_id: str, shard_tag: str, campaign_id: str, state: str, allowed: str, *extra: Any
    ) -> str:
        shard = self.ctx.shard(shard_tag)
        return text(
            await self.ctx.call(
                "campaign-state",
                [shard.campaign(account_id, campaign_id), shard.campaigns_active(), shard.campaigns_expiry()],
                [_member(account_id, campaign_id), state, allowed, self.ctx.now(), *extra],
            )
        )

    async def start(self, account: Account, campaign_id: str) -> Campaign:
        """A draft starts ``sending``: the background job queues its rows from now on."""
        if not ids.is_plain_id(campaign_id):
            raise errors.CampaignNotFound()
        try:
            await self._move(account.id, account.shard, campaign_id, "sending", "draft", "started", self.ctx.now())
        except errors.CampaignStateConflict as exc:
            raise errors.CampaignStateConflict(exc.current, "started (only a draft can)") from None
        return await self.get(account, campaign_id)

    async def cancel(self, account: Account, campaign_id: str) -> Campaign:
        """No further row is queued, and the background job cancels every message of the
        campaign no phone holds yet. A cancelled campaign cannot be cancelled again."""
        if not ids.is_plain_id(campaign_id):
            raise errors.CampaignNotFound()
        try:
            await self._move(
                account.id, account.shard, campaign_id, "cancelled", "draft,sending,paused,done", "reason", "cancelled"
            )
        except errors.CampaignStateConflict as exc:
            raise errors.CampaignStateConflict(exc.current, "cancelled") from None
        return await self.get(account, campaign_id)

    # The background job --------------------------------------------------------------------

    async def work(self, shard_tag: str, budget_s: float = 1.0) -> bool:
        """Move each active campaign of the shard on (for at most about ``budget_s`` in
        all) and delete those past their time; True when some have work left now."""
        shard = self.ctx.shard(shard_tag)
        await self._delete_expired(shard_tag)
        members = sorted(text(m) for m in await self.ctx.redis.smembers(shard.campaigns_active()))
        if not members:
            return False
        deadline = time.monotonic() + budget_s
        more = False
        for member in members:
            account_id, _, campaign_id = member.partition("|")
            share = max(0.05, (deadline - time.monotonic()) / max(1, len(members)))
            more |= await self.advance(shard_tag, account_id, campaign_id, time.monotonic() + share)
        return more

    async def advance(
        self, shard_tag: str, account_id: str, campaign_id: str, deadline: float, *, chunks: int | None = None
    ) -> bool:
        """Queue the campaign's next chunks until ``deadline`` (monotonic s) or, given,
        ``chunks`` of them, or cancel its messages if it was cancelled; True when it has
        more to do at once."""
        shard = self.ctx.shard(shard_tag)
        key = shard.campaign(account_id, campaign_id)
        member = _member(account_id, campaign_id)
        raw = await self.ctx.redis.hgetall(key)
        if not raw:
            await self.ctx.redis.srem(shard.campaigns_active(), member)
            return False
        f = fields(raw)
        try:
            account = await self.accounts.get(account_id)
        except errors.AccountNotFound:
            await self.ctx.redis.srem(shard.campaigns_active(), member)
            return False
        if f["state"] == "cancelled":
            return await self._cancel_messages(account, shard_tag, campaign_id, f)
        if f["state"] not in ("sending", "paused"):
            await self.ctx.redis.srem(shard.campaigns_active(), member)
            return False
        template = parse_template(f["template"])
        while time.monotonic() < deadline and (chunks is None or chunks > 0):
            chunks = None if chunks is None else chunks - 1
            now = self.ctx.now()
            if _int(f.get("resume_at")) > now:
                return False
            outcome = await self._queue_chunk(account, shard_tag, campaign_id, f, template)
            if outcome != "queued":
                return False
            f = fields(await self.ctx.redis.hgetall(key))
            if f.get("state") not in ("sending", "paused"):
                return f.get("state") == "cancelled"
        return True

    def _chunk_size(self, account: Account) -> int:
        limits = self.limits.of(account)
        return max(1, min(CHUNK_ROWS, self.ctx.settings.batch_max_messages, limits.sends_burst, limits.daily_quota))

    async def _queue_chunk(
        self, account: Account, shard_tag: str, campaign_id: str, f: dict[str, str], template: Any
    ) -> str:
        """One attempt at the next chunk: "queued", "waiting" (limit or quota), or "stopped"."""
        shard = self.ctx.shard(shard_tag)
        key = shard.campaign(account.id, campaign_id)
        chunk, valid = _int(f.get("chunk")), _int(f.get("valid"))
        if f.get("plan"):
            plan = msgspec.json.decode(f["plan"], type=Plan)
        else:
            start = _int(f.get("next_row"))
            plan = Plan(chunk, start, min(valid, start + self._chunk_size(account)), [])
            await self.ctx.redis.hset(key, "plan", msgspec.json.encode(plan))
        rows = [
            msgspec.json.decode(r, type=CheckedRow)
            for r in await self.ctx.redis.lrange(shard.campaign_rows(account.id, campaign_id), plan.start, plan.end - 1)
        ]
        if len(rows) != plan.end - plan.start:
            raise RuntimeError(f"campaign {campaign_id}: rows {plan.start}-{plan.end} are not all stored")
        skips = set(plan.skips)
        offsets = [i for i in range(len(rows)) if i not in skips]
        send_at = _int(f.get("send_at")) or None
        valid_for = _int(f.get("valid_for")) or None
        priority = f.get("priority") or None
        device_id = f.get("device") or None
        batch = [
            OutgoingMessage(rows[i].to, template.render(rows[i].values), device_id, send_at, valid_for, None, priority)
            for i in offsets
        ]
        message_ids: list[str] = []
        now = self.ctx.now()
        if batch:
            try:
                result = await self.messages.enqueue(
                    account, batch, idempotency_key=f"campaign:{campaign_id}:{plan.chunk}", campaign=campaign_id
                )
                message_ids = result.ids
            except errors.RecipientOptedOut as exc:
                plan.skips = sorted(skips | {offsets[p.index] for p in exc.problems})
                await self.ctx.redis.hset(key, "plan", msgspec.json.encode(plan))
                return "queued"  # the same chunk again at once, without those rows
            except errors.RateLimited as exc:
                left = exc.decision.remaining
                if 0 < left < len(batch):
                    return await self._cut(key, plan, offsets[left - 1] + 1)
                wait = max(exc.decision.retry_after_ms, 1)
                if wait > PAUSE_AFTER_MS:
                    await self._pause(account, shard_tag, campaign_id, "rate_limited", now + wait)
                else:
                    await self.ctx.redis.hset(key, "resume_at", now + wait)
                return "waiting"
            except errors.QuotaExceeded as exc:
                left = exc.quota - exc.used
                if 0 < left < len(batch):
                    return await self._cut(key, plan, offsets[left - 1] + 1)
                await self._pause(account, shard_tag, campaign_id, "quota_exceeded", now + QUOTA_RETRY_MS)
                return "waiting"
            except errors.DeviceNotFound:
                await self._move(
                    account.id, shard_tag, campaign_id, "cancelled", "sending,paused", "reason", "device_removed"
                )
                return "stopped"
        reply = await self.ctx.call(
            "campaign-step",
            [
                key,
                shard.campaign_sent(account.id, campaign_id),
                shard.campaign_rows(account.id, campaign_id),
                shard.campaigns_active(),
                shard.campaigns_expiry(),
            ],
            [
                _member(account.id, campaign_id),
                plan.chunk,
                plan.end,
                len(skips),
                now,
                self.ctx.settings.campaign_retention_days * 86_400_000,
                *message_ids,
            ],
        )
        return "queued" if text(reply[0]) in ("sending", "paused") else "stopped"

    async def _cut(self, key: str, plan: Plan, size: int) -> str:
        """Cut the plan refused by the limit or the quota down to what they allow now."""
        plan.end = plan.start + size
        plan.skips = [s for s in plan.skips if s < size]
        await self.ctx.redis.hset(key, "plan", msgspec.json.encode(plan))
        return "queued"

    async def _pause(self, account: Account, shard_tag: str, campaign_id: str, reason: str, resume_at: int) -> None:
        try:
            await self._move(
                account.id, shard_tag, campaign_id, "paused", "sending,paused", "reason", reason, "resume_at", resume_at
            )
        except errors.CampaignStateConflict:
            pass  # cancelled meanwhile

    async def _cancel_messages(self, account: Account, shard_tag: str, campaign_id: str, f: dict[str, str]) -> bool:
        """Cancel the next messages of a cancelled campaign that no phone holds; once
        through them all, count the rows never queued as skipped and let it go."""
        shard = self.ctx.shard(shard_tag)
        key = shard.campaign(account.id, campaign_id)
        cursor = _int(f.get("cancel_cursor"))
        found = [
            text(i)
            for i in await self.ctx.redis.lrange(
                shard.campaign_sent(account.id, campaign_id), cursor, cursor + CANCEL_BATCH - 1
            )
        ]
        for message_id in found:
            try:
                await self.messages.cancel(account, message_id)
            except (errors.InvalidTransition, errors.MessageNotFound):
                pass  # a phone has it, or it finished
        if len(found) == CANCEL_BATCH:
            await self.ctx.redis.hset(key, "cancel_cursor", cursor + len(found))
            return True
        now = self.ctx.now()
        member = _member(account.id, campaign_id)
        unsent = _int(f.get("valid")) - _int(f.get("next_row"))
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "cancel_cursor": cursor + len(found),
                "finished": now,
                "next_row": f.get("valid", "0"),
                "plan": "",
            },
        )
        pipe.hincrby(key, "skipped", max(0, unsent))
        pipe.delete(shard.campaign_rows(account.id, campaign_id))
        pipe.srem(shard.campaigns_active(), member)
        pipe.zadd(shard.campaigns_expiry(), {member: now + self.ctx.settings.campaign_retention_days * 86_400_000})
        await pipe.execute()
        return False

    async def _delete_expired(self, shard_tag: str) -> None:
        """Delete the drafts never started and the finished campaigns past retention."""
        shard = self.ctx.shard(shard_tag)
        due = [
            text(m)
            for m in await self.ctx.redis.zrangebyscore(
                shard.campaigns_expiry(), "-inf", self.ctx.now(), start=0, num=100
            )
        ]
        if not due:
            return
        pipe = self.ctx.redis.pipeline(transaction=False)
        for member in due:
            account_id, _, campaign_id = member.partition("|")
            pipe.delete(
                shard.campaign(account_id, campaign_id),
                shard.campaign_rows(account_id, campaign_id),
                shard.campaign_sent(account_id, campaign_id),
            )
            pipe.zrem(shard.campaigns(account_id), campaign_id)
            pipe.hdel(shard.counters, *[f"c:{campaign_id}:{s}" for s in (*STATUSES, "total")])
            pipe.zrem(shard.campaigns_expiry(), member)
        await pipe.execute()


def campaign_times(campaign: Campaign) -> dict[str, str | None]:
    """The campaign's moments as ISO-8601 UTC, for the API."""
    return {
        "created_at": iso_utc(campaign.created),
        "started_at": iso_utc(campaign.started),
        "finished_at": iso_utc(campaign.finished),
        "send_at": iso_utc(campaign.send_at),
        "resume_at": iso_utc(campaign.resume_at),
    }
