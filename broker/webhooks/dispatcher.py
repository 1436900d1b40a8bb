"""The webhook dispatcher: turns every status change, and every change of a device's
presence, into events for the endpoints that want them, and delivers those, retrying, in
order per message (and per device).

Each background process dispatches for the shards it holds (:mod:`broker.leases`). Which
shard owns which work: the fan-out of a shard's stream belongs to the holder of that
shard (a pool shard's stream carries the events of many accounts), and the delivery of
an endpoint's lanes, which live in its account's shard (``{a:<id>}:webhook:...``), to
the holder of that account shard. The two may be different processes: a fan-out that
appends to lanes of an account shard held elsewhere adds ``<account>|<endpoint>`` to
``{webhook-wake}``, which the holder's dispatcher reads every pass.

Fan-out (every ``webhook_poll_ms``): read each held shard's stream through the
``webhooks`` consumer group (first what an earlier holder read but did not acknowledge,
then new entries); for each entry, find the endpoints of its account that want its event
type; append the event to the endpoint lane its message (or device) hashes to
(``webhook-queue-2.lua``, which keeps per lane and source shard the last entry appended,
so an entry read again, after a crash or by a holder that paused past its lease, is not
queued twice), then acknowledge. Nothing here waits on a receiver.

Delivery: one task per lane with events waiting, in the process holding the lane's
account shard, with the shard's fencing token of the time it started. It POSTs the
lane's first event; on a 2xx the event leaves the lane; otherwise the attempt count and
the time of the next try (exponential backoff, each wait between half and all of its
ceiling) are written to Redis and the lane waits, while the other lanes go on. Each of
those writes is one script (``webhook-lane-5.lua``, ``webhook-disable-4.lua``) that
checks the token: a lane task whose process lost the shard is refused, and stops. Because
a message's events share a lane they arrive in order; a restart or a new holder reads
the waiting events and their retry times back from Redis and carries on. An event still
failing a day after it was queued is given up; an endpoint that has not had one success
for a day is disabled with the reason, its waiting events dropped, and new events are
not queued for it until it is enabled. At most ``webhook_max_in_flight`` POSTs run at
once, each limited to ``webhook_timeout_seconds``: a receiver that hangs holds only its
own lanes.
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
from broker.leases import ShardLeases, call_each
from broker.redis_client import REDIS_AWAY, PassLog
from broker.redis_client import fields as _fields
from broker.redis_client import text as _text
from broker.webhooks import events
from broker.webhooks.courier import Courier
from broker.webhooks.endpoints import LOG_SIZE, Attempt, Endpoint, endpoint_from_hash

if TYPE_CHECKING:
    from broker.broker import Broker

log = logging.getLogger("connecfy.webhooks")

CONSUMER = "dispatcher"  # one per shard at a time: a successor owns what its predecessor left
MAX_ROUNDS = 20
RESUME_EVERY = 100  # passes between looks for waiting lanes without a task (one that crashed)
MAX_WAIT_S = 5.0  # a lane waiting for its next try looks again at least this often
LANE_BATCH = 50  # events read from a lane at once
STOP_WAIT_S = 5.0  # how long stopping waits for the lanes' POSTs to end

LaneKey = tuple[str, str, int]  # account, endpoint id, lane


class LaneLost(Exception):
    """A lane's write was refused: its account shard is another process's now."""


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
        leases: ShardLeases | None = None,
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
        self.read_count = read_count
        self.on_attempt = on_attempt
        # The jobs of a background process share its leases, renewed by a task of their
        # own; a dispatcher made alone has its own, and renews them at each pass.
        self._own_leases = leases is None
        self.leases = leases or ShardLeases(broker.ctx, holder=holder or uuid.uuid4().hex)
        self.holder = self.leases.holder
        self.in_flight = asyncio.Semaphore(s.webhook_max_in_flight)
        self.lanes: dict[LaneKey, asyncio.Task[None]] = {}
        self._lane_tokens: dict[LaneKey, int] = {}  # the fencing token each lane task writes with
        self._held: dict[str, int] = {}  # shard -> token, as of the last pass
        self._groups: set[str] = set()
        self._kicked: set[LaneKey] = set()  # lanes appended to since their task last looked
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
        """One fan-out pass over the shards this process holds; None when it holds none."""
        if self._own_leases:
            await self.leases.beat()
        held = self.leases.tokens()
        taken = await self.follow(held)
        if not held:
            return None
        if self.pass_log.away or self.passes % RESUME_EVERY == 0:
            await self.resume()
        elif taken:
            await self.resume(taken)
        report = await self.fan_out(sorted(held))
        await self.wake()
        self.passes += 1
        return report

    async def follow(self, held: dict[str, int]) -> set[str]:
        """Keep the lane tasks to the account shards ``held`` now: stop those of shards
        lost (or held again with a new token); the accounts whose shards are newly held."""
        lost = {shard for shard, token in self._held.items() if held.get(shard) != token}
        taken = {shard for shard, token in held.items() if self._held.get(shard) != token}
        self._held = dict(held)
        if lost:
            await self.stop_lanes({key for key in self.lanes if keys.account_shard(key[0]) in lost})
        return {shard[2:] for shard in taken if shard.startswith("a:")}

    async def stop_lanes(self, which: set[LaneKey] | None = None) -> None:
        """Cancel the lane tasks (``which`` of them, or all) and wait for them a moment."""
        chosen = list(self.lanes) if which is None else [k for k in which if k in self.lanes]
        tasks = [self.lanes.pop(key) for key in chosen]
        for key in chosen:
            self._lane_tokens.pop(key, None)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)

    async def stop(self) -> None:
        self._held = {}
        await self.stop_lanes()
        await self.courier.close()

    async def resume(self, accounts: set[str] | None = None) -> None:
        """Start a lane task for every lane with events waiting in the account shards held
        (after a restart, or when this process takes a shard over), or only in those of
        ``accounts``."""
        members = sorted(_text(m) for m in await self.redis.smembers(keys.WEBHOOK_ENDPOINTS))
        for member in members:
            account, _, endpoint_id = member.partition("|")
            if (accounts is None or account in accounts) and self._token_of(account) is not None:
                await self._start_waiting_lanes(account, endpoint_id)

    async def wake(self) -> None:
        """Lanes of the account shards held here that were given events by another
        process (its fan-out) or by hand (a manual redelivery) since the last pass."""
        members = [_text(m) for m in await self.redis.smembers(keys.WEBHOOK_WAKE)]
        mine = [m for m in members if self._token_of(m.partition("|")[0]) is not None]
        if not mine:
            return
        await self.redis.srem(keys.WEBHOOK_WAKE, *mine)
        for member in mine:
            account, _, endpoint_id = member.partition("|")
            await self._start_waiting_lanes(account, endpoint_id)

    def _token_of(self, account: str) -> int | None:
        """The fencing token of ``account``'s shard while this process holds it."""
        return self.leases.token(keys.account_shard(account))

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

    def _ensure_lane(self, account: str, endpoint_id: str, lane: int) -> bool:
        """Have a task deliver the lane, if this process holds its account shard; whether
        it does."""
        token = self._token_of(account)
        if token is None:
            return False
        key = (account, endpoint_id, lane)
        self._kicked.add(key)
        task = self.lanes.get(key)
        if task is not None and not task.done() and self._lane_tokens.get(key) == token:
            return True
        if task is not None and not task.done():
            task.cancel()  # a task of an earlier hold of the shard: its writes are refused anyway
        self._lane_tokens[key] = token
        self.lanes[key] = asyncio.create_task(self._run_lane(account, endpoint_id, lane, token))
        return True

    # Fan-out ----------------------------------------------------------------------------

    async def fan_out(self, shards: list[str] | None = None) -> FanOutReport:
        """Queue the new entries of ``shards``' streams (the shards held now when None)."""
        report = FanOutReport()
        shards = sorted(self.leases.tokens()) if shards is None else shards
        for shard in shards:
            if shard not in self._groups:
                await streams.ensure_group(self.redis, self.broker.shard(shard).events, streams.WEBHOOKS_GROUP)
                self._groups.add(shard)
        for pending in (True, False):
            todo = shards
            for _ in range(MAX_ROUNDS):
                if not todo:
                    break
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
        return report

    async def _fan_out_shard(self, shard: str, entries: list[Any], report: FanOutReport) -> None:
        stream = self.broker.shard(shard).events
        by_account: dict[str, list[tuple[str, dict[str, str]]]] = defaultdict(list)
        for entry_id, raw in entries:
            entry = _fields(raw) if raw else {}
            if entry.get("account"):
                by_account[entry["account"]].append((_text(entry_id), entry))
        endpoints = await self._endpoints(sorted(by_account))
        names = await self._device_names(
            shard, [e for account in endpoints for _, e in by_account[account] if "event" in e]
        )
        now = self.broker.clock()
        calls: list[tuple[Endpoint, int, list[str]]] = []
        for account, account_entries in by_account.items():
            for endpoint in endpoints.get(account, []):
                calls += self._queue(shard, endpoint, account_entries, names, now)
        touched: set[LaneKey] = set()
        replies = await call_each(
            self.broker.ctx,
            "webhook-queue",
            [
                (
                    [
                        self.broker.ctx.account_shard(endpoint.account).webhook(endpoint.id),
                        self.broker.ctx.account_shard(endpoint.account).webhook_lane(endpoint.id, lane),
                    ],
                    args,
                )
                for endpoint, lane, args in calls
            ],
        )
        dropped_by: dict[str, int] = defaultdict(int)
        for (endpoint, lane, _), (queued, dropped) in zip(calls, replies, strict=True):
            report.queued += int(queued)
            report.dropped += int(dropped)
            dropped_by[endpoint.id] += int(dropped)
            if int(queued):
                touched.add((endpoint.account, endpoint.id, lane))
        for endpoint_id, dropped in dropped_by.items():
            if dropped:
                log.warning(
                    "webhook endpoint %s has %d events waiting or more: %d new ones dropped",
                    endpoint_id,
                    self.settings.webhook_backlog_max,
                    dropped,
                )
        await self.redis.xack(stream, streams.WEBHOOKS_GROUP, *[_text(e) for e, _ in entries])
        await streams.release(self.redis, stream)
        report.entries += len(entries)
        elsewhere = set()
        for account, endpoint_id, lane in touched:
            if not self._ensure_lane(account, endpoint_id, lane):
                elsewhere.add(f"{account}|{endpoint_id}")
        if elsewhere:
            await self.redis.sadd(keys.WEBHOOK_WAKE, *sorted(elsewhere))

    def _queue(
        self,
        shard: str,
        endpoint: Endpoint,
        entries: list[tuple[str, dict[str, str]]],
        names: dict[str, str],
        now: int,
    ) -> list[tuple[Endpoint, int, list[str]]]:
        """The ``webhook-queue`` calls that append the events ``endpoint`` wants among its
        account's ``entries`` of ``shard``'s stream: (endpoint, lane, script arguments),
        one per lane; the script skips what the lane has queued from ``shard`` already.
        A device's event carries its name from ``names``; a device not there was removed
        meanwhile, and a removed device has no events."""
        by_lane: dict[int, list[str]] = defaultdict(list)
        for entry_id, entry in entries:
            if not endpoint.wants(events.event_type(entry), int(entry["at"])):
                continue
            name = ""
            if "event" in entry:
                if entry["device"] not in names:
                    continue
                name = names[entry["device"]]
            event = events.event_from_stream(shard, entry_id, entry, now, name)
            by_lane[endpoint.lane_of(event.ordering_key)] += [entry_id, msgspec.json.encode(event).decode()]
        backlog = self.settings.webhook_backlog_max
        return [
            (endpoint, lane, [f"mark:{shard}:{lane}", f"mark:{shard}", str(backlog), *pairs])
            for lane, pairs in sorted(by_lane.items())
        ]

    async def _device_names(self, shard: str, entries: list[dict[str, str]]) -> dict[str, str]:
        """Device id -> name, of the devices of ``entries`` (changes of presence in
        ``shard``'s stream) that still exist: the name they go out with."""
        devices = sorted({entry["device"] for entry in entries})
        if not devices:
            return {}
        keyring = self.broker.shard(shard)
        async with self.redis.pipeline(transaction=False) as pipe:
            for device in devices:
                pipe.hget(keyring.device(device), "name")
            found = await pipe.execute()
        return {device: _text(name) for device, name in zip(devices, found, strict=True) if name is not None}

    async def _endpoints(self, accounts: list[str]) -> dict[str, list[Endpoint]]:
        """Each account's endpoints."""
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
        found: dict[str, list[Endpoint]] = defaultdict(list)
        for (account, endpoint_id), raw in zip(wanted, raws, strict=True):
            endpoint = endpoint_from_hash(account, endpoint_id, raw)
            if endpoint is not None:
                found[account].append(endpoint)
        return found

    # Delivery ---------------------------------------------------------------------------

    async def _run_lane(self, account: str, endpoint_id: str, lane: int, token: int) -> None:
        key = (account, endpoint_id, lane)
        try:
            while True:
                _raise_if_cancelling()
                self._kicked.discard(key)
                if not await self._deliver_some(account, endpoint_id, lane, token) and key not in self._kicked:
                    break  # empty, and nothing appended since it was found empty
        except asyncio.CancelledError:
            raise
        except LaneLost:
            log.info("webhook lane %s/%s/%d: the account's shard is another process's now", account, endpoint_id, lane)
        except REDIS_AWAY:
            pass  # the fan-out's log says so once; the lane is started again when Redis is back
        except Exception:  # noqa: BLE001 - the lane is started again by the next pass that touches it
            log.exception("webhook lane %s/%s/%d failed", account, endpoint_id, lane)
            await asyncio.sleep(1)
        finally:
            if self.lanes.get(key) is asyncio.current_task():
                del self.lanes[key]
                self._lane_tokens.pop(key, None)

    def _check_held(self, account: str, token: int) -> None:
        """LaneLost once this process no longer holds the account's shard with ``token``
        (by its own reckoning: the scripts check the token in Redis too)."""
        if self._token_of(account) != token:
            raise LaneLost()

    async def _lane_write(
        self,
        account: str,
        endpoint_id: str,
        lane: int,
        token: int,
        op: str,
        first: bytes = b"",
        attempt: Attempt | None = None,
        retry: str = "",
    ) -> int:
        """One ``webhook-lane`` call (see its header): 1 done, 2 the lane's first event is
        another one now; LaneLost when refused."""
        shard = self.broker.ctx.account_shard(account)
        done = int(
            await self.broker.ctx.call(
                "webhook-lane",
                [
                    keys.shard_lease(shard.tag),
                    shard.webhook(endpoint_id),
                    shard.webhook_lane(endpoint_id, lane),
                    shard.webhook_retry(endpoint_id),
                    shard.webhook_log(endpoint_id),
                ],
                [
                    self.leases.lease(token),
                    op,
                    lane,
                    self.broker.clock(),
                    first,
                    msgspec.json.encode(attempt) if attempt is not None else b"",
                    LOG_SIZE,
                    retry,
                ],
            )
        )
        if not done:
            raise LaneLost()
        return done

    async def _deliver_some(self, account: str, endpoint_id: str, lane: int, token: int) -> bool:
        """Deliver the lane's first events in order, up to :data:`LANE_BATCH` of them, until
        one fails (or wait for the first one's next try); False when the lane is empty or
        its endpoint gone or disabled. One read for the batch; one script call per event
        (it leaves the lane and its attempt is logged together, if this process still
        holds the shard with ``token``)."""
        self._check_held(account, token)
        shard = self.broker.ctx.account_shard(account)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(shard.webhook_lane(endpoint_id, lane), 0, LANE_BATCH - 1)
            pipe.hgetall(shard.webhook(endpoint_id))
            pipe.hget(shard.webhook_retry(endpoint_id), str(lane))
            firsts, raw, retry = await pipe.execute()
        if not firsts:
            return False
        endpoint = endpoint_from_hash(account, endpoint_id, raw)
        if endpoint is None or not endpoint.enabled:
            await self._lane_write(account, endpoint_id, lane, token, "clear")  # deleted, or disabled meanwhile
            return False
        attempts, _, next_ms = _text(retry or "0|0").partition("|")
        wait_ms = int(next_ms) - self.broker.clock()
        if wait_ms > 0:
            _raise_if_cancelling()
            await asyncio.sleep(min(wait_ms / 1000, MAX_WAIT_S))
            return True
        tried = int(attempts)
        for first in firsts:
            _raise_if_cancelling()  # before each POST: the last event's script call may have lost it
            self._check_held(account, token)
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
                return await self._failed(endpoint, lane, token, first, attempt)
            if await self._lane_write(account, endpoint_id, lane, token, "delivered", first, attempt) != 1:
                return True  # the lane changed under it (emptied): read it again
            self._observe(attempt)
            tried = 0
            endpoint = msgspec.structs.replace(endpoint, failing_since_ms=0)
        return True

    async def _failed(self, endpoint: Endpoint, lane: int, token: int, first: bytes, attempt: Attempt) -> bool:
        """A failed POST of the lane's first event: try it again later, give it up after a
        day, or disable the endpoint after a day without a success."""
        now = attempt.at_ms
        window_ms = self.settings.webhook_retry_seconds * 1000
        failing_since = endpoint.failing_since_ms or now
        if now - failing_since >= window_ms:
            await self._disable(endpoint, token, attempt, failing_since)
            return False
        if now - attempt.event.queued_ms >= window_ms:
            attempt = msgspec.structs.replace(attempt, outcome="gave_up")
            done = await self._lane_write(endpoint.account, endpoint.id, lane, token, "gave_up", first, attempt)
        else:
            wait = backoff_ms(
                attempt.attempt, self.settings.webhook_backoff_first_ms, self.settings.webhook_backoff_max_ms
            )
            attempt = msgspec.structs.replace(attempt, next_retry_ms=now + wait)
            done = await self._lane_write(
                endpoint.account, endpoint.id, lane, token, "retry", first, attempt, f"{attempt.attempt}|{now + wait}"
            )
        if done == 1:
            self._observe(attempt)
        return True

    def _observe(self, attempt: Attempt) -> None:
        if self.on_attempt is not None:
            self.on_attempt(attempt)

    async def _disable(self, endpoint: Endpoint, token: int, attempt: Attempt, failing_since: int) -> None:
        shard = self.broker.ctx.account_shard(endpoint.account)
        reason = (
            f"no delivery succeeded for {duration_text(self.settings.webhook_retry_seconds)} "
            f"(failing since {iso_utc(failing_since)}); last error: {attempt.error or attempt.status_code}"
        )
        attempt = msgspec.structs.replace(attempt, outcome="disabled")
        done = int(
            await self.broker.ctx.call(
                "webhook-disable",
                [
                    keys.shard_lease(shard.tag),
                    shard.webhook(endpoint.id),
                    shard.webhook_retry(endpoint.id),
                    shard.webhook_log(endpoint.id),
                ],
                [self.leases.lease(token), attempt.at_ms, reason, msgspec.json.encode(attempt), LOG_SIZE],
            )
        )
        if not done:
            raise LaneLost()
        if done != 1:
            return  # deleted meanwhile
        for lane in range(endpoint.lanes):
            await self._lane_write(endpoint.account, endpoint.id, lane, token, "clear")
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
    more, beside the one the new holder of the shard runs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
