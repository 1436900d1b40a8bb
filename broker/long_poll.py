"""Long polls: a phone's claim that waits for work (``GET .../tasks/?wait=N``).

A long poll claims at once; with nothing to take it waits, subscribed to the wake
channels of the shards its work can come from (its own shard, and every pool shard for
a platform pool phone), and claims again each time a script wakes it
(:mod:`broker.wakeups`), until a claim hands it something or the wait is over. The
claims of one long poll, in order:

- the first refuses a phone whose poll limiter is empty (429) and charges nothing;
- a claim after a wake neither refuses nor charges;
- the last, at the end of a wait that found nothing, charges the limiter as one empty
  poll, and catches any work whose wake was lost.

So a phone that polls again right after every answer that carried messages is never
limited, and one that polls again and again with nothing to take is, as before. Every
claim of a long poll refreshes the phone's presence (a waiting phone is online), so a
wait that would outlast :data:`PRESENCE_MARGIN` of the presence TTL claims again then;
the app's 30 s waits, within the default 45 s, make two claims each: at the start and
at the end.

A long poll is answered at once, as a plain poll, when its worker is stopping, holds
``long_poll_max_waits`` already, or holds :data:`WAITS_PER_DEVICE` for that phone.
A wait whose client went away (:class:`Hangup`) ends without another claim, and so does
every wait when the worker stops (:meth:`Wakeups.end_all`).
"""

from __future__ import annotations

import time

from broker import keys
from broker.context import Context
from broker.messages import Messages
from broker.pool_shards import PoolShards
from broker.records import ClaimResult, DeviceRef
from broker.redis_client import RedisError
from broker.wakeups import Wait, Wakeups

MAX_WAIT_SECONDS = 60
PRESENCE_MARGIN = 0.8
"""How much of the presence TTL a wait lets pass after a claim before it claims again."""
WAITS_PER_DEVICE = 2
"""Waits one worker holds for one phone at once (a phone needs one; a retry may
overlap it): a stolen token cannot fill a worker with waits."""


class Hangup:
    """Told by the HTTP layer that the client went away: the wait it belongs to ends,
    and claims nothing more for a phone that would never see it."""

    __slots__ = ("_wait", "happened")

    def __init__(self) -> None:
        self.happened = False
        self._wait: Wait | None = None

    def __call__(self) -> None:
        self.happened = True
        if self._wait is not None:
            self._wait.end()

    def attach(self, wait: Wait | None) -> None:
        self._wait = wait
        if wait is not None and self.happened:
            wait.end()


class LongPoll:
    def __init__(self, ctx: Context, messages: Messages, pool_shards: PoolShards, wakeups: Wakeups) -> None:
        self.ctx = ctx
        self.messages = messages
        self.pool_shards = pool_shards
        self.wakeups = wakeups

    async def claim(
        self, device: DeviceRef, limit: int | None, wait_seconds: int, hangup: Hangup | None = None
    ) -> ClaimResult:
        """Claim for ``device``, waiting up to ``wait_seconds`` (0 to
        :data:`MAX_WAIT_SECONDS`; 0 is a plain poll) for work when there is none."""
        wakeups = self.wakeups
        if (
            wait_seconds <= 0
            or wakeups.closing
            or wakeups.waiting >= self.ctx.settings.long_poll_max_waits
            or wakeups.waits_for(device.device_id) >= WAITS_PER_DEVICE
        ):
            return await self.messages.claim_tasks(device, limit)
        hangup = hangup or Hangup()
        wait_ms = min(wait_seconds, MAX_WAIT_SECONDS) * 1000
        until = self.ctx.now() + wait_ms
        ends = time.monotonic() + wait_ms / 1000
        # Claim again before the presence from the last claim runs out, so the phone stays online.
        refresh = self.ctx.settings.presence_ttl_seconds * PRESENCE_MARGIN
        async with wakeups.wait(device.device_id, await self.channels(device)) as wait:
            hangup.attach(wait)
            try:
                result = await self.messages.claim_tasks(device, limit, charge_empty=False, waiting_until=until)
                claimed_at = time.monotonic()
                while not result.messages:
                    now = time.monotonic()
                    if now >= ends:
                        break
                    woken = await wait.sleep(min(ends, claimed_at + refresh) - now)
                    if wait.ended:
                        return result
                    if not woken and time.monotonic() >= ends:
                        break
                    try:
                        result = await self.messages.claim_tasks(
                            device, limit, refuse=False, charge_empty=False, waiting_until=until
                        )
                    except RedisError:
                        pass  # Redis away for a moment: wait on; a wake or the last claim tells
                    claimed_at = time.monotonic()
            finally:
                hangup.attach(None)
            if result.messages or hangup.happened or wait.ended:
                return result
            return await self.messages.claim_tasks(device, limit, refuse=False, waiting_until=0)

    async def channels(self, device: DeviceRef) -> list[str]:
        """The wake channels of the shards whose work this device claims."""
        channels = [self.ctx.shard(device.shard).wake_channel]
        if keys.is_pool_shard(device.shard):
            channels += [self.ctx.shard(t).wake_channel for t in await self.pool_shards.in_use() if t != device.shard]
        return channels
