"""``connecfy restore``: rebuild an empty Redis from the history store after a total loss.

Written back: accounts (password hashes and raised limits included) with their email
index, devices with their token index (the SHA-256 the store keeps, so phones go on
with their old tokens), API keys with their index, pool membership, the messages that
were not finished (queued ones back in their device queue or pool, claimed ones with
their lease, which the sweep handles as usual), and the per-state counters, counted
from every stored message. Finished messages stay in the store, where the history
pages read them. Not written back: sessions (people log in again), pairing codes,
idempotency keys, today's quota use and limit requests.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from broker import keys
from broker.broker import Broker
from broker.errors import BrokerError
from broker.history import FINISHED, HistoryStore

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


async def restore(broker: Broker, store: HistoryStore) -> RestoreReport:
    redis = broker.redis
    if await redis.exists(keys.HISTORY_EPOCH) or await redis.scard(keys.SHARDS) > 1:
        raise RestoreRefused("Redis is not empty: restore only rebuilds a Redis that lost everything")
    epoch = await store.get_meta("epoch")
    if epoch is None:
        raise RestoreRefused("the history store holds nothing to restore")
    accounts, devices, key_records = await store.directory()
    report = RestoreReport(len(accounts), len(devices), len(key_records))
    async with redis.pipeline(transaction=False) as pipe:
        for account_id, fields in accounts.items():
            shard = broker.shard(keys.account_shard(account_id))
            pipe.hset(shard.account(), mapping=fields)
            pipe.set(keys.email_index(fields["email"]), account_id)
            pipe.sadd(keys.SHARDS, shard.tag)
        for shard_tag, fields in devices:
            shard = broker.shard(shard_tag)
            pipe.hset(shard.device(fields["id"]), mapping=fields)
            pipe.sadd(shard.devices, fields["id"])
            pipe.set(keys.device_token_index(fields["token_sha256"]), f"{shard_tag}|{fields['id']}")
            pipe.sadd(keys.SHARDS, shard_tag)
        for account_id, record in key_records:
            key = msgspec.json.decode(record)
            pipe.hset(broker.shard(keys.account_shard(account_id)).api_keys(), key["id"], record)
            pipe.set(keys.api_key_index(key["sha256"]), f"{account_id}|{key['id']}")
        await pipe.execute()

    counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pool_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pipe = redis.pipeline(transaction=False)
    for shard_tag, msg in await store.message_rows():
        report.stored_messages += 1
        shard = broker.shard(shard_tag)
        counts = counters[shard_tag]
        counts[f"a:{msg.account}:total"] += 1
        counts[f"a:{msg.account}:{msg.status}"] += 1
        if msg.device:
            counts[f"d:{msg.device}:{msg.status}"] += 1
        if msg.status in FINISHED:
            continue
        report.live_messages += 1
        pipe.hset(shard.messages, msg.id, msgspec.json.encode(msg))
        pipe.zadd(shard.sent(msg.account), {msg.id: 0})
        if msg.status == "queued":
            pipe.zadd(shard.expiry, {msg.id: msg.expires})
            if msg.route == "device":
                pipe.zadd(shard.queue, {f"{msg.device}:{msg.id}": 0})
            else:
                # Rows come oldest first: each sender's messages keep their order and the
                # senders take turns, as the pool's fair queuing would have them.
                turn = pool_counts[shard_tag][msg.account] = pool_counts[shard_tag][msg.account] + 1
                pipe.zadd(shard.pool, {msg.id: turn})
        else:  # claimed: the lease goes on, and the sweep sees to it when it runs out
            pipe.zadd(shard.leased, {f"{msg.device}:{msg.lease_until:015d}:{msg.id}": 0})
            pipe.zadd(shard.lease_checks, {msg.id: msg.lease_until})
        if len(pipe) >= CHUNK:
            await pipe.execute()
    for shard_tag, counts in counters.items():
        pipe.hset(broker.shard(shard_tag).counters, mapping=dict(counts))
        pipe.sadd(keys.SHARDS, shard_tag)
    for shard_tag, senders in pool_counts.items():
        state = {"v": 0}
        for account, queued in senders.items():
            state[f"f:{account}"] = queued
            state[f"n:{account}"] = queued
        pipe.hset(broker.shard(shard_tag).pool_state, mapping=state)
    pipe.set(keys.HISTORY_EPOCH, epoch)
    await pipe.execute()
    await pipe.reset()
    return report
