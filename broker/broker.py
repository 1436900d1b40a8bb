"""The broker: the services over one Redis (or Redis Cluster), made together.

Each concept is a service of its own, all standing on one :class:`~broker.context.Context`
(client, scripts, settings, clock, shard keys):

============  =====================================================================
pool_shards   the platform pool's shards: homes, claim visits (:mod:`broker.pool_shards`)
accounts      signup and lookups (:mod:`broker.accounts`)
sessions      dashboard sessions (:mod:`broker.sessions`)
api_keys      send-only keys (:mod:`broker.api_keys`)
devices       pairing, registration, tokens, the device list (:mod:`broker.devices`)
presence      heartbeats, online, changes of presence (:mod:`broker.presence`)
messages      queue, claim, report, cancel (:mod:`broker.messages`)
message_log   reads of messages, counts, stats, trim (:mod:`broker.message_log`)
limits        rate limiter, account limits and requests (:mod:`broker.limits`)
locks         the background jobs' locks with fencing tokens (:mod:`broker.locks`)
sweeper       expiry, lost devices, pool returns (:mod:`broker.sweeper`)
webhooks      an account's webhook endpoints (:mod:`broker.webhooks.endpoints`)
suppressions  the numbers a sender may not message (:mod:`broker.suppressions`)
inbound       the SMS phones receive (:mod:`broker.inbound`)
inbox         which received SMS the account has not seen (:mod:`broker.inbox`)
wakeups       this process's wake-up subscribers and waits (:mod:`broker.wakeups`)
long_poll     claims that wait for work (:mod:`broker.long_poll`)
schedule      the release of scheduled messages when due (:mod:`broker.schedule`)
campaigns     bulk sends from a CSV file (:mod:`broker.campaigns`)
============  =====================================================================

Scripts never read the clock: the context's clock gives every call its time (tests move
it by hand).
"""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from broker import keys
from broker.accounts import Accounts
from broker.api_keys import ApiKeys
from broker.campaigns import Campaigns
from broker.context import Clock, Context, wall_clock_ms
from broker.devices import Devices
from broker.gauges import Gauges, read_gauges
from broker.history import HistoryStore
from broker.inbound import Inbound
from broker.inbox import Inbox
from broker.limits import AccountLimits
from broker.locks import Locks
from broker.long_poll import LongPoll
from broker.message_log import MessageLog
from broker.messages import Messages
from broker.pool_shards import PoolShards
from broker.presence import Presence
from broker.redis_client import RedisClient, check_writes
from broker.schedule import Schedule
from broker.scripts import ScriptRegistry
from broker.send_windows import SendWindows
from broker.sessions import Sessions
from broker.settings import Settings
from broker.suppressions import Suppressions
from broker.sweeper import Sweeper
from broker.wakeups import Wakeups
from broker.webhooks.endpoints import WebhookEndpoints


class Broker:
    def __init__(
        self,
        redis: RedisClient,
        settings: Settings | None = None,
        scripts: ScriptRegistry | None = None,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.ctx = ctx = Context(redis, settings or Settings(), scripts or ScriptRegistry(), clock)
        self.pool_shards = PoolShards(ctx)
        self.accounts = Accounts(ctx, self.pool_shards)
        self.sessions = Sessions(ctx)
        self.api_keys = ApiKeys(ctx)
        self.devices = Devices(ctx, self.pool_shards)
        self.presence = Presence(ctx)
        self.limits = AccountLimits(ctx, self.accounts)
        self.message_log = MessageLog(ctx, self.devices)
        self.send_windows = SendWindows(ctx)
        self.messages = Messages(ctx, self.limits, self.message_log, self.pool_shards, self.send_windows)
        self.locks = Locks(ctx)
        self.sweeper = Sweeper(ctx, self.locks)
        self.webhooks = WebhookEndpoints(ctx)
        self.suppressions = Suppressions(ctx)
        self.inbound = Inbound(ctx, self.pool_shards)
        self.inbox = Inbox(ctx)
        self.wakeups = Wakeups(ctx)
        self.long_poll = LongPoll(ctx, self.messages, self.pool_shards, self.wakeups)
        self.schedule = Schedule(ctx)
        self.campaigns = Campaigns(ctx, self.accounts, self.limits, self.messages)

    # The context, for the background jobs and tests ------------------------------------

    @property
    def redis(self) -> RedisClient:
        return self.ctx.redis

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def scripts(self) -> ScriptRegistry:
        return self.ctx.scripts

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    def shard(self, tag: str) -> keys.ShardKeys:
        return self.ctx.shard(tag)

    # Start-up and health ------------------------------------------------------------------

    async def start(self) -> None:
        """Load every script (a broken one fails here) and register the platform pool's
        shards, unless they are already: a full Redis refuses even a write that changes
        nothing, and a worker starting then should answer its 503s rather than fail to
        start."""
        await self.ctx.scripts.load(self.ctx.redis)
        await self.pool_shards.register()

    async def ready(self) -> None:
        """Check that Redis answers, takes writes and holds every script, loading any it
        lost (as after a restart without persistence): what ``/readyz`` reports. Raises
        while Redis is away, and :class:`~broker.redis_client.StoreRefused` while it
        refuses writes (full, read-only, loading, busy)."""
        redis = self.ctx.redis
        if isinstance(redis, RedisCluster):
            # Every primary must answer and hold every script (SCRIPT EXISTS asks each
            # primary; a promoted replica starts without them and loads them here).
            await redis.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await redis.ping()
        await check_writes(redis, keys.HISTORY_EPOCH)
        scripts = self.ctx.scripts
        loaded = await redis.script_exists(*(s.sha for s in scripts.scripts.values()))
        if not all(loaded):
            await scripts.load(redis)

    async def close(self) -> None:
        """End every wait, and close the wake-up subscribers and the Redis client's
        connections (the broker is done with)."""
        await self.wakeups.close()
        await self.ctx.redis.aclose()

    async def gauges(self) -> Gauges:
        """Queue depths and devices online, for ``/metrics``."""
        return await read_gauges(self.ctx)

    @property
    def history(self) -> HistoryStore | None:
        """The history store, when attached: reads of messages no longer in Redis go there."""
        return self.message_log.history

    @history.setter
    def history(self, store: HistoryStore | None) -> None:
        self.message_log.history = store
