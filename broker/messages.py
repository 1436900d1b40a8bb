"""Messages on their way: routing and queueing (one message or a batch, all or nothing),
the atomic claim, the status a phone reports, and the sender's cancel. Each is one
script call; see the scripts in ``lua/`` for what happens inside."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError

from broker import envelopes, errors, ids, keys, schedule
from broker.clock import parse_iso_ms
from broker.context import Context
from broker.limits import AccountLimits
from broker.message_log import MessageLog
from broker.pool_shards import PoolShards
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
from broker.redis_client import StoreNotReplicated, text
from broker.segments import count_segments
from broker.send_windows import REFRESH_BELOW_MS, SendWindows
from broker.validation import (
    MAX_ERROR_CHARS,
    MAX_MESSAGE_CHARS,
    check_text,
    check_whole_number,
    normalize_phone_number,
)

MAX_IDEMPOTENCY_KEY_CHARS = 255
REPORTED_STATUSES = ("sent", "delivered", "failed")
MIN_VALID_FOR_S, MAX_VALID_FOR_S = 30, 86_400
RETRY_DELAY_MS = 30_000
"""How long a device message its phone put back after a retryable failure waits before
that phone is handed it again (a pool message goes to any phone at once)."""
MAX_SIM_SLOTS = 4
MAX_REPORTED_SEGMENTS = 255
"""The most segments a phone may report a message took (a concatenated SMS has at most 255 parts)."""
PRIORITIES = ("normal", "high")
RECIPIENT_MEMORY_MS = 30 * 86_400_000
"""How long a platform pool phone remembers which account it last sent to a number for:
an SMS from that number to that phone within it belongs to that account."""


class Messages:
    def __init__(
        self,
        ctx: Context,
        limits: AccountLimits,
        log: MessageLog,
        pool_shards: PoolShards,
        send_windows: SendWindows,
    ) -> None:
        self.ctx = ctx
        self.limits = limits
        self.log = log
        self.pool_shards = pool_shards
        self.send_windows = send_windows

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
        credentials_epoch: int | None = None,
        campaign: str = "",
    ) -> EnqueueResult:
        """Queue one message or a batch, all or nothing, in one call to Redis.

        Self-managed accounts: a ``device_id`` puts the message in that device's queue,
        none puts it in the account's own pool. API-only accounts: the platform pool.
        ``credentials_epoch``: the epoch an API key was admitted under
        (:meth:`ApiKeys.admit`); StaleCredentials, with nothing queued, once it moved.
        ``campaign``: the id of the campaign the messages are queued for (each record
        keeps it, and the shard counts the campaign's messages per state).
        """
        settings = self.ctx.settings
        if not 1 <= len(messages) <= settings.batch_max_messages:
            raise errors.InvalidInput(f"send between 1 and {settings.batch_max_messages} messages", field="messages")
        if idempotency_key is not None:
            check_text(idempotency_key, "Idempotency-Key", min_chars=1, max_chars=MAX_IDEMPOTENCY_KEY_CHARS)
        now = self.ctx.now()
        shard = self.ctx.shard(account.shard)
        args: list[Any] = []
        canonical: list[tuple[str | int, ...]] = []
        problems: list[errors.Problem] = []
        targeted: list[tuple[int, str]] = []
        recipients: list[tuple[int, str]] = []
        message_ids = ids.message_ids(now, len(messages))
        first_due = 0
        statuses: list[str] = []
        for index, message in enumerate(messages):
            try:
                to = normalize_phone_number(message.to)
                segments = check_body(account, message)
                route, device_id = self.route(account, message, index)
                send_at, valid_ms, sim_slot, priority = check_schedule(message, route, now)
            except errors.InvalidInput as exc:
                problems.append(errors.Problem(index, exc.field, exc.detail, type(exc)))
                continue
            except errors.DeviceNotFound:
                problems.append(errors.Problem(index, "device_id", "no such device"))
                continue
            body = message.message
            recipients.append((index, to))
            encrypted = int(message.encrypted)
            args += [
                message_ids[index],
                route,
                device_id,
                to,
                body,
                segments,
                send_at,
                valid_ms,
                sim_slot,
                priority,
                encrypted,
            ]
            statuses.append("scheduled" if send_at > now else "queued")
            if send_at > now and (first_due == 0 or send_at < first_due):
                first_due = send_at
            # A schedule, an expiry, a SIM or a high priority is part of the request an
            # Idempotency-Key names (left out when absent: the fingerprints of plain sends
            # stay as they were).
            extras: tuple[int | str, ...] = ()
            if send_at or valid_ms or sim_slot:
                extras = (send_at, valid_ms, sim_slot)
            if priority != "normal":
                extras = (send_at, valid_ms, sim_slot, priority)
            if encrypted:
                extras = (send_at, valid_ms, sim_slot, priority, "encrypted")
            canonical.append((to, body, device_id, *extras))
            if route == "device":
                targeted.append((index, device_id))
        if problems:
            # Refused already: name the unknown devices and suppressed recipients too (the
            # script would only reach them once the rest is valid), so one answer lists
            # every bad item.
            if targeted:
                known = await self.ctx.redis.smismember(shard.devices, [d for _, d in targeted])
                problems += [
                    errors.Problem(i, "device_id", "no such device")
                    for (i, _), found in zip(targeted, known, strict=True)
                    if not found
                ]
            if recipients:
                listed = await self.ctx.redis.hmget(shard.suppression(account.id), [to for _, to in recipients])
                problems += errors.opted_out_problems([i for (i, _), on in zip(recipients, listed, strict=True) if on])
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
                shard.suppression(account.id),
                shard.threads(account.id),
                shard.thread_newest(account.id),
                shard.waiting,
                shard.scheduled,
                shard.pool_high,
                shard.credentials,
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
                self.ctx.wake_command,
                shard.wake_channel,
                "" if credentials_epoch is None else credentials_epoch,
                campaign,
                *args,
            ],
        )
        kind = text(reply[0])
        if first_due:
            await schedule.note(self.ctx, shard.tag, first_due)  # a repeat's too: harmless
        rate = RateDecision(True, limits.sends_burst, int(reply[1]), 0, int(reply[2]))
        return EnqueueResult([text(x) for x in reply[3:]], kind == "duplicate", shard.tag, rate, statuses)

    async def claim(self, device: DeviceRef, limit: int | None = None) -> list[ClaimedMessage]:
        """Atomically claim up to ``limit`` messages for one device (see claim-17.lua)."""
        return (await self.claim_tasks(device, limit)).messages

    async def claim_tasks(
        self,
        device: DeviceRef,
        limit: int | None = None,
        *,
        refuse: bool = True,
        charge_empty: bool = True,
        waiting_until: int | None = None,
    ) -> ClaimResult:
        """Claim as :meth:`claim` does, with the device's poll limiter: with ``refuse``, an
        empty limiter raises RateLimited and changes nothing; with ``charge_empty``, a
        claim that hands nothing is charged (one that hands something never is).

        ``waiting_until`` makes it a long poll's claim (:mod:`broker.long_poll`): the
        device's presence is refreshed, and it is listed as waiting until that time (ms)
        when the claim hands it nothing, or taken off the list when it hands something
        or when ``waiting_until`` is 0 (the claim that ends the wait). None: a plain poll,
        which leaves the list alone.

        A claim answered StoreNotReplicated (its writes not copied to the replicas in
        time: the phone is told to try again) ends the leases it took at once
        (lease-end), so that the phone's next claim is handed the same messages again
        rather than after a whole lease."""
        settings = self.ctx.settings
        if limit is None:
            limit = settings.claim_default_limit
        if not isinstance(limit, int) or not 1 <= limit <= settings.claim_max_limit:
            raise errors.InvalidInput(f"limit must be 1 to {settings.claim_max_limit}", field="limit")
        held: list[tuple[str, str]] = []  # (shard tag, id) of each message this claim leased
        try:
            return await self._claim_tasks(device, limit, refuse, charge_empty, waiting_until, held)
        except StoreNotReplicated:
            await self.end_leases(device.device_id, held)
            raise

    async def end_leases(self, device_id: str, held: list[tuple[str, str]]) -> None:
        """End now the leases of ``held`` that ``device_id`` still holds (lease-end),
        shard by shard; one that cannot be ended runs its course."""
        now = self.ctx.now()
        by_shard: dict[str, list[str]] = {}
        for tag, message_id in held:
            by_shard.setdefault(tag, []).append(message_id)
        for tag, message_ids in by_shard.items():
            shard = self.ctx.shard(tag)
            with contextlib.suppress(RedisError):
                await self.ctx.call(
                    "lease-end", [shard.messages, shard.leased, shard.lease_checks], [device_id, now, *message_ids]
                )

    async def _claim_tasks(
        self,
        device: DeviceRef,
        limit: int,
        refuse: bool,
        charge_empty: bool,
        waiting_until: int | None,
        held: list[tuple[str, str]],
    ) -> ClaimResult:
        """:meth:`claim_tasks`'s work, each message it leases noted in ``held``, the
        failed call's too."""
        settings = self.ctx.settings
        shard = self.ctx.shard(device.shard)
        did = device.device_id
        now = self.ctx.now()
        wait = "-" if waiting_until is None else str(waiting_until)
        pool_tags = await self._pool_shards_of(device)
        sharded = len(pool_tags) > 1
        claim = self.ctx.call(
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
                shard.waiting,
                shard.device_presence(did),
                shard.pool_high,
                shard.pool_failures,
            ],
            [
                did,
                now,
                limit,
                settings.lease_seconds * 1000,
                settings.max_leases,
                settings.presence_ttl_seconds * 1000,
                settings.tasks_per_minute,
                settings.tasks_burst,
                0 if sharded else 1,
                int(refuse),
                int(charge_empty and not sharded),
                wait,
                REFRESH_BELOW_MS,
            ],
        )
        reply = await _noting_leases(claim, held, shard.tag, 1)
        head = [int(x) for x in reply[0]]
        messages = [claimed_message(m) for m in reply[1:]]
        remaining, burst, reset, window_ends_soon = head[:4]
        if window_ends_soon:
            await self.send_windows.refresh(device)
        if sharded:
            budget = head[4:]
            if not budget[4] and wait != "-":
                wait = "0"  # outside its send window: not a phone to wake
            messages += await self._claim_pool_shards(device, pool_tags, now, limit - len(messages), budget, wait, held)
            if charge_empty and not messages:
                # Only now is it known that the claim handed nothing: charge the poll
                # limiter (a pool phone's, so the account overrides do not apply).
                charged = await self.ctx.call(
                    "rate-limit",
                    [shard.poll_rate(did)],
                    [now, 60_000 / settings.tasks_per_minute, settings.tasks_burst, 1],
                )
                remaining, reset = int(charged[1]), int(charged[3])
        return ClaimResult(messages, RateDecision(True, burst, remaining, 0, reset))

    async def _claim_pool_shards(
        self,
        device: DeviceRef,
        tags: Sequence[str],
        now: int,
        room: int,
        budget: list[int],
        wait: str,
        held: list[tuple[str, str]],
    ) -> list[ClaimedMessage]:
        """The rest of a pool phone's claim when the platform pool is split: pool-take
        calls (one single-slot script each) over the pool shards, from the shard after the
        one its previous claim started at. A first pass takes from each shard its share
        (:meth:`PoolShards.split`), a second fills what is left from any shard that had
        more; the budget left travels from call to call, and the home shard is charged
        once for all of it. Shards not reached are still visited with no room (in
        parallel), so their sweeps keep seeing the phone while it holds their messages,
        and their waiting senders are counted."""
        settings = self.ctx.settings
        minute_used, per_minute, day_used, per_day, online, turn = budget
        start = turn % len(tags)
        order = [*tags[start:], *tags[:start]]
        did = device.device_id
        taken: list[ClaimedMessage] = []
        charged = 0
        pool_open = bool(online)
        visited: set[str] = set()
        drained: set[str] = set()

        async def visit(tag: str, most: int) -> list[Any]:
            shard = self.ctx.shard(tag)
            call = self.ctx.call(
                "pool-take",
                [
                    shard.messages,
                    shard.counters,
                    shard.leased,
                    shard.lease_checks,
                    shard.expiry,
                    shard.pool,
                    shard.pool_state,
                    shard.pool_visitors,
                    shard.events,
                    shard.waiting,
                    shard.pool_high,
                    shard.pool_failures,
                ],
                [
                    did,
                    now,
                    most,
                    settings.lease_seconds * 1000,
                    settings.max_leases,
                    settings.presence_ttl_seconds * 1000,
                    int(pool_open),
                    minute_used,
                    per_minute,
                    day_used,
                    per_day,
                    wait,
                ],
            )
            reply: list[Any] = await _noting_leases(call, held, tag, 3)
            visited.add(tag)
            self.pool_shards.saw(tag, int(reply[2]))
            return reply

        async def take(tag: str, most: int) -> None:
            nonlocal room, minute_used, day_used, charged, pool_open
            reply = await visit(tag, most)
            found = [claimed_message(m) for m in reply[3:]]
            taken.extend(found)
            room -= len(found)
            got = int(reply[0])
            minute_used, day_used, charged = minute_used + got, day_used + got, charged + got
            if int(reply[1]):
                pool_open = False  # the budget is full: other shards only redeliver
            if len(found) < most:
                drained.add(tag)

        for tag, share in zip(order, self.pool_shards.split(room, order), strict=True):
            if min(share, room) > 0:
                await take(tag, min(share, room))
        for tag in order:
            if room > 0 and tag not in drained:
                await take(tag, room)
        await asyncio.gather(*(visit(tag, 0) for tag in order if tag not in visited))
        if charged:
            home = self.ctx.shard(device.shard)
            await self.ctx.call(
                "pool-charge", [home.device(did), home.device_window(did)], [now, charged, taken[-1].id]
            )
        return taken

    async def report_status(
        self,
        device: DeviceRef,
        message_id: str,
        status: str,
        error: str = "",
        *,
        retryable: bool = False,
        sim_slot: int | None = None,
        segments: int | None = None,
    ) -> StatusChange:
        """A phone's report on a message it holds: sent, delivered or failed. A
        ``retryable`` failure (no service, radio off) of a claimed message puts it back,
        ``queued``, while it has attempts left (see report-status-17.lua); with sent or
        delivered it means nothing. ``sim_slot`` with sent is the SIM (1-4) that sent it,
        kept as the message's ``sim_slot``; with delivered or failed it means nothing.
        ``segments`` with sent of an encrypted message is the count the phone made from
        the text, kept in place of the upper bound; otherwise it means nothing."""
        if status not in REPORTED_STATUSES:
            raise errors.InvalidInput("status must be sent, delivered or failed", field="status")
        if retryable is not False and retryable is not True:
            raise errors.InvalidInput("retryable must be true or false", field="retryable")
        retryable = retryable and status == "failed"  # a sent or delivered report has nothing to retry
        if sim_slot is not None:
            check_whole_number(sim_slot, "sim_slot", low=1, high=MAX_SIM_SLOTS)
        sent_from = sim_slot if sim_slot is not None and status == "sent" else 0
        if segments is not None:
            check_whole_number(segments, "segments", low=1, high=MAX_REPORTED_SEGMENTS)
        sent_segments = segments if segments is not None and status == "sent" else 0
        if not ids.is_plain_id(message_id):
            raise errors.MessageNotFound()
        check_text(error, "error", max_chars=MAX_ERROR_CHARS)
        now = self.ctx.now()

        async def report(tag: str) -> StatusChange:
            shard = self.ctx.shard(tag)
            remember_ms = RECIPIENT_MEMORY_MS if keys.is_pool_shard(tag) else 0
            reply = await self.ctx.call(
                "report-status",
                [
                    shard.messages,
                    shard.counters,
                    shard.leased,
                    shard.lease_checks,
                    shard.events,
                    shard.pool_recipients,
                    shard.pool_recipients_age,
                    shard.device(device.device_id),
                    shard.device_presence(device.device_id),
                    shard.last_seen,
                    shard.expiry,
                    shard.pool,
                    shard.pool_state,
                    shard.scheduled,
                    shard.waiting,
                    shard.pool_high,
                    shard.pool_failures,
                ],
                [
                    device.device_id,
                    message_id,
                    status,
                    error,
                    now,
                    remember_ms,
                    self.ctx.settings.presence_ttl_seconds * 1000 if tag == device.shard else 0,
                    int(retryable),
                    self.ctx.settings.max_leases,
                    RETRY_DELAY_MS,
                    self.ctx.wake_command,
                    shard.wake_channel,
                    self.ctx.settings.pool_skip_after_failures,
                    self.ctx.settings.pool_skip_seconds * 1000,
                    sent_from,
                    sent_segments,
                ],
            )
            retry_at = int(reply[3])
            if retry_at:
                await schedule.note(self.ctx, tag, retry_at)
            return StatusChange(text(reply[0]), text(reply[1]), text(reply[2]) == "1")

        try:
            return await report(device.shard)
        except errors.MessageNotFound as exc:
            missing = exc
        # A pool phone of a split pool holds messages of every pool shard: the one that
        # has this id answers, each other one says it has no such message.
        others = [t for t in await self._pool_shards_of(device) if t != device.shard]
        for result in await asyncio.gather(*(report(t) for t in others), return_exceptions=True):
            if isinstance(result, StatusChange):
                return result
            if not isinstance(result, errors.MessageNotFound):
                raise result
        for tag in (device.shard, *others):
            trimmed = await self.log.trimmed(tag, message_id)
            if trimmed is not None and trimmed.device == device.device_id:
                return repeat_or_refuse(trimmed, status)
        raise missing

    async def _pool_shards_of(self, device: DeviceRef) -> tuple[str, ...]:
        """The pool shards a device claims from: every one for a pool phone, none for an
        account's own phone."""
        return await self.pool_shards.in_use() if keys.is_pool_shard(device.shard) else ()

    async def cancel(self, account: Account, message_id: str) -> StatusChange:
        """The sender's cancel of a message still queued (InvalidTransition once a phone holds it)."""
        if not ids.is_plain_id(message_id):
            raise errors.MessageNotFound()
        shard = self.ctx.shard(account.shard)
        try:
            reply = await self.ctx.call(
                "cancel",
                [
                    shard.messages,
                    shard.counters,
                    shard.queue,
                    shard.expiry,
                    shard.pool,
                    shard.pool_state,
                    shard.events,
                    shard.scheduled,
                    shard.pool_high,
                ],
                [account.id, message_id, self.ctx.now()],
            )
        except errors.MessageNotFound:
            trimmed = await self.log.trimmed(account.shard, message_id)
            if trimmed is None or trimmed.account != account.id:
                raise
            return repeat_or_refuse(trimmed, "cancelled")
        return StatusChange(text(reply[0]), text(reply[1]), text(reply[2]) == "1")


def check_body(account: Account, message: OutgoingMessage) -> int:
    """A message's text checked, and the segments it is charged: counted from a plain
    text; for an end-to-end envelope (self-managed accounts only: the platform pool's
    phones hold no sender's passphrase), the most a plaintext of its size can take."""
    if message.encrypted is not False and message.encrypted is not True:
        raise errors.InvalidInput("encrypted must be true or false", field="encrypted")
    if not message.encrypted:
        body = check_text(message.message, "message", min_chars=1, max_chars=MAX_MESSAGE_CHARS)
        return count_segments(body).count
    if account.account_type != "self_managed":
        raise errors.InvalidInput(
            "API-only accounts cannot send encrypted messages: the platform pool's phones do not hold your "
            "passphrase; send the text without encrypted",
            field="encrypted",
        )
    return envelopes.most_segments(envelopes.plaintext_bytes(message.message))


def check_schedule(message: OutgoingMessage, route: str, now: int) -> tuple[int, int, int, str]:
    """A message's send_at (ms; 0: now), how long it stays valid once due (ms; 0: the
    message TTL), its SIM slot (0: the phone's choice) and priority, checked."""
    send_at = 0
    if message.send_at is not None:
        moment = parse_iso_ms(message.send_at) if isinstance(message.send_at, str) else message.send_at
        if not isinstance(moment, int) or isinstance(moment, bool) or moment <= 0:
            raise errors.InvalidInput(
                "send_at must be an ISO-8601 time with seconds and a time zone, e.g. 2026-12-24T09:00:00+01:00",
                field="send_at",
            )
        if moment > now + schedule.MAX_AHEAD_MS:
            raise errors.InvalidInput("send_at may be at most 30 days ahead", field="send_at")
        send_at = moment
    valid_ms = 0
    if message.valid_for is not None:
        check_whole_number(message.valid_for, "valid_for", low=MIN_VALID_FOR_S, high=MAX_VALID_FOR_S)
        valid_ms = message.valid_for * 1000
    sim_slot = 0
    if message.sim_slot is not None:
        check_whole_number(message.sim_slot, "sim_slot", low=1, high=MAX_SIM_SLOTS)
        if route != "device":
            raise errors.InvalidInput("sim_slot picks a SIM of one phone: send it with device_id", field="sim_slot")
        sim_slot = message.sim_slot
    priority = "normal" if message.priority is None else message.priority
    if priority not in PRIORITIES:
        raise errors.InvalidInput('priority must be "normal" or "high"', field="priority")
    return send_at, valid_ms, sim_slot, priority


def claimed_message(m: Sequence[Any]) -> ClaimedMessage:
    """One message of a claim script's reply: id, to, body, segments, SIM slot (0: any),
    encrypted ("1") or not ("0")."""
    return ClaimedMessage(text(m[0]), text(m[1]), text(m[2]), int(m[3]), int(m[4]) or None, text(m[5]) == "1")


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


async def _noting_leases(call: Awaitable[Any], held: list[tuple[str, str]], tag: str, first: int) -> Any:
    """The reply of a claiming script's ``call`` (its messages from ``reply[first]`` on),
    each message it leased noted in ``held`` as (``tag``, id): those of a call answered
    StoreNotReplicated too, from the reply that ran on the primary alone."""
    try:
        reply = await call
    except StoreNotReplicated as exc:
        held.extend((tag, claimed_message(m).id) for answer in exc.answers[:1] for m in answer[first:])
        raise
    held.extend((tag, claimed_message(m).id) for m in reply[first:])
    return reply
