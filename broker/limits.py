"""Limits: the GCRA rate limiter, an account's effective limits and today's quota use,
the operator's changes to them, and the requests for higher ones an account makes."""

from __future__ import annotations

import msgspec
from redis.exceptions import WatchError

from broker import errors, ids, keys
from broker.accounts import Accounts
from broker.api_keys import move_credentials_epoch
from broker.context import Context
from broker.records import LIMIT_FIELDS, Account, LimitChange, LimitRequest, Limits, RateDecision
from broker.redis_client import hash_mapping, text
from broker.validation import MAX_LIMIT, MAX_NOTE_CHARS, check_text, check_whole_number

MAX_REQUESTS_LISTED = 500
DECIDE_TRIES = 20
DAY_MS = 86_400_000


class AccountLimits:
    def __init__(self, ctx: Context, accounts: Accounts) -> None:
        self.ctx = ctx
        self.accounts = accounts

    async def rate_limit(
        self, limiter_key: str, *, rate: int, period_ms: int, burst: int, cost: int = 1
    ) -> RateDecision:
        """GCRA: ``rate`` requests per ``period_ms`` with bursts of ``burst``.

        Returns the decision when allowed; raises RateLimited carrying it when not.
        """
        if rate < 1 or burst < 1 or cost < 1 or period_ms < 1:
            raise errors.InvalidInput("rate, burst, cost and period must be positive")
        reply = await self.ctx.call("rate-limit", [limiter_key], [self.ctx.now(), period_ms / rate, burst, cost])
        decision = RateDecision(bool(int(reply[0])), burst, int(reply[1]), int(reply[2]), int(reply[3]))
        if not decision.allowed:
            raise errors.RateLimited(decision)
        return decision

    async def limit_client(self, name: str, client: str) -> RateDecision:
        """Spend one request of the ``name`` limiter (signup, login, register) of a client
        address: ``auth_per_minute`` with bursts of ``auth_burst``; RateLimited past it."""
        s = self.ctx.settings
        return await self.rate_limit(
            keys.client_rate(name, client), rate=s.auth_per_minute, period_ms=60_000, burst=s.auth_burst
        )

    def of(self, account: Account) -> Limits:
        """The account's limits: what the operator raised, else the server's defaults."""
        s = self.ctx.settings
        return Limits(
            sends_per_second=account.sends_per_second or s.sends_per_second,
            sends_burst=account.sends_burst or s.sends_burst,
            tasks_per_minute=account.tasks_per_minute or s.tasks_per_minute,
            tasks_burst=account.tasks_burst or s.tasks_burst,
            daily_quota=account.daily_quota,
        )

    async def quota_used(self, account: Account) -> int:
        """Messages the account queued today (UTC), as the enqueue script counts them."""
        day, used = await self.ctx.redis.hmget(
            self.ctx.shard(account.shard).quota, [f"{account.id}:day", f"{account.id}:used"]
        )
        today = self.ctx.now() // DAY_MS
        return int(used) if day is not None and int(day) == today and used is not None else 0

    async def set(self, account_id: str, change: LimitChange) -> Account:
        """Raise (or lower) an account's limits; fields left None keep their value."""
        values = limit_values(change)
        if not ids.is_plain_id(account_id):
            raise errors.AccountNotFound()
        account = await self.accounts.get(account_id)
        if values:
            redis = self.ctx.redis
            own = self.ctx.account_shard(account.id)
            await redis.hset(own.account(), mapping=hash_mapping(values))
            account = msgspec.structs.replace(account, **values)
            # A changed limiter starts afresh, so new limits apply at once: its state is a
            # time measured in the old rate's units.
            if values.keys() & {"sends_per_second", "sends_burst"}:
                await redis.delete(self.ctx.shard(account.shard).send_rate(account.id))
            if values.keys() & {"tasks_per_minute", "tasks_burst"}:
                for device_id in [text(d) for d in await redis.smembers(own.devices)]:
                    await redis.delete(own.poll_rate(device_id))
            await move_credentials_epoch(self.ctx, account)
        return account

    async def request(self, account: Account, requested: LimitChange, reason: str) -> LimitRequest:
        """Ask the operator for higher limits; one request waits at a time per account."""
        if not limit_values(requested):
            raise errors.InvalidInput("ask for at least one limit", field="requested")
        reason = check_text(reason.strip() if isinstance(reason, str) else reason, "reason", max_chars=MAX_NOTE_CHARS)
        request = LimitRequest(
            id=ids.short_id(),
            account_id=account.id,
            email=account.email,
            requested=requested,
            reason=reason,
            status="pending",
            created_ms=self.ctx.now(),
        )
        redis = self.ctx.redis
        own = self.ctx.account_shard(account.id)
        # The record goes first, so a pending id always names a stored request.
        await redis.hset(keys.LIMIT_REQUESTS, request.id, msgspec.json.encode(request))
        if not await redis.hsetnx(own.account(), "pending_request", request.id):
            await redis.hdel(keys.LIMIT_REQUESTS, request.id)
            raise errors.LimitRequestPending()
        await redis.zadd(own.limit_requests(), {request.id: request.created_ms})
        return request

    async def get_request(self, request_id: str) -> LimitRequest:
        raw = await self.ctx.redis.hget(keys.LIMIT_REQUESTS, request_id) if ids.is_plain_id(request_id) else None
        if raw is None:
            raise errors.LimitRequestNotFound()
        return msgspec.json.decode(raw, type=LimitRequest)

    async def list_requests(
        self, *, account_id: str | None = None, status: str | None = None, limit: int = MAX_REQUESTS_LISTED
    ) -> list[LimitRequest]:
        """Requests, newest first, optionally one account's (read through its own index,
        not the whole hash) or one status's."""
        redis = self.ctx.redis
        if account_id is not None:
            if not ids.is_plain_id(account_id):
                return []
            request_ids = await redis.zrevrange(self.ctx.account_shard(account_id).limit_requests(), 0, limit - 1)
            raws = await redis.hmget(keys.LIMIT_REQUESTS, [text(i) for i in request_ids]) if request_ids else []
        else:
            raws = list((await redis.hgetall(keys.LIMIT_REQUESTS)).values())
        found = [msgspec.json.decode(v, type=LimitRequest) for v in raws if v is not None]
        found = [
            r
            for r in found
            if (account_id is None or r.account_id == account_id) and (status is None or r.status == status)
        ]
        return sorted(found, key=lambda r: (r.created_ms, r.id), reverse=True)[:limit]

    async def decide_request(
        self, request_id: str, *, approve: bool, granted: LimitChange | None = None, note: str = ""
    ) -> LimitRequest:
        """The operator's answer. Approving grants what was asked (or ``granted``); a raised
        rate without a burst gets a burst scaled like the default one."""
        note = check_text(note, "note", max_chars=MAX_NOTE_CHARS)
        decided = await self._decide(request_id, approve, granted, note)
        if decided.granted is not None:
            await self.set(decided.account_id, decided.granted)
        account_key = self.ctx.account_shard(decided.account_id).account()
        if text(await self.ctx.redis.hget(account_key, "pending_request") or b"") == decided.id:
            await self.ctx.redis.hdel(account_key, "pending_request")
        return decided

    async def _decide(self, request_id: str, approve: bool, granted: LimitChange | None, note: str) -> LimitRequest:
        """Move a request from pending to decided, once: of two operators answering at
        the same moment, one wins and the other gets LimitRequestDecided (WATCH on the
        requests hash; a concurrent change there makes this try again)."""
        for _ in range(DECIDE_TRIES):
            async with self.ctx.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(keys.LIMIT_REQUESTS)
                raw = await pipe.hget(keys.LIMIT_REQUESTS, request_id) if ids.is_plain_id(request_id) else None
                if raw is None:
                    raise errors.LimitRequestNotFound()
                request = msgspec.json.decode(raw, type=LimitRequest)
                if request.status != "pending":
                    raise errors.LimitRequestDecided()
                grant: LimitChange | None = None
                if approve:
                    grant = self._scaled_bursts(
                        granted if granted is not None and limit_values(granted) else request.requested
                    )
                    limit_values(grant)
                decided = msgspec.structs.replace(
                    request,
                    status="approved" if approve else "rejected",
                    granted=grant,
                    note=note,
                    decided_ms=self.ctx.now(),
                )
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(keys.LIMIT_REQUESTS, request.id, msgspec.json.encode(decided))
                try:
                    await pipe.execute()
                except WatchError:
                    continue
                return decided
        raise errors.LimitRequestDecided("the request kept changing; try again")

    def _scaled_bursts(self, change: LimitChange) -> LimitChange:
        s = self.ctx.settings
        extra: dict[str, int] = {}
        if change.sends_per_second and not change.sends_burst:
            extra["sends_burst"] = min(
                MAX_LIMIT, max(s.sends_burst, -(-change.sends_per_second * s.sends_burst // s.sends_per_second))
            )
        if change.tasks_per_minute and not change.tasks_burst:
            extra["tasks_burst"] = min(
                MAX_LIMIT, max(s.tasks_burst, -(-change.tasks_per_minute * s.tasks_burst // s.tasks_per_minute))
            )
        return msgspec.structs.replace(change, **extra) if extra else change

    async def pending_request(self, account: Account) -> LimitRequest | None:
        pending = await self.ctx.redis.hget(self.ctx.account_shard(account.id).account(), "pending_request")
        if pending is None:
            return None
        try:
            return await self.get_request(text(pending))
        except errors.LimitRequestNotFound:
            return None


def limit_values(change: LimitChange) -> dict[str, int]:
    """The fields a change sets, each a whole number from 1 to MAX_LIMIT, or InvalidInput."""
    values = {}
    for field in LIMIT_FIELDS:
        value = getattr(change, field)
        if value is not None:
            values[field] = check_whole_number(value, field, low=1, high=MAX_LIMIT)
    return values
