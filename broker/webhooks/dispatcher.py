"""The webhook dispatcher: turns every status change into events for the endpoints that
want them, and delivers those, retrying, in order per message.

One dispatcher runs at a time across all workers: the holder of the ``{webhooks}``
lock. It has two halves.

Fan-out (every ``webhook_poll_ms``): read each shard's stream through the ``webhooks``
consumer group (first what an earlier holder read but did not acknowledge, then new
entries); for each entry, find the endpoints of the message's account that want its
event type; append the event to the endpoint lane its message hashes to, remember per
endpoint and shard the last entry appended (so an entry read again after a crash is not
queued twice), then acknowledge. Nothing here waits on a receiver.

Delivery: one task per lane with events waiting. It POSTs the lane's first event; on a
2xx the event leaves the lane; otherwise the attempt count and the time of the next try
(exponential backoff, each wait between half and all of its ceiling) are written to Redis and the lane waits, while
the other lanes go on. Because a message's events share a lane they arrive in order; a
restart or a new holder reads the waiting events and their retry times back from Redis
and carries on. An event still failing a day after it was queued is given up; an
endpoint that has not had one success for a day is disabled with the reason, its
waiting events dropped, and new events are not queued for it until it is enabled.
At most ``webhook_max_in_flight`` POSTs run at once, each limited to
``webhook_timeout_seconds``: a receiver that hangs holds only its own lanes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from broker import keys, streams
from broker.clock import duration_text, iso_utc
from broker.locks import Lease
from broker.redis_client import REDIS_AWAY, PassLog, RedisPipeline
from broker.redis_client import fields as _fields
from broker.redis_client import text as _text
from broker.webhooks import events
from broker.webhooks.courier import Courier
from broker.webhooks.endpoints import Attempt, Endpoint, endpoint_from_hash, log_attempt

if TYPE_CHECKING:
    from broker.broker import Broker

log = logging.getLogger("connecfy.webhooks")

CONSUMER = "dispatcher"  # one dispatcher at a time: a successor owns what its predecessor left
MAX_ROUNDS = 20
RESUME_EVERY = 100  # passes between looks for waiting lanes without a task (one that crashed)
MAX_WAIT_S = 5.0  # a lane waiting for its next try looks again at least this often
LANE_BATCH = 50  # events read from a lane at once
STOP_WAIT_S = 5.0  # how long stopping waits for the lanes' POSTs to end


def backoff_ms(attempts: int, first_ms: int, max_ms: int, rng: random.Random | None = None) -> int:
    """How long to wait after ``attempts`` failures: the ceiling doubles from ``first_ms``
    up to ``max_ms``, and the wait is drawn between half the ceiling and all of it, so
    receivers coming back are not hit by every sender at the same instant."""
    ceiling = min(max_ms, first_ms * 2 ** min(attempts - 1, 40))
    return int(ceiling * (0.5 + 0.5 * (rng or random).random()))


class FanOutReport(msgspec.Struct):
    entries: int = 0
    queued: int = 0
    dropped: int = 0


class WebhookDispatcher:
    def __init__(
        self,
        broker: Broker,
        courier: Courier | None = None,
        *,
        holder: str | None = None,
        read_count: int = 1_000,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.settings = s = broker.settings
        self.courier = courier or Courier(
            timeout_s=s.webhook_timeout_seconds,
            max_in_flight=s.webhook_max_in_flight,
            allow_loopback=s.webhook_allow_loopback_http,
            clock=broker.clock,
        )
        self.holder = holder or uuid.uuid4().hex
        self.read_count = read_count
        self.on_attempt = on_attempt
        self.lease_ms = max(10_000, 5 * s.webhook_poll_ms)
        self.lease = Lease(broker.locks, keys.WEBHOOKS_LOCK, self.holder, self.lease_ms)
        self.in_flight = asyncio.Semaphore(s.webhook_max_in_flight)
        self.lanes: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self.holding = False
        self._groups: set[str] = set()
        self._kicked: set[tuple[str, str, int]] = set()  # lanes appended to since their task last looked
        self.passes = 0
        self.pass_log = PassLog(log, "webhook deliveries")

    # The loop ---------------------------------------------------------------------------

    async def run_forever(self) -> None:
        try:
            while True:
                busy = False
                try:
                    report = await self.run_once()
                    busy = report is not None and report.entries >= self.read_count
                    self.pass_log.ok()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed pass is retried on the next tick
                    self.pass_log.failed(exc)
                if not busy:
                    await asyncio.sleep(self.settings.webhook_poll_ms / 1000)
        finally:
            await self.stop()

    async def run_once(self) -> FanOutReport | None:
        """One fan-out pass if this process holds (or takes) the lock, else None."""
        held = await self.lease.hold()
        if not held:
            if self.holding:
                log.warning("lost the webhooks lock; another process delivers now")
                await self.stop_lanes()
            self.holding = False
            return None
        if not self.holding or self.pass_log.away or self.passes % RESUME_EVERY == 0:
            self.holding = True
            await self.resume()
        report = await self.fan_out()
        await self.wake()
        self.passes += 1
        return report

    async def stop_lanes(self) -> None:
        tasks = list(self.lanes.values())
        self.lanes.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)

    async def stop(self) -> None:
        self.holding = False
        await self.stop_lanes()
        await self.courier.close()

    async def resume(self) -> None:
        """Start a lane task for every lane with events waiting (after a restart, or when
        this process takes over from another)."""
        members = sorted(_text(m) for m in await self.redis.smembers(keys.WEBHOOK_ENDPOINTS))
        for member in members:
            account, _, endpoint_id = member.partition("|")
            await self._start_waiting_lanes(account, endpoint_id)

    async def wake(self) -> None:
        """Lanes given events by hand (manual redelivery) since the last pass."""
        for member in await self.redis.spop(keys.WEBHOOK_WAKE, 100) or []:
            account, _, endpoint_id = _text(member).partition("|")
            await self._start_waiting_lanes(account, endpoint_id)

    async def _start_waiting_lanes(self, account: str, endpoint_id: str) -> None:
        shard = self.broker.ctx.account_shard(account)
        lanes = int(await self.redis.hget(shard.webhook(endpoint_id), "lanes") or 0)
        if not lanes:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for lane in range(lanes):
                pipe.llen(shard.webhook_lane(endpoint_id, lane))
            lengths = await pipe.execute()
        for lane, length in enumerate(lengths):
            if length:
                self._ensure_lane(account, endpoint_id, lane)

    def _ensure_lane(self, account: str, endpoint_id: str, lane: int) -> None:
        key = (account, endpoint_id, lane)
        self._kicked.add(key)
        task = self.lanes.get(key)
        if task is None or task.done():
            self.lanes[key] = asyncio.create_task(self._run_lane(account, endpoint_id, lane))

    # Fan-out ----------------------------------------------------------------------------

    async def fan_out(self) -> FanOutReport:
        report = FanOutReport()
        shards = sorted([_text(tag) async for tag in self.redis.sscan_iter(keys.SHARDS)])
        for shard in shards:
            if shard not in self._groups:
                await streams.ensure_group(self.redis, self.broker.shard(shard).events, streams.WEBHOOKS_GROUP)
                self._groups.add(shard)
        for pending in (True, False):
            todo = shards
            for _ in range(MAX_ROUNDS):
                replies = await streams.read(
                    self.redis,
                    streams.WEBHOOKS_GROUP,
                    CONSUMER,
                    [self.broker.shard(shard).events for shard in todo],
                    pending=pending,
                    count=self.read_count,
                )
                full = []
                for shard, entries in zip(todo, replies, strict=True):
                    if entries is None:
                        self._groups.discard(shard)  # Redis lost the group (flushed): made again next pass
                        continue
                    if entries:
                        await self._fan_out_shard(shard, entries, report)
                        if len(entries) == self.read_count:
                            full.append(shard)
                todo = full
                if not todo:
                    break
        return report

    async def _fan_out_shard(self, shard: str, entries: list[Any], report: FanOutReport) -> None:
        stream = self.broker.shard(shard).events
        by_account: dict[str, list[tuple[str, dict[str, str]]]] = defaultdict(list)
        for entry_id, raw in entries:
            entry = _fields(raw) if raw else {}
            if entry.get("account"):
                by_account[entry["account"]].append((_text(entry_id), entry))
        endpoints = await self._endpoints(sorted(by_account), shard)
        now = self.broker.clock()
        touched: set[tuple[str, str, int]] = set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for account, account_entries in by_account.items():
                for endpoint, mark in endpoints.get(account, []):
                    touched |= self._queue(pipe, shard, endpoint, mark, account_entries, now, report)
            await pipe.execute()
        await self.redis.xack(stream, streams.WEBHOOKS_GROUP, *[_text(e) for e, _ in entries])
        await streams.release(self.redis, stream)
        report.entries += len(entries)
        for account, endpoint_id, lane in touched:
            self._ensure_lane(account, endpoint_id, lane)

    def _queue(
        self,
        pipe: RedisPipeline,
        shard: str,
        endpoint: Endpoint,
        mark: str,
        entries: list[tuple[str, dict[str, str]]],
        now: int,
        report: FanOutReport,
    ) -> set[tuple[str, str, int]]:
        """Queue into ``pipe`` the events ``endpoint`` wants among its account's ``entries``
        after ``mark`` (the last entry of ``shard`` already queued for it), and the new
        mark; the lanes appended to."""
        after = streams.entry_id(mark) if mark else (0, -1)
        entries = [(entry_id, entry) for entry_id, entry in entries if streams.entry_id(entry_id) > after]
        if not entries:
            return set()
        keyring = self.broker.ctx.account_shard(endpoint.account)
        room = self.settings.webhook_backlog_max - endpoint.queued
        touched: set[tuple[str, str, int]] = set()
        queued = dropped = 0
        for entry_id, entry in entries:
            if not endpoint.wants(f"message.{entry['status']}", int(entry["at"])):
                continue
            if queued >= room:
                dropped += 1
                continue
            event = events.event_from_stream(shard, entry_id, entry, now)
            lane = endpoint.lane_of(event.message_id)
            pipe.rpush(keyring.webhook_lane(endpoint.id, lane), msgspec.json.encode(event))
            touched.add((endpoint.account, endpoint.id, lane))
            queued += 1
        if queued:
            pipe.hincrby(keyring.webhook(endpoint.id), "queued", queued)
        if dropped:
            pipe.hincrby(keyring.webhook(endpoint.id), "dropped", dropped)
            log.warning(
                "webhook endpoint %s has %d events waiting: %d new ones dropped",
                endpoint.id,
                endpoint.queued + queued,
                dropped,
            )
        pipe.hset(keyring.webhook(endpoint.id), f"mark:{shard}", entries[-1][0])
        report.queued += queued
        report.dropped += dropped
        return touched

    async def _endpoints(self, accounts: list[str], shard: str) -> dict[str, list[tuple[Endpoint, str]]]:
        """Each account's endpoints, with the last entry of ``shard`` queued for each."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for account in accounts:
                pipe.smembers(self.broker.ctx.account_shard(account).webhooks())
            memberships = await pipe.execute()
        wanted = [
            (account, _text(e)) for account, members in zip(accounts, memberships, strict=True) for e in sorted(members)
        ]
        if not wanted:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for account, endpoint_id in wanted:
                pipe.hgetall(self.broker.ctx.account_shard(account).webhook(endpoint_id))
            raws = await pipe.execute()
        found: dict[str, list[tuple[Endpoint, str]]] = defaultdict(list)
        for (account, endpoint_id), raw in zip(wanted, raws, strict=True):
            endpoint = endpoint_from_hash(account, endpoint_id, raw)
            if endpoint is not None:
                found[account].append((endpoint, _text(raw.get(f"mark:{shard}".encode(), b""))))
        return found

    # Delivery ---------------------------------------------------------------------------

    async def _run_lane(self, account: str, endpoint_id: str, lane: int) -> None:
        key = (account, endpoint_id, lane)
        try:
            while True:
                _raise_if_cancelling()
                self._kicked.discard(key)
                if not await self._deliver_some(account, endpoint_id, lane) and key not in self._kicked:
                    break  # empty, and nothing appended since it was found empty
        except asyncio.CancelledError:
            raise
        except REDIS_AWAY:
            pass  # the fan-out's log says so once; the lane is started again when Redis is back
        except Exception:  # noqa: BLE001 - the lane is started again by the next pass that touches it
            log.exception("webhook lane %s/%s/%d failed", account, endpoint_id, lane)
            await asyncio.sleep(1)
        finally:
            if self.lanes.get(key) is asyncio.current_task():
                del self.lanes[key]

    async def _deliver_some(self, account: str, endpoint_id: str, lane: int) -> bool:
        """Deliver the lane's first events in order, up to :data:`LANE_BATCH` of them, until
        one fails (or wait for the first one's next try); False when the lane is empty or
        its endpoint gone or disabled. One read for the batch; one transaction per event
        (it leaves the lane and its attempt is logged together)."""
        shard = self.broker.ctx.account_shard(account)
        lane_key = shard.webhook_lane(endpoint_id, lane)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(lane_key, 0, LANE_BATCH - 1)
            pipe.hgetall(shard.webhook(endpoint_id))
            pipe.hget(shard.webhook_retry(endpoint_id), str(lane))
            firsts, raw, retry = await pipe.execute()
        if not firsts:
            return False
        endpoint = endpoint_from_hash(account, endpoint_id, raw)
        if endpoint is None or not endpoint.enabled:
            await self.redis.delete(lane_key)  # deleted, or disabled while this lane waited
            return False
        attempts, _, next_ms = _text(retry or "0|0").partition("|")
        wait_ms = int(next_ms) - self.broker.clock()
        if wait_ms > 0:
            _raise_if_cancelling()
            await asyncio.sleep(min(wait_ms / 1000, MAX_WAIT_S))
            return True
        tried = int(attempts)
        for first in firsts:
            _raise_if_cancelling()  # before each POST: the last event's transaction may have lost it
            event = msgspec.json.decode(first, type=events.QueuedEvent)
            async with self.in_flight:
                outcome = await self.courier.post(endpoint.url, endpoint.secrets(self.broker.clock()), event)
            _raise_if_cancelling()
            now = self.broker.clock()
            attempt = Attempt(
                event=event,
                attempt=tried + 1,
                outcome="delivered" if outcome.ok else "failed",
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                at_ms=now,
            )
            if not outcome.ok:
                return await self._failed(endpoint, lane, attempt)
            async with self.redis.pipeline(transaction=True) as pipe:
                self._leave_lane(pipe, shard, endpoint_id, lane, attempt)
                pipe.hset(shard.webhook(endpoint_id), mapping={"failing_since_ms": 0, "last_success_ms": now})
                await pipe.execute()
            self._observe(attempt)
            tried = 0
            endpoint = msgspec.structs.replace(endpoint, failing_since_ms=0)
        return True

    async def _failed(self, endpoint: Endpoint, lane: int, attempt: Attempt) -> bool:
        """A failed POST of the lane's first event: try it again later, give it up after a
        day, or disable the endpoint after a day without a success."""
        shard = self.broker.ctx.account_shard(endpoint.account)
        now = attempt.at_ms
        window_ms = self.settings.webhook_retry_seconds * 1000
        failing_since = endpoint.failing_since_ms or now
        if now - failing_since >= window_ms:
            await self._disable(endpoint, attempt, failing_since)
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            if now - attempt.event.queued_ms >= window_ms:
                attempt = msgspec.structs.replace(attempt, outcome="gave_up")
                self._leave_lane(pipe, shard, endpoint.id, lane, attempt)
            else:
                wait = backoff_ms(
                    attempt.attempt, self.settings.webhook_backoff_first_ms, self.settings.webhook_backoff_max_ms
                )
                attempt = msgspec.structs.replace(attempt, next_retry_ms=now + wait)
                pipe.hset(shard.webhook_retry(endpoint.id), str(lane), f"{attempt.attempt}|{now + wait}")
                log_attempt(pipe, shard, endpoint.id, attempt)
            if not endpoint.failing_since_ms:
                pipe.hset(shard.webhook(endpoint.id), "failing_since_ms", now)
            await pipe.execute()
        self._observe(attempt)
        return True

    @staticmethod
    def _leave_lane(pipe: RedisPipeline, shard: keys.ShardKeys, endpoint_id: str, lane: int, attempt: Attempt) -> None:
        """Queue into ``pipe``: the lane's first event leaves it, with its attempt logged."""
        pipe.lpop(shard.webhook_lane(endpoint_id, lane))
        pipe.hdel(shard.webhook_retry(endpoint_id), str(lane))
        pipe.hincrby(shard.webhook(endpoint_id), "queued", -1)
        log_attempt(pipe, shard, endpoint_id, attempt)

    def _observe(self, attempt: Attempt) -> None:
        if self.on_attempt is not None:
            self.on_attempt(attempt)

    async def _disable(self, endpoint: Endpoint, attempt: Attempt, failing_since: int) -> None:
        shard = self.broker.ctx.account_shard(endpoint.account)
        reason = (
            f"no delivery succeeded for {duration_text(self.settings.webhook_retry_seconds)} "
            f"(failing since {iso_utc(failing_since)}); last error: {attempt.error or attempt.status_code}"
        )
        attempt = msgspec.structs.replace(attempt, outcome="disabled")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                shard.webhook(endpoint.id),
                mapping={"disabled_ms": attempt.at_ms, "disabled_reason": reason, "queued": 0},
            )
            pipe.delete(
                shard.webhook_retry(endpoint.id),
                *(shard.webhook_lane(endpoint.id, lane) for lane in range(endpoint.lanes)),
            )
            log_attempt(pipe, shard, endpoint.id, attempt)
            await pipe.execute()
        self._observe(attempt)
        log.warning("webhook endpoint %s of account %s disabled: %s", endpoint.id, endpoint.account, reason)


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that an await swallowed, before the lane waits or POSTs
    again. A cancel arriving while aiohttp resolves a name can come back as a failed
    request instead; one arriving as a Redis reply does can be lost altogether (Python
    3.11's ``asyncio.wait_for``, which redis-py puts around a command's socket I/O,
    returns the reply and drops the cancel): up to one cancel in three reaching a
    pipeline's ``execute`` was lost so, on one Redis and on a Redis Cluster alike.
    Either way the lane would go on waiting for its next try, or deliver its next event,
    after :meth:`WebhookDispatcher.stop_lanes` gave up on it: a lane no one holds any
    more, beside the one the new lock holder runs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
