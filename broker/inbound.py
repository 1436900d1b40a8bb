"""Received SMS: what a phone reports it got, stored once in the history of the account it
belongs to (see inbound-8.lua), with opt-out words kept on that account's suppression
list.

Whose SMS it is:

- a phone of a self-managed account: that account's;
- a platform pool phone: the account whose message that phone last sent to the sender's
  number, within 30 days (noted in that message's shard when the phone reported it
  sent); else the operator's (the first operator account); else nobody's, kept in the
  phone's own shard (counted for the phone, in no account's history).

The phone retries a report until it is answered, so each SMS carries the phone's ``ref``.
The first report of a ``ref`` takes an id for it in the phone's own shard (a key of its
own, kept 30 days, taken with ``SET NX``), then stores the SMS under that id; a retry
finds the id and stores nothing again, whichever account the SMS would belong to by
then. With ``CONNECFY_REDIS_WAIT_REPLICAS`` above 0 the ref is waited for like the
script's write: it may be in another shard (a pool phone's SMS stored in its sender's),
whose replicas the script's ``WAIT`` does not cover, and a failover that lost it would
let the phone's retry store the SMS a second time.
"""

from __future__ import annotations

import re

import msgspec

from broker import errors, ids, keys
from broker.clock import parse_iso_ms
from broker.context import Context
from broker.messages import RECIPIENT_MEMORY_MS
from broker.pool_shards import PoolShards
from broker.records import DeviceRef
from broker.redis_client import text
from broker.segments import count_segments
from broker.suppressions import keyword
from broker.validation import check_sender, check_text

MAX_INBOUND_CHARS = 5_000
MAX_REF_CHARS = 64
MAX_SIM_SLOT = 7
REF_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Received(msgspec.Struct, frozen=True):
    id: str
    new: bool  # False: this ref was stored before, nothing changed
    account: str  # "" when it belongs to no account
    suppression: str  # "added", "removed" or ""


class Inbound:
    def __init__(self, ctx: Context, pool_shards: PoolShards) -> None:
        self.ctx = ctx
        self.pool_shards = pool_shards

    async def receive(
        self,
        device: DeviceRef,
        sender: str,
        message: str,
        received_at: int | str,
        ref: str,
        sim_slot: int | None = None,
    ) -> Received:
        """Store the SMS ``device`` received (``received_at``: ms, or ISO-8601 as the API
        gets it)."""
        sender = check_sender(sender)
        received_at_ms = parse_iso_ms(received_at) if isinstance(received_at, str) else received_at
        if isinstance(received_at_ms, bool):
            received_at_ms = None
        if received_at_ms is None:
            raise errors.InvalidInput(
                "received_at must be an ISO-8601 date and time with seconds and a time zone, "
                "e.g. 2026-12-05T12:00:00.123Z",
                field="received_at",
            )
        message = check_text(message, "message", min_chars=1, max_chars=MAX_INBOUND_CHARS)
        if not isinstance(ref, str) or not REF_PATTERN.fullmatch(ref):
            raise errors.InvalidInput(f"ref must be 1 to {MAX_REF_CHARS} letters, digits, '-' or '_'", field="ref")
        if sim_slot is not None and not (isinstance(sim_slot, int) and 0 <= sim_slot <= MAX_SIM_SLOT):
            raise errors.InvalidInput(f"sim_slot must be 0 to {MAX_SIM_SLOT}", field="sim_slot")
        home = self.ctx.shard(device.shard)
        ref_key = home.inbound_ref(device.device_id, ref)
        async with self.ctx.redis.pipeline(transaction=False) as pipe:  # one slot: one round trip
            pipe.hmget(home.device(device.device_id), ["id", "phone_number"])
            pipe.get(ref_key)
            (known, phone_number), taken = await pipe.execute()
        if known is None:
            raise errors.DeviceNotFound()
        if taken is None or self.ctx.settings.redis_wait_replicas:
            # A first report takes an id for the ref; waiting for replicas, a retry also
            # makes sure they hold the ref its first report took (that one may have been
            # answered 503 before they did).
            if taken is None:
                tag, account = await self.owner(device, sender)
                claim = f"{tag}|{ids.message_id(self.ctx.now())}|{account}"
            else:
                claim = text(taken)
            taken = await self.ctx.take_waited(ref_key, claim, RECIPIENT_MEMORY_MS)
            if taken is None:
                raise errors.InvalidInput("the ref was taken and dropped meanwhile: send it again", field="ref")
        tag, message_id, account = text(taken).split("|")
        shard = self.ctx.shard(tag)
        # Made when its id was (the first report of it): a listing by time (since, until)
        # reads the id, so the two agree, a retried report's included.
        now = ids.message_id_ms(message_id) or self.ctx.now()
        word = keyword(message) or ""
        entry = msgspec.json.encode({"reason": f"replied {message.strip().upper()}", "created_ms": now}).decode()
        reply = await self.ctx.call(
            "inbound",
            [
                shard.messages,
                shard.counters,
                shard.events,
                shard.sent(account),
                shard.suppressed(account),
                shard.suppression(account),
                shard.threads(account),
                shard.thread_newest(account),
            ],
            [
                message_id,
                account,
                device.device_id,
                sender,
                text(phone_number) if phone_number is not None else "",
                message,
                count_segments(message).count,
                now,
                received_at_ms,
                "" if sim_slot is None else sim_slot,
                word,
                entry,
            ],
        )
        return Received(message_id, text(reply[0]) == "new", account, text(reply[1]))

    async def owner(self, device: DeviceRef, sender: str) -> tuple[str, str]:
        """(shard tag, account id) the SMS from ``sender`` to ``device`` belongs to."""
        if not keys.is_pool_shard(device.shard):
            return device.shard, device.shard.removeprefix("a:")
        tags = await self.pool_shards.in_use()
        field = f"{device.device_id}:{sender}"
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.hget(self.ctx.shard(tag).pool_recipients, field)
            found = await pipe.execute()
        horizon = self.ctx.now() - RECIPIENT_MEMORY_MS
        latest: tuple[int, str, str] | None = None
        for tag, value in zip(tags, found, strict=True):
            if value is None:
                continue
            account, _, at = text(value).partition("|")
            if int(at) >= horizon and (latest is None or int(at) > latest[0]):
                latest = (int(at), tag, account)
        if latest is not None:
            return latest[1], latest[2]
        operator = await self.ctx.redis.get(keys.OPERATOR)
        if operator is not None:
            return keys.account_shard(text(operator)), text(operator)
        return device.shard, ""
