"""Webhook endpoints of an account: register, list, delete, rotate the secret, enable,
read the delivery log, redeliver an event, send a test event.

An endpoint is a hash in its account's shard (see :mod:`broker.keys`); its fields are
written one by one, so the dispatcher marking a failure and a person rotating the
secret never overwrite each other. The signing secret is kept as is: signing needs it.
It is shown when made (create, rotate) and never listed.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from broker import errors, ids, keys
from broker.context import Context
from broker.records import Account
from broker.redis_client import RedisPipeline, fields, text
from broker.streams import WEBHOOKS_GROUP, ensure_group
from broker.webhooks import events
from broker.webhooks.addresses import check_resolves, check_url
from broker.webhooks.courier import Courier, Outcome

MAX_ENDPOINTS = 10
LOG_SIZE = 200
PREVIOUS_SECRET_MS = 86_400_000  # a rotated-out secret still signs for a day


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account: str
    url: str
    events: list[str]
    lanes: int
    created_ms: int
    secret: str
    previous_secret: str = ""
    previous_until_ms: int = 0
    queued: int = 0
    dropped: int = 0
    failing_since_ms: int = 0
    last_success_ms: int = 0
    disabled_ms: int = 0
    disabled_reason: str = ""

    @property
    def enabled(self) -> bool:
        return not self.disabled_ms

    def secrets(self, now_ms: int) -> list[str]:
        """The secrets each delivery is signed with: the current one, and for a day after a
        rotation the previous one too."""
        if self.previous_secret and now_ms < self.previous_until_ms:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def lane_of(self, ordering_key: str) -> int:
        """The lane a message's events share (or a device's: ``QueuedEvent.ordering_key``),
        so they are delivered in order."""
        return zlib.crc32(ordering_key.encode()) % self.lanes

    def wants(self, event_type: str, at_ms: int) -> bool:
        return self.enabled and event_type in self.events and at_ms >= self.created_ms


_INT_FIELDS = (
    "lanes",
    "created_ms",
    "previous_until_ms",
    "queued",
    "dropped",
    "failing_since_ms",
    "last_success_ms",
    "disabled_ms",
)


def endpoint_from_hash(account: str, endpoint_id: str, raw: dict[Any, Any]) -> Endpoint | None:
    if not raw:
        return None
    f = fields(raw)
    if "url" not in f:
        return None  # a counter written after the endpoint was deleted
    values: dict[str, Any] = {name: int(f.get(name) or 0) for name in _INT_FIELDS}
    return Endpoint(
        id=endpoint_id,
        account=account,
        url=f["url"],
        events=f.get("events", "").split(","),
        secret=f.get("secret", ""),
        previous_secret=f.get("previous_secret", ""),
        disabled_reason=f.get("disabled_reason", ""),
        **values,
    )


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an endpoint's delivery log."""

    event: events.QueuedEvent
    attempt: int
    outcome: str  # delivered, failed (retried at next_retry_ms), gave_up, test, disabled
    status_code: int | None
    latency_ms: int
    error: str
    at_ms: int
    next_retry_ms: int | None = None


def check_event_types(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise errors.InvalidInput("events must be a non-empty list of event types", field="events")
    unknown = [v for v in value if v not in events.EVENT_TYPES]
    if unknown:
        raise errors.InvalidInput(
            f"unknown event type {unknown[0]!r}; known: {', '.join(events.EVENT_TYPES)}", field="events"
        )
    return [t for t in events.EVENT_TYPES if t in value]


def new_secret() -> str:
    return "whsec_" + ids.secret_token()


class WebhookEndpoints:
    """The account side of webhooks, on the broker's Redis."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.redis = ctx.redis
        self.settings = ctx.settings

    async def create(self, account: Account, url: object, event_types: object | None = None) -> Endpoint:
        allow = self.settings.webhook_allow_loopback_http
        url = check_url(url, allow)
        types = check_event_types(list(events.EVENT_TYPES) if event_types is None else event_types)
        await check_resolves(url, allow)
        shard = self.ctx.account_shard(account.id)
        if await self.redis.scard(shard.webhooks()) >= MAX_ENDPOINTS:
            raise errors.WebhookLimitReached(f"an account may have at most {MAX_ENDPOINTS} webhook endpoints")
        now = self.ctx.now()
        endpoint = Endpoint(
            id=ids.short_id(),
            account=account.id,
            url=url,
            events=types,
            lanes=self.settings.webhook_lanes,
            created_ms=now,
            secret=new_secret(),
        )
        # The dispatcher's consumer group must exist on every stream these events can be
        # in before the first of them, so the snapshotter cannot release it unseen.
        # (An API-only account's messages live in its home shard of the platform pool.)
        for tag in dict.fromkeys((shard.tag, account.shard, keys.pool_shard())):
            await ensure_group(self.redis, self.ctx.shard(tag).events, WEBHOOKS_GROUP)
        await self.redis.hset(
            shard.webhook(endpoint.id),
            mapping={
                "url": url,
                "events": ",".join(types),
                "lanes": endpoint.lanes,
                "created_ms": now,
                "secret": endpoint.secret,
            },
        )
        await self.redis.sadd(shard.webhooks(), endpoint.id)
        await self.redis.sadd(keys.WEBHOOK_ENDPOINTS, f"{account.id}|{endpoint.id}")
        return endpoint

    async def list_for(self, account: Account) -> list[Endpoint]:
        shard = self.ctx.account_shard(account.id)
        endpoint_ids = sorted(text(e) for e in await self.redis.smembers(shard.webhooks()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint_id in endpoint_ids:
                pipe.hgetall(shard.webhook(endpoint_id))
            raws = await pipe.execute()
        found = [endpoint_from_hash(account.id, e, raw) for e, raw in zip(endpoint_ids, raws, strict=True)]
        return sorted((e for e in found if e is not None), key=lambda e: (e.created_ms, e.id))

    async def get(self, account: Account, endpoint_id: str) -> Endpoint:
        if not ids.is_plain_id(endpoint_id):
            raise errors.WebhookNotFound()
        found = endpoint_from_hash(
            account.id, endpoint_id, await self.redis.hgetall(self.ctx.account_shard(account.id).webhook(endpoint_id))
        )
        if found is None:
            raise errors.WebhookNotFound()
        return found

    async def delete(self, account: Account, endpoint_id: str) -> None:
        endpoint = await self.get(account, endpoint_id)
        shard = self.ctx.account_shard(account.id)
        await self.redis.srem(keys.WEBHOOK_ENDPOINTS, f"{account.id}|{endpoint.id}")
        await self.redis.srem(shard.webhooks(), endpoint.id)
        await self.redis.delete(
            shard.webhook(endpoint.id),
            shard.webhook_retry(endpoint.id),
            shard.webhook_log(endpoint.id),
            *(shard.webhook_lane(endpoint.id, lane) for lane in range(endpoint.lanes)),
        )

    async def rotate_secret(self, account: Account, endpoint_id: str) -> Endpoint:
        endpoint = await self.get(account, endpoint_id)
        now = self.ctx.now()
        secret = new_secret()
        await self.redis.hset(
            self.ctx.account_shard(account.id).webhook(endpoint.id),
            mapping={
                "secret": secret,
                "previous_secret": endpoint.secret,
                "previous_until_ms": now + PREVIOUS_SECRET_MS,
            },
        )
        return msgspec.structs.replace(
            endpoint, secret=secret, previous_secret=endpoint.secret, previous_until_ms=now + PREVIOUS_SECRET_MS
        )

    async def enable(self, account: Account, endpoint_id: str) -> Endpoint:
        """Take a disabled endpoint back: new events are delivered to it again."""
        endpoint = await self.get(account, endpoint_id)
        await self.redis.hset(
            self.ctx.account_shard(account.id).webhook(endpoint.id),
            mapping={"disabled_ms": 0, "disabled_reason": "", "failing_since_ms": 0},
        )
        return msgspec.structs.replace(endpoint, disabled_ms=0, disabled_reason="", failing_since_ms=0)

    async def deliveries(self, account: Account, endpoint_id: str) -> list[Attempt]:
        return await self._logged(await self.get(account, endpoint_id))

    async def _logged(self, endpoint: Endpoint) -> list[Attempt]:
        raw = await self.redis.lrange(
            self.ctx.account_shard(endpoint.account).webhook_log(endpoint.id), 0, LOG_SIZE - 1
        )
        return [msgspec.json.decode(r, type=Attempt) for r in raw]

    async def retry_state(self, account: Account, endpoint: Endpoint) -> dict[int, tuple[int, int]]:
        """Lane -> (attempts, next attempt ms) of each lane whose first event is failing."""
        raw = await self.redis.hgetall(self.ctx.account_shard(account.id).webhook_retry(endpoint.id))
        state = {}
        for lane, value in raw.items():
            attempts, _, next_ms = text(value).partition("|")
            state[int(lane)] = (int(attempts), int(next_ms))
        return state

    async def redeliver(self, account: Account, endpoint_id: str, event_id: str) -> events.QueuedEvent:
        """Queue an event from the delivery log again, with its id; it goes behind the
        events of its message already waiting."""
        endpoint = await self.get(account, endpoint_id)
        if not endpoint.enabled:
            raise errors.WebhookDisabled()
        logged = next(
            (
                a.event
                for a in await self._logged(endpoint)
                if a.event.id == event_id and a.event.type != events.TEST_EVENT
            ),
            None,
        )
        if logged is None:
            raise errors.WebhookEventNotFound()
        now = self.ctx.now()
        again: events.QueuedEvent = msgspec.structs.replace(logged, queued_ms=now, manual=True)
        shard = self.ctx.account_shard(account.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(
                shard.webhook_lane(endpoint.id, endpoint.lane_of(again.ordering_key)), msgspec.json.encode(again)
            )
            pipe.hincrby(shard.webhook(endpoint.id), "queued", 1)
            await pipe.execute()
        await self.redis.sadd(keys.WEBHOOK_WAKE, f"{account.id}|{endpoint.id}")
        return again

    async def send_test(self, account: Account, endpoint_id: str, courier: Courier) -> Attempt:
        """POST a ``webhook.test`` event now and log the answer (a disabled endpoint too:
        this is how one checks a receiver before enabling it again)."""
        endpoint = await self.get(account, endpoint_id)
        now = self.ctx.now()
        event = events.QueuedEvent("evt_test_" + ids.short_id(), events.TEST_EVENT, endpoint.id, "", now, "", now)
        outcome: Outcome = await courier.post(endpoint.url, endpoint.secrets(now), event)
        attempt = Attempt(
            event=event,
            attempt=1,
            outcome="test",
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
            at_ms=self.ctx.now(),
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            log_attempt(pipe, self.ctx.account_shard(account.id), endpoint.id, attempt)
            await pipe.execute()
        return attempt


def log_attempt(pipe: RedisPipeline, shard: keys.ShardKeys, endpoint_id: str, attempt: Attempt) -> None:
    """Queue into ``pipe``: the attempt goes first in the endpoint's log, which keeps
    the latest :data:`LOG_SIZE`."""
    pipe.lpush(shard.webhook_log(endpoint_id), msgspec.json.encode(attempt))
    pipe.ltrim(shard.webhook_log(endpoint_id), 0, LOG_SIZE - 1)
