"""``connecfy restore``: rebuild an empty Redis from the history store after a total loss.

Written back: accounts (password hashes and raised limits included) with their email
index, devices with their token index (the SHA-256 the store keeps, so phones go on
with their old tokens), API keys with their index, pool membership, the messages that
were not finished (queued ones back in their device queue or pool, scheduled ones in
their shard's schedule and its index, claimed ones with their lease, which the sweep
handles as usual), the inbox's threads (one per number that
wrote to an account, at its conversation's newest stored message), and the per-state
counters, counted by the database over every stored message. Finished messages stay in the store, where
the history pages read them; only unfinished ones are read, a page at a time.

Order: the unfinished messages, page by page, and the threads; last, in one pipeline, the counters and
pool state, then the account, device and API key records, the shards' membership of
``{shards}`` (which the sweeper and snapshotter go by) and the email, token and API
key indexes, so no login, phone or key reaches the restored data before its counters
are in place; then the epoch, which lets the snapshotter go on. Every write sets a
value the store decides, so a restore that stopped part-way (no epoch yet, only
shards the store knows) is simply run again.

Not written back: sessions (people log in again), pairing codes, idempotency keys,
today's quota use and limit requests.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from broker import keys
from broker.broker import Broker
from broker.errors import BrokerError
from broker.history import HistoryStore
from broker.redis_client import hash_mapping
from broker.redis_client import text as _text

CHUNK = 1_000


class RestoreRefused(BrokerError):
    """Redis is not empty, or the store holds nothing to restore."""

    code = "restore_refused"


class RestoreReport(msgspec.Struct):
    accounts: int = 0
    devices: int = 0
    api_keys: int = 0
    live_messages: int = 0
    stored_messages: int = 0
    threads: int = 0


async def restore(broker: Broker, store: HistoryStore, *, chunk: int = CHUNK) -> RestoreReport:
    redis = broker.redis
    if await redis.exists(keys.HISTORY_EPOCH):
        raise RestoreRefused("Redis is not empty: restore only rebuilds a Redis that lost everything")
    epoch = await store.get_meta("epoch")
    if epoch is None:
        raise RestoreRefused("the history store holds nothing to restore")
    accounts, devices, key_records = await store.directory()
    counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    stored_messages = 0
    for shard_tag, account, device, campaign, status, count in await store.message_counts():
        counts = counters[shard_tag]
        if status != "received":  # total counts what the account sent, as the scripts keep it
            counts[f"a:{account}:total"] += count
        counts[f"a:{account}:{status}"] += count
        if device:
            counts[f"d:{device}:{status}"] += count
        if campaign:
            counts[f"c:{campaign}:total"] += count
            counts[f"c:{campaign}:{status}"] += count
        stored_messages += count
    shards = {
        *broker.pool_shards.configured,
        *counters,
        *(tag for tag, _ in devices),
        *(keys.account_shard(account_id) for account_id in accounts),
        *(fields["pool_home"] for fields in accounts.values() if fields.get("pool_home")),
    }
    # No epoch and only shards the store knows: an empty Redis, or one a restore that
    # stopped part-way left behind, which this run completes (every write is idempotent).
    present = {_text(tag) async for tag in redis.sscan_iter(keys.SHARDS)}
    if not present <= shards:
        raise RestoreRefused("Redis is not empty: restore only rebuilds a Redis that lost everything")
    report = RestoreReport(len(accounts), len(devices), len(key_records), stored_messages=stored_messages)

    pool_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    async with redis.pipeline(transaction=False) as pipe:
        async for rows in store.unfinished_messages(chunk):
            for shard_tag, msg in rows:
                report.live_messages += 1
                shard = broker.shard(shard_tag)
                pipe.hset(shard.messages, msg.id, msgspec.json.encode(msg))
                pipe.zadd(shard.sent(msg.account), {msg.id: 0})
                if msg.status == "queued":
                    pipe.zadd(shard.expiry, {msg.id: msg.expires})
                    if msg.route == "device":
                        pipe.zadd(shard.queue, {keys.queue_member(msg.device, msg.id, msg.priority): 0})
                    else:
                        # Rows come oldest first: each sender's messages keep their order and
                        # the senders take turns, as the pool's fair queuing would have them.
                        turn = pool_counts[shard_tag][msg.account] = pool_counts[shard_tag][msg.account] + 1
                        pipe.zadd(shard.pool, {msg.id: turn})
                        if msg.priority == "high":
                            pipe.zadd(shard.pool_high, {keys.pool_high_member(msg.account, msg.id): 0})
                elif msg.status == "scheduled":  # released when due, as before the loss
                    due = msg.send_at or 0
                    pipe.zadd(shard.scheduled, {msg.id: due})
                    pipe.zadd(keys.SCHEDULED, {shard_tag: due}, lt=True)
                else:  # claimed: the lease goes on, and the sweep sees to it when it runs out
                    pipe.zadd(shard.leased, {f"{msg.device}:{msg.lease_until:015d}:{msg.id}": 0})
                    pipe.zadd(shard.lease_checks, {msg.id: msg.lease_until})
            await pipe.execute()
        # The inbox's threads, each at its newest stored message (the scripts kept them so).
        async for threads in store.threads(chunk):
            for shard_tag, account_id, counterpart, newest in threads:
                report.threads += 1
                shard = broker.shard(shard_tag)
                pipe.hset(shard.thread_newest(account_id), counterpart, newest)
                pipe.zadd(shard.threads(account_id), {f"{newest}|{counterpart}": 0})
            await pipe.execute()

    # The final step: counters and pool state first, then what lets anyone in: the
    # records (a worker that remembers a key's or token's index from before the loss
    # still finds nothing without them), the shards, the indexes.
    async with redis.pipeline(transaction=False) as pipe:
        for shard_tag, counts in counters.items():
            pipe.hset(broker.shard(shard_tag).counters, mapping=hash_mapping(counts))
        for shard_tag, senders in pool_counts.items():
            state = {"v": 0}
            for account, queued in senders.items():
                state[f"f:{account}"] = queued
                state[f"n:{account}"] = queued
            pipe.hset(broker.shard(shard_tag).pool_state, mapping=hash_mapping(state))
        for account_id, fields in accounts.items():
            pipe.hset(broker.ctx.account_shard(account_id).account(), mapping=hash_mapping(fields))
        for shard_tag, fields in devices:
            shard = broker.shard(shard_tag)
            pipe.hset(shard.device(fields["id"]), mapping=hash_mapping(fields))
            pipe.sadd(shard.devices, fields["id"])
        for account_id, record in key_records:
            key = msgspec.json.decode(record)
            pipe.hset(broker.ctx.account_shard(account_id).api_keys(), key["id"], record)
        pipe.sadd(keys.SHARDS, *sorted(shards))
        pipe.sadd(keys.POOL_SHARDS, *sorted(tag for tag in shards if keys.is_pool_shard(tag)))
        for account_id, fields in accounts.items():
            pipe.set(keys.email_index(fields["email"]), account_id)
        for shard_tag, fields in devices:
            pipe.set(keys.device_token_index(fields["token_sha256"]), f"{shard_tag}|{fields['id']}")
        for account_id, record in key_records:
            key = msgspec.json.decode(record)
            pipe.set(keys.api_key_index(key["sha256"]), f"{account_id}|{key['id']}")
        await pipe.execute()
    # Only once all of that is in: the snapshotter goes on (a failure above leaves no
    # epoch, so restore can be run again).
    await redis.set(keys.HISTORY_EPOCH, epoch)
    return report
