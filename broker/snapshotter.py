"""The snapshotter: copies every status change from Redis to the history store, then
lets Redis forget finished messages, so Redis memory stays flat under steady load.

One pass, per shard: read the shard's event stream through the ``snapshotter``
consumer group (first what an earlier pass read but did not acknowledge, then new
entries), load the current records of the messages named, upsert them into the store,
note the finished ones in the shard's trim set, then acknowledge the entries (deleted
once the webhook dispatcher has acknowledged them too, see :mod:`broker.streams`). Finished messages whose last change is older than the hot
retention window are then removed from Redis by ``trim-4.lua``, only if unchanged since
they were stored. A crash anywhere loses nothing: unacknowledged entries are read again
and the upsert never moves a stored message backwards.

Each background process snapshots the shards it holds (:mod:`broker.leases`), so a
shard has one snapshotter at a time and more processes share the work; the one consumer
name means a new holder of a shard reads what its predecessor left unacknowledged. The
trim deletes from Redis, so ``trim-4.lua`` checks the shard's fencing token in the same
call: a process that paused past its lease stores (harmlessly) but trims nothing.
Accounts, devices and API keys of the held shards are mirrored every
:data:`DIRECTORY_EVERY` passes; history past its retention is deleted every
:data:`RETENTION_EVERY` passes by the holder of the first shard, for at most about a
second a pass; a backlog left over is taken up again on the next pass until none is
left.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict

import msgspec

from broker import errors, keys, streams
from broker.broker import Broker
from broker.history import FINISHED, HistoryStore
from broker.leases import LEASE_MS, ShardLeases
from broker.records import MessageRecord
from broker.redis_client import PassLog
from broker.redis_client import fields as _fields
from broker.redis_client import text as _text

log = logging.getLogger("connecfy.snapshotter")

GROUP = streams.SNAPSHOTTER_GROUP
CONSUMER = "snapshotter"  # one per shard at a time: a successor owns what its predecessor left
DIRECTORY_EVERY = 15
RETENTION_EVERY = 30
MAX_ROUNDS = 50


class SnapshotReport(msgspec.Struct):
    events: int = 0
    stored: int = 0
    trimmed: int = 0
    deleted: int = 0
    fenced: int = 0  # shards whose trim was refused: another process holds them now


class Batch(msgspec.Struct):
    """Stream entries read from one shard, and the records of the messages they name."""

    shard: str
    entry_ids: list[str]
    records: list[MessageRecord] = []
    message_ids: list[str] = []


class Snapshotter:
    def __init__(
        self,
        broker: Broker,
        store: HistoryStore,
        *,
        holder: str | None = None,
        read_count: int = 1_000,
        trim_batch: int = 500,
        lease_ms: int | None = None,
        retention_batch: int = 1_000,
        retention_budget_s: float = 1.0,
        leases: ShardLeases | None = None,
    ) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.store = store
        self.settings = broker.settings
        self.read_count = read_count
        self.trim_batch = trim_batch
        self.retention_batch = retention_batch
        self.retention_budget_s = retention_budget_s
        self._retention_left = False  # the last retention pass ran out of time
        # The jobs of a background process share its leases, renewed by a task of their
        # own; a snapshotter made alone has its own, and renews them at each pass.
        self._own_leases = leases is None
        self.leases = leases or ShardLeases(
            broker.ctx,
            holder=holder or uuid.uuid4().hex,
            local_store=store.is_local,
            lease_ms=lease_ms or LEASE_MS,
            beat_ms=min(1_000, lease_ms or LEASE_MS),
        )
        self.holder = self.leases.holder
        self.passes = 0
        self.pass_log = PassLog(log, "snapshots")
        self._groups: set[str] = set()
        self._stored_epoch: str | None = None

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
                self.pass_log.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried on the next tick
                self.pass_log.failed(exc)
            await asyncio.sleep(self.settings.snapshot_interval_ms / 1000)

    async def run_once(self) -> SnapshotReport | None:
        """One pass over the shards this process holds; None when it holds none."""
        if self._own_leases:
            await self.leases.beat()
        held = self.leases.tokens()
        if not held:
            return None
        if not await self.epoch_matches():
            return None
        return await self.snapshot(held)

    async def snapshot(self, held: dict[str, int] | None = None) -> SnapshotReport:
        """One pass over ``held`` (shard -> fencing token; the shards held now when None)."""
        held = self.leases.tokens() if held is None else held
        shards = sorted(held)
        report = SnapshotReport()
        if self.passes % DIRECTORY_EVERY == 0:
            await self.mirror_directory(shards)
        for pending in (True, False):
            todo = shards
            for _ in range(MAX_ROUNDS):
                batches = [b for b in await self.read_all(todo, pending=pending) if b.entry_ids]
                for batch in batches:
                    await self.store_batch(batch)
                    await self.acknowledge(batch)
                    report.events += len(batch.entry_ids)
                    report.stored += len(batch.records)
                todo = [b.shard for b in batches if len(b.entry_ids) == self.read_count]
                if not todo:
                    break
        report.trimmed, report.fenced = await self.trim(held)
        if (self.passes % RETENTION_EVERY == 0 or self._retention_left) and self.leases.holds_first():
            report.deleted = await self.delete_expired_history()
        self.passes += 1
        return report

    async def epoch_matches(self) -> bool:
        """Whether this Redis and the store share one history. A Redis that lost its data
        (no epoch) beside a store that has one is not snapshotted: its empty directory
        would erase the store's copy. ``connecfy restore`` brings them together again."""
        live = await self.redis.get(keys.HISTORY_EPOCH)
        if self._stored_epoch is None:
            self._stored_epoch = await self.store.get_meta("epoch")
        if live is None:
            if self._stored_epoch is not None:
                log.error(
                    "Redis has no history epoch but the history store has one: Redis lost its "
                    "data; run connecfy restore. Snapshots are paused."
                )
                return False
            await self.redis.set(keys.HISTORY_EPOCH, uuid.uuid4().hex, nx=True)
            live = await self.redis.get(keys.HISTORY_EPOCH)
        live_text = _text(live)
        if self._stored_epoch is None:
            await self.store.set_meta("epoch", live_text)
            self._stored_epoch = live_text
        if self._stored_epoch != live_text:
            log.error(
                "the history store belongs to another Redis (epoch %s, Redis has %s): snapshots are paused",
                self._stored_epoch,
                live_text,
            )
            return False
        return True

    async def shards(self) -> list[str]:
        """Every shard (not only those held)."""
        return sorted([_text(tag) async for tag in self.redis.sscan_iter(keys.SHARDS)])

    # The steps of a pass, in order -----------------------------------------------------

    async def read(self, shard: str, *, pending: bool = False) -> Batch:
        """Entries of one shard's stream: those read before and not yet acknowledged
        (``pending``), else new ones; with the current records of their messages."""
        return (await self.read_all([shard], pending=pending))[0]

    async def read_all(self, shards: list[str], *, pending: bool = False) -> list[Batch]:
        """:meth:`read` for many shards in two round trips (streams, then records)."""
        await self._create_groups(shards)
        replies = await streams.read(
            self.redis,
            GROUP,
            CONSUMER,
            [self.broker.shard(s).events for s in shards],
            pending=pending,
            count=self.read_count,
        )
        batches = []
        for shard, entries in zip(shards, replies, strict=True):
            if entries is None:
                self._groups.discard(shard)  # Redis lost the group (flushed): made again next time
                entries = []
            batches.append(
                Batch(
                    shard,
                    [_text(entry_id) for entry_id, _ in entries],
                    # A device's change of presence (no message id) is for webhooks only.
                    message_ids=list(dict.fromkeys(_text(f[b"id"]) for _, f in entries if f and b"id" in f)),
                )
            )
        wanted = [b for b in batches if b.message_ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for batch in wanted:
                pipe.hmget(self.broker.shard(batch.shard).messages, batch.message_ids)
            raws = await pipe.execute()
        for batch, found in zip(wanted, raws, strict=True):
            # A message no longer in Redis was trimmed, which happens only once it is stored.
            batch.records = [msgspec.json.decode(raw, type=MessageRecord) for raw in found if raw is not None]
        return batches

    async def _create_groups(self, shards: list[str]) -> None:
        for shard in shards:
            if shard not in self._groups:
                await streams.ensure_group(self.redis, self.broker.shard(shard).events, GROUP)
                self._groups.add(shard)

    async def store_batch(self, batch: Batch) -> None:
        """Upsert the records, then note the finished ones for trimming."""
        now = self.broker.clock()
        await self.store.upsert_messages(batch.shard, batch.records, now)
        finished = {f"{r.account}:{r.id}:{len(r.timeline)}": r.updated for r in batch.records if r.status in FINISHED}
        if finished:
            await self.redis.zadd(self.broker.shard(batch.shard).trim, finished)

    async def acknowledge(self, batch: Batch) -> None:
        """The entries are stored: acknowledge them, and delete those the webhook
        dispatcher is done with too, so the stream stays short."""
        if not batch.entry_ids:
            return
        stream = self.broker.shard(batch.shard).events
        await self.redis.xack(stream, GROUP, *batch.entry_ids)
        await streams.release(self.redis, stream)

    async def trim(self, held: dict[str, int] | None = None) -> tuple[int, int]:
        """Remove finished, stored messages older than the hot retention window from the
        ``held`` shards (shard -> fencing token; the shards held now when None): how
        many, and how many shards refused (``trim-4.lua`` found another holder's token:
        those are left to it)."""
        held = self.leases.tokens() if held is None else held
        now = self.broker.clock()
        cutoff = now - self.settings.hot_retention_seconds * 1000
        trimmed = 0
        fenced: set[str] = set()
        todo = sorted(held)
        for _ in range(MAX_ROUNDS):
            async with self.redis.pipeline(transaction=False) as pipe:
                for shard in todo:
                    pipe.zrangebyscore(self.broker.shard(shard).trim, "-inf", cutoff, start=0, num=self.trim_batch)
                due = await pipe.execute()
            for shard, members in zip(todo, due, strict=True):
                by_account: dict[str, list[str]] = defaultdict(list)
                for member in members:
                    account, message_id, version = _text(member).split(":")
                    by_account[account] += [message_id, version]
                lease = self.leases.lease(held[shard])
                try:
                    for account, pairs in by_account.items():
                        trimmed += await self.broker.message_log.trim(shard, account, cutoff, pairs, lease=lease)
                except errors.LockLost:
                    fenced.add(shard)
            todo = [
                shard
                for shard, members in zip(todo, due, strict=True)
                if len(members) == self.trim_batch and shard not in fenced
            ]
            if not todo:
                break
        if fenced:
            log.warning(
                "%d shards passed to another process during a pass (held past the lease): not trimmed here",
                len(fenced),
            )
        return trimmed, len(fenced)

    # Less often ------------------------------------------------------------------------

    async def mirror_directory(self, shards: list[str] | None = None) -> None:
        """Copy the account, devices and API keys of ``shards`` (every shard when None)
        into the store."""
        for shard in await self.shards() if shards is None else shards:
            keyring = self.broker.shard(shard)
            device_ids = sorted(_text(d) for d in await self.redis.smembers(keyring.devices))
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keyring.account())
                pipe.hgetall(keyring.api_keys())
                for device_id in device_ids:
                    pipe.hgetall(keyring.device(device_id))
                account, key_records, *device_hashes = await pipe.execute()
            account_id = shard[2:] if shard.startswith("a:") else None
            await self.store.mirror_shard(
                shard,
                _fields(account) if account else None,
                account_id,
                {d: _fields(h) for d, h in zip(device_ids, device_hashes, strict=True) if h},
                {_text(k): _text(v) for k, v in key_records.items()},
            )

    async def delete_expired_history(self) -> int:
        """Delete history past its retention for up to ``retention_budget_s``; what is
        left is taken up on the next pass."""
        now = self.broker.clock()
        cutoff = now - self.settings.history_retention_days * 86_400_000
        deleted, done = await self.store.delete_older_than(cutoff, self.retention_batch, self.retention_budget_s)
        self._retention_left = not done
        return deleted
