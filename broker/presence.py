"""Presence: a phone's heartbeat (battery and versions with it), whether it is online,
and its changes of presence, which become the ``device.offline`` and ``device.online``
webhook events.

A phone is online while its last sighting (a heartbeat, a claim, a status report, a
waiting long poll) is younger than the presence TTL. The background process holding a
shard looks for changes after each sweep (:meth:`Presence.watch_held`), one
``presence-changes`` call per shard, which marks lapsed devices offline and unmarks
returning ones in the shard's ``{S}:offline`` set and appends one stream entry per
change; the webhook dispatcher delivers those like the status changes of messages. A
pool phone's events are for the operator (``{operator}``)."""

from __future__ import annotations

from broker import errors, keys
from broker.context import Context
from broker.leases import ShardLeases, call_each
from broker.records import DeviceRef, PresenceReport
from broker.redis_client import text
from broker.validation import MAX_FIELD_CHARS, check_text, check_whole_number

MAX_PASSES = 100
"""The most ``presence-changes`` calls one background pass makes on one shard."""


class Presence:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def heartbeat(
        self,
        device: DeviceRef,
        *,
        battery: int | None = None,
        android_version: str | None = None,
        app_version: str | None = None,
    ) -> int:
        """Refresh presence; returns the last-seen time (ms). DeviceNotFound once removed."""
        if battery is not None:
            check_whole_number(battery, "battery", low=0, high=100)
        for name, value in (("android_version", android_version), ("app_version", app_version)):
            if value is not None:
                check_text(value, name, max_chars=MAX_FIELD_CHARS)
        shard = self.ctx.shard(device.shard)
        did = device.device_id
        reply = await self.ctx.call(
            "heartbeat",
            [shard.device(did), shard.device_presence(did), shard.last_seen],
            [
                did,
                self.ctx.now(),
                self.ctx.settings.presence_ttl_seconds * 1000,
                "" if battery is None else battery,
                android_version or "",
                app_version or "",
            ],
        )
        return int(reply)

    async def is_online(self, device: DeviceRef) -> bool:
        seen = await self.ctx.redis.zscore(self.ctx.shard(device.shard).last_seen, device.device_id)
        return seen is not None and seen + self.ctx.settings.presence_ttl_seconds * 1000 > self.ctx.now()

    # Changes of presence ----------------------------------------------------------------

    async def owner(self, shard_tag: str) -> str:
        """Whose endpoints a shard's presence events go to: the account of an account
        shard; for a platform pool shard the operator ("" while there is none)."""
        if keys.is_pool_shard(shard_tag):
            return text(await self.ctx.redis.get(keys.OPERATOR) or b"")
        return shard_tag.removeprefix("a:")

    def _call(self, shard_tag: str, lease: str, owner: str) -> tuple[list[str], list[object]]:
        shard = self.ctx.shard(shard_tag)
        return (
            [shard.last_seen, shard.offline, shard.presence_watch, shard.events, keys.shard_lease(shard_tag)],
            [
                lease,
                self.ctx.now(),
                self.ctx.settings.presence_ttl_seconds * 1000,
                owner,
                self.ctx.settings.sweep_batch,
            ],
        )

    async def watch(self, shard_tag: str, lease: str, owner: str | None = None) -> PresenceReport:
        """One ``presence-changes`` call on a shard (see its header): devices whose
        presence lapsed become offline, offline ones seen again online, each change one
        event for ``owner`` (:meth:`owner` when None). ``lease`` is the shard's lease as
        its holder has it, ``<holder>|<fencing token>``; :class:`LockLost` (nothing
        written) when the lease is another's now."""
        owner = await self.owner(shard_tag) if owner is None else owner
        reply = await self.ctx.call("presence-changes", *self._call(shard_tag, lease, owner))
        if not isinstance(reply, list):
            raise errors.LockLost(keys.shard_lease(shard_tag))
        return PresenceReport(int(reply[0]), int(reply[1]), bool(int(reply[2])))

    async def watch_held(self, leases: ShardLeases) -> PresenceReport | None:
        """:meth:`watch` on every shard ``leases`` holds, until none has lapses left (at
        most :data:`MAX_PASSES` calls each), the calls of all shards in pipelines; None
        when it holds none. A shard whose lease passed to another process meanwhile is
        left to it."""
        held = leases.tokens()
        if not held:
            return None
        operator = await self.owner(keys.pool_shard()) if any(keys.is_pool_shard(s) for s in held) else ""
        owners = {tag: operator if keys.is_pool_shard(tag) else await self.owner(tag) for tag in held}
        offline = online = 0
        todo = sorted(held)
        for _ in range(MAX_PASSES):
            calls = [self._call(tag, leases.lease(held[tag]), owners[tag]) for tag in todo]
            replies = await call_each(self.ctx, "presence-changes", calls)
            again = []
            for tag, reply in zip(todo, replies, strict=True):
                if isinstance(reply, list):
                    offline, online = offline + int(reply[0]), online + int(reply[1])
                    if int(reply[2]):
                        again.append(tag)
            todo = again
            if not todo:
                break
        return PresenceReport(offline, online, bool(todo))
