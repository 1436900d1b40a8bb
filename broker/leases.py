"""Background work shared out by shard among the background processes of every host.

Every shard (each tag of ``{shards}``) is held by at most one background process at a
time, under an expiring lease with a fencing token: ``{S}:background`` holds
``<holder>|<token>`` and expires after :data:`LEASE_MS`; ``{S}:background:fence``
counts the holders (taken, renewed and released by ``lock-acquire``, ``lock-renew`` and
``lock-release``). One lease per shard covers all of the shard's background work, so
one process does it all: the sweep and the look for devices' changes of presence,
copying the shard's stream to the history store and trimming what is stored, fanning
the stream out to webhook lanes, and, in an account shard, delivering the account's
webhook lanes. The three jobs of a process
share its :class:`ShardLeases`, whose own task renews the leases every
:data:`BEAT_MS`, whatever a job is busy with.

The lease lives in the shard's own slot so that a script writing to the shard checks
the token in the same atomic call as its write: the snapshotter's trim (``trim-4``), the
look for devices' changes of presence (``presence-changes-5``, whose events a stale
holder would otherwise announce from its stale clock) and every change to an account's
webhook lanes (``webhook-lane-5``, ``webhook-disable-4``).
A process that paused past its lease (a long GC pause, a stopped or frozen host) and
comes back finds those writes refused, and renewing fails, so it drops the shard. What
a paused holder may still do is harmless: an upsert into the history store (never moves
a row backwards), adding to the trim set, acknowledging stream entries it handled, a
sweep call (each one atomic and only acting on what is due), and appending to webhook
lanes (``webhook-queue-2`` keeps a mark per lane and source shard, so nothing is queued
twice). A webhook POST it had in flight may reach the receiver a second time, as any
at-least-once delivery may.

How the shards are split. Each beat, a process registers in ``{background}`` (a sorted
set of live processes scored by their deadline, :data:`LEASE_MS` ahead, so a dead
process leaves it when its leases run out) and learns how many are live, P; with N
shards its share is ceil(N / P). It renews what it holds; gives up what it holds beyond
its share (so a process that joins finds shards free); takes free shards up to its
share; and takes any other shard that was free at its previous look too (nobody with
room wanted it, as when a dead process is still counted). It looks for free shards while
it has room, for a lease after the shards or the live processes changed (which is when
shards come free), and once a lease anyway, so a steady beat costs one registry call,
one ``SCARD`` and the renewals. One
process alone holds every shard; a dead one's shards are free once its leases run out,
at most :data:`LEASE_MS` after its last beat, and taken at the next beat of the others
(its entry in the registry has run out by then too, so their shares have grown). Which
free shards a process takes is random, so processes starting together do not all race
for the same.

History across hosts. A history store in a local SQLite file works for one host only:
another host's process would copy its shards into its own file. The registry keeps each
process's host (machine and data directory) and whether its store is local, and a
process joining is refused (``background-join-1``, atomically, so two hosts starting at
once cannot both get in) while another host is there and either keeps history locally.
:func:`history_conflict` is the same rule for ``connecfy serve`` to say before starting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

from broker import keys
from broker.context import Context
from broker.redis_client import PassLog, RedisClient, text

log = logging.getLogger("connecfy.leases")

LEASE_MS = 10_000
"""How long a shard's lease lasts without renewal: a dead process's shards move to the
others within this (and one beat)."""
BEAT_MS = 1_000
"""How often a process renews its leases and looks at the split."""
BATCH = 500  # script calls per pipeline
LOCAL = "local"
SHARED = "shared"

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


@dataclass(frozen=True)
class Host:
    """Where a background process runs: ``id`` tells hosts apart (a machine and a data
    directory), ``label`` names it for a person."""

    id: str
    label: str


def machine_id() -> str:
    for path in MACHINE_ID_FILES:
        try:
            found = Path(path).read_text().strip()
        except OSError:
            continue
        if found:
            return found
    return socket.gethostname()


def this_host(data_dir: str | os.PathLike[str]) -> Host:
    """The host of a process using ``data_dir``: two ``serve`` on one machine with two
    data directories are two hosts, the processes of one ``serve`` are one."""
    where = str(Path(data_dir).resolve())
    digest = sha256(f"{machine_id()}\0{where}".encode()).hexdigest()[:16]
    label = f"{socket.gethostname()}:{where}".replace("|", "/")
    return Host(digest, label)


@dataclass(frozen=True)
class Member:
    """One live background process, as the registry has it."""

    holder: str
    host: str
    store: str
    label: str

    @classmethod
    def parse(cls, value: Any) -> Member:
        holder, host, store, label = [*text(value).split("|", 3), "", "", ""][:4]
        return cls(holder, host, store, label)

    def __str__(self) -> str:
        return f"{self.holder}|{self.host}|{self.store}|{self.label}"


def history_conflict(host: Host, local_store: bool, live: Iterable[Member]) -> Member | None:
    """The live process of another host that a process of ``host`` may not work beside
    (this one's store or that one's is local), if any: ``background-join-1``'s rule."""
    for other in live:
        if other.host != host.id and (local_store or other.store == LOCAL):
            return other
    return None


def conflict_message(other: Member, local_store: bool) -> str:
    """What to tell the operator when :func:`history_conflict` found ``other``."""
    if local_store:
        return (
            f"another host's background process ({other.label}) works on this Redis, and this one would keep "
            "history in a local SQLite file: set CONNECFY_DATABASE_URL to a PostgreSQL URL, the same on every host"
        )
    return (
        f"another host's background process ({other.label}) keeps history in a local SQLite file on this Redis: "
        "set CONNECFY_DATABASE_URL to a PostgreSQL URL there, the same on every host"
    )


async def live_members(redis: RedisClient, now_ms: int) -> list[Member]:
    """The background processes whose deadline has not passed."""
    return [Member.parse(m) for m in await redis.zrangebyscore(keys.BACKGROUND, now_ms, "+inf")]


@dataclass
class Held:
    token: int
    valid_until: float  # monotonic seconds: the lease may have run out after this


class ShardLeases:
    """One background process's leases on its share of the shards."""

    def __init__(
        self,
        ctx: Context,
        *,
        holder: str | None = None,
        host: Host | None = None,
        local_store: bool = False,
        lease_ms: int = LEASE_MS,
        beat_ms: int = BEAT_MS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.holder = holder or uuid.uuid4().hex
        if "|" in self.holder:
            raise ValueError("a lease holder's name has no '|'")
        self.host = host or this_host(ctx.settings.data_dir)
        self.local_store = local_store
        self.member = Member(self.holder, self.host.id, LOCAL if local_store else SHARED, self.host.label)
        self.lease_ms = lease_ms
        self.beat_ms = beat_ms
        self.monotonic = monotonic
        self.held: dict[str, Held] = {}
        self.shards: list[str] = []  # every shard, as of the last beat
        self.live = 0  # live background processes, as of the last beat
        self.refused: Member | None = None  # another host's process this one may not work beside
        self._seen_free: set[str] = set()
        self._given_up: dict[str, int] = {}  # shard -> the beat this process gave it up at
        self._changed_at = 0  # the last beat that saw the shards or the live processes change
        self.beats = 0
        self.pass_log = PassLog(log, "shard leases")

    # What the jobs ask ---------------------------------------------------------------

    def tokens(self) -> dict[str, int]:
        """Shard -> fencing token of every shard this process holds with lease time left."""
        now = self.monotonic()
        return {shard: held.token for shard, held in self.held.items() if held.valid_until > now}

    def token(self, shard: str) -> int | None:
        held = self.held.get(shard)
        if held is None or held.valid_until <= self.monotonic():
            return None
        return held.token

    def lease(self, token: int) -> str:
        """The value of a shard's lease key while this process holds it with ``token``,
        which the fenced scripts compare."""
        return f"{self.holder}|{token}"

    def holds_first(self) -> bool:
        """Whether this process holds the first shard (in sort order): the one that does
        the chores of the whole history store (deleting rows past retention)."""
        return bool(self.shards) and self.token(self.shards[0]) is not None

    # The beat ------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            try:
                await self.beat()
                self.pass_log.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed beat is tried again on the next
                self.pass_log.failed(exc)
            await asyncio.sleep(self.beat_ms / 1000)

    async def beat(self) -> None:
        """Register as live, renew what is held, and even out the split (see the module)."""
        started = self.monotonic()
        self.beats += 1
        live = self.live
        if not await self._join():
            return
        # The list of shards only grows: read again when its size changed, and every
        # lease anyway, so a steady beat costs O(1) and the renewals of what is held.
        every = math.ceil(self.lease_ms / self.beat_ms)
        periodic = (self.beats - 1) % every == 0
        before = self.shards
        if await self.ctx.redis.scard(keys.SHARDS) != len(before) or periodic:
            self.shards = sorted(text(t) for t in await self.ctx.redis.smembers(keys.SHARDS))
        if self.shards != before or self.live != live:
            self._changed_at = self.beats
        await self._renew(started)
        share = math.ceil(len(self.shards) / max(1, self.live))
        everything = set(self.shards)
        gone = [s for s in self.held if s not in everything]
        kept = sorted(set(self.held) - set(gone))
        extras = random.sample(kept, len(kept) - share) if len(kept) > share else []
        if gone or extras:
            await self.release(gone + extras)
            self._given_up.update((shard, self.beats) for shard in extras)
            log.info("gave up %d shards: share %d of %d, %d processes", len(extras), share, len(self.shards), self.live)
        room = max(0, share - len(self.held))
        # Shards come free when the shards or the live processes change (a shard added, a
        # process that joins makes others give some up, one that leaves or dies frees its
        # own): a process with room looks for free ones for a lease after such a change,
        # and every lease anyway. So a steady beat costs one registry call, one SCARD and
        # the renewals of what is held.
        if not (room and self.beats - self._changed_at <= every) and not periodic:
            return
        others = [s for s in self.shards if s not in self.held]
        free = [s for s, value in zip(others, await self._leases_of(others), strict=True) if value is None]
        random.shuffle(free)
        # Past its share, a process takes what was free at its previous look too (nobody
        # with room wanted it), unless it gave that shard up itself within a lease.
        lately = self.beats - every
        orphans = [s for s in free[room:] if s in self._seen_free and self._given_up.get(s, lately) <= lately]
        taken = await self._acquire(free[:room] + orphans, started)
        self._seen_free = set(free) - set(taken)
        if self._seen_free:
            self._changed_at = self.beats  # some are still free: go on looking
        self._given_up = {s: beat for s, beat in self._given_up.items() if beat > lately}
        if taken:
            log.info(
                "took %d shards, holding %d of %d: share %d, %d processes",
                len(taken),
                len(self.held),
                len(self.shards),
                share,
                self.live,
            )

    async def _join(self) -> bool:
        now = self.ctx.now()
        ok, value = await self.ctx.call(
            "background-join", [keys.BACKGROUND], [str(self.member), now, now + self.lease_ms]
        )
        if int(ok):
            if self.refused is not None:
                log.warning("no other host's background process is in the way any more: taking shards again")
            self.refused = None
            self.live = int(value)
            return True
        other = Member.parse(value)
        if self.refused != other:
            log.error("%s; this process does no background work meanwhile", conflict_message(other, self.local_store))
        self.refused = other
        if self.held:
            await self.release(list(self.held))
        return False

    async def _renew(self, started: float) -> None:
        shards = list(self.held)
        replies = await call_each(
            self.ctx,
            "lock-renew",
            [([keys.shard_lease(s)], [self.holder, self.held[s].token, self.lease_ms]) for s in shards],
        )
        lost = []
        for shard, renewed in zip(shards, replies, strict=True):
            if int(renewed):
                self.held[shard].valid_until = self._valid_until(started)
            else:
                lost.append(shard)
                del self.held[shard]
        if lost:
            log.warning("lost %d shards to other processes (held past the lease): %s", len(lost), ", ".join(lost[:5]))

    async def _acquire(self, shards: Sequence[str], started: float) -> list[str]:
        replies = await call_each(
            self.ctx,
            "lock-acquire",
            [([keys.shard_lease(s), keys.fence(keys.shard_lease(s))], [self.holder, self.lease_ms]) for s in shards],
        )
        taken = []
        for shard, token in zip(shards, replies, strict=True):
            if int(token):
                self.held[shard] = Held(int(token), self._valid_until(started))
                taken.append(shard)
        return taken

    async def release(self, shards: Sequence[str]) -> None:
        """Give ``shards`` up at once (another process takes them at its next beat)."""
        tokens = [(s, self.held.pop(s).token) for s in shards if s in self.held]
        await call_each(self.ctx, "lock-release", [([keys.shard_lease(s)], [self.holder, t]) for s, t in tokens])

    async def leave(self) -> None:
        """Give every shard up and leave the registry: stopping, so the others take over
        now rather than when the leases run out."""
        await self.release(list(self.held))
        await self.ctx.redis.zrem(keys.BACKGROUND, str(self.member))

    def _valid_until(self, started: float) -> float:
        # Counted from before the call that set the lease, less a beat to spare: past
        # it, the jobs leave the shard alone until the next renewal says it is still held.
        return started + max(self.lease_ms - self.beat_ms, self.lease_ms / 2) / 1000

    # Redis, in pipelines --------------------------------------------------------------

    async def _leases_of(self, shards: list[str]) -> list[Any]:
        """The lease value of each shard (None: free), in pipelines of :data:`BATCH`."""
        values: list[Any] = []
        for start in range(0, len(shards), BATCH):
            async with self.ctx.redis.pipeline(transaction=False) as pipe:
                for shard in shards[start : start + BATCH]:
                    pipe.get(keys.shard_lease(shard))
                values += await pipe.execute()
        return values


async def call_each(ctx: Context, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """The script ``name`` called once for each (keys, args), in pipelines of
    :data:`BATCH` calls (one round trip per node), the replies in order. A call answered
    NOSCRIPT did not run: it is made again through :meth:`Context.call`, which loads the
    script."""
    script = ctx.scripts.scripts[name]
    replies: list[Any] = []
    for start in range(0, len(calls), BATCH):
        chunk = calls[start : start + BATCH]
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for call_keys, args in chunk:
                if len(call_keys) != script.key_count:
                    raise ValueError(f"{name} takes {script.key_count} keys, got {len(call_keys)}")
                pipe.evalsha(script.sha, script.key_count, *call_keys, *args)
            answers = await pipe.execute(raise_on_error=False)
        for (call_keys, args), answer in zip(chunk, answers, strict=True):
            if isinstance(answer, NoScriptError):
                answer = await ctx.call(name, call_keys, args)
            elif isinstance(answer, Exception):
                raise answer
            replies.append(answer)
    return replies
