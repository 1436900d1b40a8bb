"""Small builders shared by the broker tests: accounts with paired, online devices; what
waits in a webhook endpoint's lanes."""

from __future__ import annotations

import msgspec

from broker import Broker, keys
from broker.records import Account, RegisteredDevice
from broker.webhooks.endpoints import Endpoint
from broker.webhooks.events import QueuedEvent

TO = "+15551234567"


async def pair(
    broker: Broker, owner: Account | None, name: str = "Pixel 7", *, online: bool = True
) -> RegisteredDevice:
    """Pair a phone to ``owner`` (None: the platform pool) and, by default, heartbeat it."""
    code = await broker.devices.create_pairing_code(owner)
    device = await broker.devices.register(code.code, name)
    if online:
        await broker.presence.heartbeat(device.ref)
    return device


async def drain(broker: Broker, phone: RegisteredDevice, limit: int) -> list[str]:
    """Claim for ``phone`` until a claim hands it nothing; the ids it got, in order."""
    got: list[str] = []
    while batch := await broker.messages.claim(phone.ref, limit):
        got += [m.id for m in batch]
    return got


async def self_managed(
    broker: Broker, email: str = "owner@example.com", devices: int = 1
) -> tuple[Account, list[RegisteredDevice]]:
    account = await broker.accounts.create(email, "self_managed")
    return account, [await pair(broker, account, f"phone {i}") for i in range(devices)]


async def lane_events(broker: Broker, account_id: str, endpoint: Endpoint) -> list[QueuedEvent]:
    """The events waiting in a webhook endpoint's lanes, lane by lane, oldest first."""
    shard = broker.shard(keys.account_shard(account_id))
    found = []
    for lane in range(endpoint.lanes):
        found += [
            msgspec.json.decode(raw, type=QueuedEvent)
            for raw in await broker.redis.lrange(shard.webhook_lane(endpoint.id, lane), 0, -1)
        ]
    return found


async def redis_snapshot(redis) -> dict:
    """Every key with its type and content: to show that a refused call changed nothing.

    Keys that expire while being read, or within 100 ms, are left out: they are rate
    limiters whose bucket is full again, the same state as no key at all (with the
    tests' roomy limits a limiter lives about a millisecond)."""
    snapshot = {}
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "none" or 0 <= await redis.pttl(key) <= 100:
            continue
        if kind == "string":
            value = await redis.get(key)
            if value is None:
                continue
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = kind
        snapshot[key] = (kind, value)
    return snapshot
