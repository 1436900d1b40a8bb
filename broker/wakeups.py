"""Wake-ups for long polls: how a waiting request learns that work for its phone was
queued, without a Redis connection of its own.

A script that makes work claimable takes the waiting phones it needs off the shard's
waiting set and publishes their ids on the shard's wake channel
(``lua/includes/wakeups.lua``). Each worker process has one :class:`Wakeups`: one
subscriber connection to Redis (on a Cluster one per primary, subscribed with
``SSUBSCRIBE`` to the channels of the slots it serves), the channels its waits need
(subscribed while a wait needs them and :data:`IDLE_UNSUBSCRIBE_SECONDS` after), and
the waits themselves (:class:`Wait`: a flag, and a future its request awaits). A wake
for a device wakes the waits this worker holds for it; the other workers' subscribers
see the same message and hold none.

A wake may be lost (a connection that dropped, a channel that moved with its slot in a
failover), never a message: a subscriber that subscribes again wakes every wait on its
channels, which then claim (and wait again when there is nothing), and every wait
claims once more at its end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from broker.context import Context
from broker.redis_client import text

log = logging.getLogger("connecfy.wakeups")

SUBSCRIBE_TIMEOUT_SECONDS = 1.0
"""How long a wait waits for its channels' subscription before it claims without it
(Redis away: it then learns of work only at its end)."""
PING_SECONDS = 10.0
"""How often a subscriber pings: one that heard nothing for three times this long is
taken for dead and connects again."""
IDLE_UNSUBSCRIBE_SECONDS = 60.0
"""How long a channel no wait needs stays subscribed (phones wait again at once)."""
RETRY_SECONDS = (0.1, 2.0)
"""The first and the longest pause before a subscriber connects again."""
_SUBSCRIBE = {"PUBLISH": ("SUBSCRIBE", "UNSUBSCRIBE"), "SPUBLISH": ("SSUBSCRIBE", "SUNSUBSCRIBE")}


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Wait:
    """One waiting request: its device, the channels that can wake it, and whether it
    was woken. :meth:`end` wakes it for good (its client went away, the worker stops).

    It holds thousands at once, so it is lean: a flag, and while it sleeps one future
    and one timer (no :class:`asyncio.Event`, whose waiters' deque is some 600 bytes,
    and no :func:`asyncio.wait_for`, which runs the wait in a task of its own). As a
    context manager (:meth:`Wakeups.wait`) it is held by its worker from entry to exit."""

    __slots__ = ("_waiter", "_wakeups", "channels", "device_id", "ended", "woken")

    def __init__(self, device_id: str, channels: Sequence[str], wakeups: Wakeups | None = None) -> None:
        self.device_id = device_id
        self.channels = tuple(channels)
        self.woken = False
        self.ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._wakeups = wakeups

    def wake(self) -> None:
        self.woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        self.ended = True
        self.wake()

    async def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a wake; True when woken (the flag is cleared)."""
        if not self.woken:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(max(seconds, 0.0), _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self.woken and not self.ended:
            self.woken = False
            return True
        return self.ended

    async def __aenter__(self) -> Wait:
        assert self._wakeups is not None
        await self._wakeups._hold(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._wakeups is not None
        self._wakeups._release(self)


class _Subscriber:
    """One subscriber connection (to the Redis, or one primary of a Cluster) and the
    channels wanted on it. Its task connects, subscribes every wanted channel, reads
    until the connection fails, and starts over."""

    def __init__(self, owner: Wakeups, name: str, connect: Callable[[], AbstractConnection]) -> None:
        self.owner = owner
        self.name = name
        self.connect = connect
        self.wanted: set[str] = set()
        self.confirmed: dict[str, asyncio.Future[None]] = {}
        self.conn: AbstractConnection | None = None
        self.heard = time.monotonic()
        self.failures = 0
        self.task = asyncio.create_task(self._run(), name=f"wakeups-{name}")

    def _future(self, channel: str) -> asyncio.Future[None]:
        future = self.confirmed.get(channel)
        if future is None:
            future = self.confirmed[channel] = asyncio.get_running_loop().create_future()
        return future

    async def subscribe(self, channel: str) -> asyncio.Future[None]:
        """The future set once ``channel`` is subscribed (at once when it is)."""
        future = self._future(channel)
        if channel not in self.wanted:
            self.wanted.add(channel)
            await self._send(self.owner.subscribe_command, channel)
        return future

    async def unsubscribe(self, channel: str) -> None:
        if channel in self.wanted:
            self.wanted.discard(channel)
            self.confirmed.pop(channel, None)
            await self._send(self.owner.unsubscribe_command, channel)

    async def _send(self, *command: str) -> None:
        conn = self.conn
        if conn is None:
            return  # subscribed when the connection is made again
        try:
            await conn.send_command(*command, check_health=False)
        except (RedisError, OSError) as exc:
            log.debug("subscriber %s: %s failed: %s", self.name, command[0], exc)
            await self._drop()

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with suppress(Exception):
                await conn.disconnect(nowait=True)

    async def _run(self) -> None:
        pause = RETRY_SECONDS[0]
        while True:
            watchdog: asyncio.Task[None] | None = None
            try:
                conn = self.connect()
                await conn.connect()  # type: ignore[no-untyped-call]
                self.conn = conn
                self.heard = time.monotonic()
                if self.wanted:
                    await conn.send_command(self.owner.subscribe_command, *sorted(self.wanted), check_health=False)
                watchdog = asyncio.create_task(self._watch(conn))
                while True:
                    reply = await conn.read_response(timeout=math.inf, push_request=True)
                    self.heard = time.monotonic()
                    pause = RETRY_SECONDS[0]
                    self.failures = 0
                    self._handle(reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: connect again, waits claim meanwhile at their end
                self.failures += 1
                level = logging.WARNING if self.failures == 1 else logging.DEBUG  # once per outage
                log.log(level, "wake-up subscriber %s lost its connection (%s); connecting again", self.name, exc)
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                await self._drop()
                # Not subscribed any more: a wait that starts now must not think it is.
                for channel, future in list(self.confirmed.items()):
                    if future.done():
                        self.confirmed[channel] = asyncio.get_running_loop().create_future()
            self.owner.subscriber_failed(self)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_SECONDS[1])

    async def _watch(self, conn: AbstractConnection) -> None:
        """Ping now and then; a connection that answers nothing for three pings is dead."""
        while True:
            await asyncio.sleep(PING_SECONDS)
            if time.monotonic() - self.heard > 3 * PING_SECONDS:
                log.warning("wake-up subscriber %s heard nothing for %.0f s", self.name, 3 * PING_SECONDS)
                await conn.disconnect(nowait=True)
                return
            with suppress(RedisError, OSError):
                await conn.send_command("PING", check_health=False)

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = text(reply[0])
        if kind in ("message", "smessage"):
            self.owner.wake_devices(text(reply[2]).split())
        elif kind in ("subscribe", "ssubscribe"):
            channel = text(reply[1])
            if channel in self.wanted:
                future = self._future(channel)
                if not future.done():
                    future.set_result(None)
                self.owner.subscribed(channel)
        elif kind == "sunsubscribe":
            channel = text(reply[1])
            if channel in self.wanted:
                # Redis dropped it: its slot moved to another node (a failover, a reshard).
                self.owner.moved(self, channel)


class Wakeups:
    """A worker's wake-ups: its subscribers, its channels and its waits."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.subscribe_command, self.unsubscribe_command = _SUBSCRIBE[ctx.wake_command]
        self.closing = False
        self._waits: dict[str, list[Wait]] = {}  # a list: one wait a device, seldom two
        self._count = 0
        self._refs: dict[str, int] = {}
        self._idle: dict[str, float] = {}
        self._placed: dict[str, _Subscriber] = {}  # channel -> its subscriber
        self._subscribers: dict[str, _Subscriber] = {}
        self._ever_subscribed: set[str] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._replacing: asyncio.Task[None] | None = None

    # The waits -----------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Waits this worker holds now."""
        return self._count

    def waits_for(self, device_id: str) -> int:
        return len(self._waits.get(device_id, ()))

    def wait(self, device_id: str, channels: Sequence[str]) -> Wait:
        """A wait for ``device_id``, woken by wakes on ``channels``, to enter with
        ``async with``: subscribed before it is handed over (up to
        :data:`SUBSCRIBE_TIMEOUT_SECONDS`), so a wake published after the caller's next
        claim reaches it; held by this worker until the block ends."""
        return Wait(device_id, channels, self)

    async def _hold(self, wait: Wait) -> None:
        held = self._waits.get(wait.device_id)
        if held is None:
            self._waits[wait.device_id] = [wait]
        else:
            held.append(wait)
        self._count += 1
        for channel in wait.channels:
            self._refs[channel] = self._refs.get(channel, 0) + 1
            self._idle.pop(channel, None)
        if self.closing:
            wait.end()
        try:
            await self._subscribe(wait.channels)
        except BaseException:
            self._release(wait)
            raise

    def _release(self, wait: Wait) -> None:
        held = self._waits.get(wait.device_id)
        if held is not None and wait in held:
            held.remove(wait)
            if not held:
                del self._waits[wait.device_id]
        self._count -= 1
        now = time.monotonic()
        for channel in wait.channels:
            left = self._refs[channel] = self._refs[channel] - 1
            if left == 0:
                self._idle[channel] = now

    def wake_devices(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            for wait in self._waits.get(device_id, ()):
                wait.wake()

    def wake_channel(self, channel: str) -> None:
        for waits in self._waits.values():
            for wait in waits:
                if channel in wait.channels:
                    wait.wake()

    def end_all(self) -> None:
        """The worker stops: every wait ends now, and a new one ends as it starts."""
        self.closing = True
        for waits in self._waits.values():
            for wait in waits:
                wait.end()

    async def close(self) -> None:
        self.end_all()
        tasks = [s.task for s in self._subscribers.values()]
        tasks += [t for t in (self._housekeeper, self._replacing) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        for subscriber in self._subscribers.values():
            await subscriber._drop()
        self._subscribers.clear()

    # Subscriptions -------------------------------------------------------------------

    async def _subscribe(self, channels: Sequence[str]) -> None:
        if self._housekeeper is None:
            self._housekeeper = asyncio.create_task(self._keep_house(), name="wakeups-housekeeping")
        futures = []
        for channel in channels:
            subscriber = self._placed.get(channel)
            if subscriber is None:
                subscriber = self._placed[channel] = await self._subscriber_for(channel)
            future = await subscriber.subscribe(channel)
            if not future.done():
                futures.append(future)
        if futures:
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*futures)), SUBSCRIBE_TIMEOUT_SECONDS)

    async def _subscriber_for(self, channel: str) -> _Subscriber:
        redis = self.ctx.redis
        if isinstance(redis, RedisCluster):
            await redis.initialize()
            node = redis.nodes_manager.get_node_from_slot(redis.keyslot(channel))
            name = node.name
            kwargs = dict(node.connection_kwargs)
            connection_class: type[AbstractConnection] = node.connection_class
        else:
            name = "redis"
            kwargs = dict(redis.connection_pool.connection_kwargs)
            connection_class = redis.connection_pool.connection_class
        subscriber = self._subscribers.get(name)
        if subscriber is None:
            kwargs["health_check_interval"] = 0  # its own pings: a health check would read its replies

            def connect() -> AbstractConnection:
                return connection_class(**kwargs)

            subscriber = self._subscribers[name] = _Subscriber(self, name, connect)
        return subscriber

    def subscribed(self, channel: str) -> None:
        """A subscriber confirmed ``channel``: when it had been subscribed before (a
        connection made again, a channel moved), the wakes in between may be lost, so
        every wait on it claims again."""
        if channel in self._ever_subscribed:
            self.wake_channel(channel)
        self._ever_subscribed.add(channel)

    def subscriber_failed(self, subscriber: _Subscriber) -> None:
        """On a Cluster, a subscriber that cannot connect may serve slots that moved: look
        again where each of its channels lives."""
        if isinstance(self.ctx.redis, RedisCluster) and subscriber.wanted and self._replacing is None:
            self._replacing = asyncio.create_task(self._replace(subscriber))

    def moved(self, subscriber: _Subscriber, channel: str) -> None:
        subscriber.wanted.discard(channel)
        subscriber.confirmed.pop(channel, None)
        self._placed.pop(channel, None)
        self.wake_channel(channel)  # they subscribe again where it lives now, then claim
        if isinstance(self.ctx.redis, RedisCluster) and self._replacing is None:
            self._replacing = asyncio.create_task(self._replace(subscriber))

    async def _replace(self, subscriber: _Subscriber) -> None:
        """Refresh the Cluster's slot map and move the channels whose slot another node
        serves now; their waits are woken once subscribed there."""
        try:
            redis = self.ctx.redis
            assert isinstance(redis, RedisCluster)
            with suppress(RedisError, OSError):
                await redis.nodes_manager.initialize()
            for channel, placed in list(self._placed.items()):
                try:
                    node = redis.nodes_manager.get_node_from_slot(redis.keyslot(channel))
                except RedisError:
                    continue
                if node.name != placed.name:
                    await placed.unsubscribe(channel)
                    del self._placed[channel]
                    if self._refs.get(channel, 0) > 0:
                        await self._subscribe([channel])
            orphans = [s for s in self._subscribers.values() if s is not subscriber and not s.wanted]
            if not subscriber.wanted:
                orphans.append(subscriber)
            for orphan in orphans:
                self._subscribers.pop(orphan.name, None)
                orphan.task.cancel()
        finally:
            self._replacing = None

    async def _keep_house(self) -> None:
        """Unsubscribe the channels no wait has needed for a while."""
        while True:
            await asyncio.sleep(IDLE_UNSUBSCRIBE_SECONDS / 2)
            cutoff = time.monotonic() - IDLE_UNSUBSCRIBE_SECONDS
            for channel, since in list(self._idle.items()):
                if since < cutoff and self._refs.get(channel, 0) == 0:
                    del self._idle[channel]
                    self._refs.pop(channel, None)
                    self._ever_subscribed.discard(channel)
                    subscriber = self._placed.pop(channel, None)
                    if subscriber is not None:
                        await subscriber.unsubscribe(channel)
