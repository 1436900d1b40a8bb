"""Messages on their way: routing and queueing (one message or a batch, all or nothing),
the atomic claim, the status a phone reports, and the sender's cancel. Each is one
script call; see the scripts in ``lua/`` for what happens inside."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from broker import errors, ids
from broker.context import Context
from broker.limits import AccountLimits
from broker.message_log import MessageLog
from broker.records import (
    Account,
    ClaimedMessage,
    ClaimResult,
    DeviceRef,
    EnqueueResult,
    MessageRecord,
    OutgoingMessage,
    RateDecision,
    StatusChange,
)
from broker.redis_client import text
from broker.segments import count_segments
from broker.validation import MAX_ERROR_CHARS, MAX_MESSAGE_CHARS, check_text, normalize_phone_number

MAX_IDEMPOTENCY_KEY_CHARS = 255
REPORTED_STATUSES = ("sent", "delivered", "failed")


class Messages:
    def __init__(self, ctx: Context, limits: AccountLimits, log: MessageLog) -> None:
        self.ctx = ctx
        self.limits = limits
        self.log = log

    def route(self, account: Account, message: OutgoingMessage, index: int) -> tuple[str, str]:
        """(route, device id) for one message, by the account's routing rules."""
        if account.account_type == "api_only":
            if message.device_id is not None:
                raise errors.RoutingError(
                    "API-only accounts send through the platform pool: omit device_id", field="device_id", index=index
                )
            return "pool", ""
        if message.device_id is None:
            return "pool", ""
        if not ids.is_plain_id(message.device_id):
            raise errors.DeviceNotFound("no such device", index=index)
        return "device", message.device_id

    async def enqueue(
        self,
        account: Account,
        messages: Sequence[OutgoingMessage],
        *,
        idempotency_key: str | None = None,
    ) -> EnqueueResult:
        """Queue one message or a batch, all or nothing, in one call to Redis.

        Self-managed accounts: a ``device_id`` puts the message in that device's queue,
        none puts it in the account's own pool. API-only accounts: the platform pool.
        """
        settings = self.ctx.settings
        if not 1 <= len(messages) <= settings.batch_max_messages:
            raise errors.InvalidInput(f"send between 1 and {settings.batch_max_messages} messages", field="messages")
        if idempotency_key is not None:
            check_text(idempotency_key, "Idempotency-Key", min_chars=1, max_chars=MAX_IDEMPOTENCY_KEY_CHARS)
        now = self.ctx.now()
        shard = self.ctx.shard(account.shard)
        args: list[Any] = []
        canonical: list[tuple[str, str, str]] = []
        problems: list[errors.Problem] = []
        targeted: list[tuple[int, str]] = []
        message_ids = ids.message_ids(now, len(messages))
        for index, message in enumerate(messages):
            try:
                to = normalize_phone_number(message.to)
                body = check_text(message.message, "message", min_chars=1, max_chars=MAX_MESSAGE_CHARS)
                route, device_id = self.route(account, message, index)
            except errors.InvalidInput as exc:
                problems.append(errors.Problem(index, exc.field, exc.detail, type(exc)))
                continue
            except errors.DeviceNotFound:
                problems.append(errors.Problem(index, "device_id", "no such device"))
                continue
            segments = count_segments(body).count
            args += [message_ids[index], route, device_id, to, body, segments]
            canonical.append((to, body, device_id))
            if route == "device":
                targeted.append((index, device_id))
        if problems:
            # Refused already: name the unknown devices too (the script would only reach
            # them once the rest is valid), so one answer lists every bad item.
            if targeted:
                known = await self.ctx.redis.smismember(shard.devices, [d for _, d in targeted])
                problems += [
                    errors.Problem(i, "device_id", "no such device")
                    for (i, _), found in zip(targeted, known, strict=True)
                    if not found
                ]
                problems.sort(key=lambda p: p.index)
            raise invalid_messages(problems)
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = hashlib.sha256(msgspec.json.encode(canonical)).hexdigest()
        limits = self.limits.of(account)
        if len(messages) > limits.daily_quota:
            # Never allowed, whatever the day: a 429 saying "try again tomorrow" would lie.
            raise errors.InvalidInput(
                f"{len(messages)} messages are more than the account's whole daily quota of "
                f"{limits.daily_quota}; send fewer at once or ask for a higher quota",
                field="messages",
            )
        reply = await self.ctx.call(
            "enqueue",
            [
                shard.messages,
                shard.counters,
                shard.quota,
                shard.idempotency(account.id, idempotency_key or "-"),
                shard.expiry,
                shard.events,
                shard.pool,
                shard.pool_state,
                shard.queue,
                shard.devices,
                shard.sent(account.id),
                shard.send_rate(account.id),
            ],
            [
                account.id,
                now,
                settings.message_ttl_seconds * 1000,
                limits.daily_quota,
                fingerprint,
                settings.idempotency_ttl_seconds * 1000,
                len(messages),
                1000 / limits.sends_per_second,
                limits.sends_burst,
                *args,
            ],
        )
        kind = text(reply[0])
        rate = RateDecision(True, limits.sends_burst, int(reply[1]), 0, int(reply[2]))
        return EnqueueResult([text(x) for x in reply[3:]], kind == "duplicate", shard.tag, rate)

    async def claim(self, device: DeviceRef, limit: int | None = None) -> list[ClaimedMessage]:
        """Atomically claim up to ``limit`` messages for one device (see claim-14.lua)."""
        return (await self.claim_tasks(device, limit)).messages

    async def claim_tasks(self, device: DeviceRef, limit: int | None = None) -> ClaimResult:
        """Claim as :meth:`claim` does, with the device's poll limiter after the claim.
        Polling faster than the tasks limit raises RateLimited and changes nothing."""
        settings = self.ctx.settings
        if limit is None:
            limit = settings.claim_default_limit
        if not isinstance(limit, int) or not 1 <= limit <= settings.claim_max_limit:
            raise errors.InvalidInput(f"limit must be 1 to {settings.claim_max_limit}", field="limit")
        shard = self.ctx.shard(device.shard)
        did = device.device_id
        reply = await self.ctx.call(
            "claim",
            [
                shard.device(did),
                shard.device_window(did),
                shard.messages,
                shard.counters,
                shard.queue,
                shard.leased,
                shard.lease_checks,
                shard.expiry,
                shard.pool,
                shard.pool_state,
                shard.last_seen,
                shard.events,
                shard.poll_rate(did),
                shard.account(),
            ],
            [
                did,
                self.ctx.now(),
                limit,
                settings.lease_seconds * 1000,
                settings.max_leases,
                settings.presence_ttl_seconds * 1000,
                settings.tasks_per_minute,
                settings.tasks_burst,
            ],
        )
        remaining, burst, reset = (int(x) for x in reply[0])
        return ClaimResult(
            [ClaimedMessage(text(m[0]), text(m[1]), text(m[2]), int(m[3])) for m in reply[1:]],
            RateDecision(True, burst, remaining, 0, reset),
        )

    async def report_status(self, device: DeviceRef, message_id: str, status: str, error: str = "") -> StatusChange:
        """A phone's report on a message it holds: sent, delivered or failed."""
        if status not in REPORTED_STATUSES:
            raise errors.InvalidInput("status must be sent, delivered or failed", field="status")
        if not ids.is_plain_id(message_id):
            raise errors.MessageNotFound()
        check_text(error, "error", max_chars=MAX_ERROR_CHARS)
        shard = self.ctx.shard(device.shard)
        try:
            reply = await self.ctx.call(
                "report-status",
                [shard.messages, shard.counters, shard.leased, shard.lease_checks, shard.events],
                [device.device_id, message_id, status, error, self.ctx.now()],
            )
        except errors.MessageNotFound:
            trimmed = await self.log.trimmed(device.shard, message_id)
            if trimmed is None or trimmed.device != device.device_id:
                raise
            return repeat_or_refuse(trimmed, status)
        return StatusChange(text(reply[0]), text(reply[1]), text(reply[2]) == "1")

    async def cancel(self, account: Account, message_id: str) -> StatusChange:
        """The sender's cancel of a message still queued (InvalidTransition once a phone holds it)."""
        if not ids.is_plain_id(message_id):
            raise errors.MessageNotFound()
        shard = self.ctx.shard(account.shard)
        try:
            reply = await self.ctx.call(
                "cancel",
                [shard.messages, shard.counters, shard.queue, shard.expiry, shard.pool, shard.pool_state, shard.events],
                [account.id, message_id, self.ctx.now()],
            )
        except errors.MessageNotFound:
            trimmed = await self.log.trimmed(account.shard, message_id)
            if trimmed is None or trimmed.account != account.id:
                raise
            return repeat_or_refuse(trimmed, "cancelled")
        return StatusChange(text(reply[0]), text(reply[1]), text(reply[2]) == "1")


def repeat_or_refuse(trimmed: MessageRecord, status: str) -> StatusChange:
    """A status change asked of a trimmed message: a repeat is the usual no-op; any other
    move is refused (a phone reporting ``delivered`` after the hot window gets 404 as
    before, since the record it would change is no longer in Redis)."""
    if trimmed.status == status:
        return StatusChange(trimmed.id, status, False)
    if status == "cancelled" or trimmed.status != "sent":
        raise errors.InvalidTransition(trimmed.status, status)
    raise errors.MessageNotFound("the message finished and left the hot store; its history is kept")


def invalid_messages(problems: list[errors.Problem]) -> errors.BrokerError:
    """One bad message is reported as itself; several as a list naming each index.
    Unknown devices alone are DeviceNotFound, as the script reports them."""
    if all(p.field == "device_id" and p.detail == "no such device" for p in problems):
        indexes = [p.index for p in problems]
        return errors.DeviceNotFound(
            f"message {', '.join(map(str, indexes))}: no such device", index=indexes[0], indexes=indexes
        )
    if len(problems) == 1:
        p = problems[0]
        return p.kind(f"message {p.index}: {p.detail}", field=p.field, index=p.index, problems=problems)
    named = ", ".join(str(p.index) for p in problems[:20]) + (", ..." if len(problems) > 20 else "")
    return errors.InvalidInput(
        f"{len(problems)} messages are invalid (messages {named}); nothing was queued",
        field="messages",
        problems=problems,
    )
