"""The Redis client every process of ours uses: redis-py's asyncio client whose
commands are packed by hiredis's C ``pack_command``, bounded in time, sent at most once,
and whose refusals are told apart from failures.

redis-py's asyncio connections pack each command in Python, one ``encode`` per
argument; a claim is a 25-argument EVALSHA, so packing alone was about a sixth of a
poll's CPU in the API worker. hiredis (already installed for its reply parser, through
``redis[hiredis]``) packs the same bytes in C. An argument hiredis does not take
(a memoryview, say) falls back to redis-py's own packing.

Time. A server process's client (:func:`redis_for`) gives each command, or each
pipeline, ``redis_timeout_ms`` all told: waiting for a free connection, connecting,
and the reply. Past it the command raises :class:`redis.exceptions.TimeoutError` (a
503 ``unavailable`` in the API), so a frozen Redis (stopped, or a dead host whose
packets vanish) costs a request that long and no more.

At most once. No command is retried: a command whose reply did not come may have run
(an EVALSHA enqueue that timed out may have queued its messages), so sending it again
could do its work twice. A connection the server closed while it sat in the pool
(a restarted Redis) is found and replaced when it is taken out, before anything is
sent on it. For the same reason the client sends no health-check PING ahead of a
command: without a retry it could only fail where the command would have failed, one
round trip later.

Refusals. Redis may answer and refuse: out of memory under ``maxmemory``, a read-only
replica, still loading its data, busy with a script past ``busy-reply-threshold``.
:func:`refusal` recognises each, whichever exception redis-py raised for it (Redis 6.2
wraps a refusal met inside a script in a generic "Error running script" reply, where
7.0 passes the refusal's own code on), and the client raises it as a
:class:`StoreRefused` with a machine code, so the API answers 503 with that code and
``Retry-After`` instead of a 500.

Replicas. :func:`replicated` runs commands whose writes a client is answered about
followed by ``WAIT``, in one round trip on one connection of the primary that holds
their slot (``WAIT`` counts the writes of the connection it is sent on), and raises
:class:`StoreNotReplicated` when fewer replicas than asked acknowledged them in time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError as RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from broker.settings import Settings

RedisClient = aioredis.Redis | RedisCluster
"""What the broker talks to: one Redis (or fakeredis) or a Redis Cluster."""
RedisPipeline = Pipeline | ClusterPipeline
"""A pipeline of either."""

T = TypeVar("T")


# Refusals -------------------------------------------------------------------------------


class StoreRefused(RedisError):
    """Redis answered, and refused the command for a state of its own that passes:
    nothing of the command was done (but see :class:`StoreNotReplicated`), and the same
    command may succeed later.

    ``code`` is the API's machine code, ``detail`` the sentence for clients,
    ``retry_after`` the seconds the API suggests waiting, and ``reply`` what Redis said
    (for the logs, never for clients)."""

    code = "unavailable"
    detail = "the message store cannot take requests now; try again shortly"
    retry_after = 2

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class StoreFull(StoreRefused):
    """OOM: ``maxmemory`` is reached and the policy evicts nothing (``noeviction``)."""

    code = "store_full"
    detail = "the message store is full and takes no new messages; try again later"
    retry_after = 30


class StoreReadOnly(StoreRefused):
    """READONLY (a replica), MISCONF (Redis cannot save to disk and stopped writes) or
    NOREPLICAS (fewer replicas than ``min-replicas-to-write``)."""

    code = "store_read_only"
    detail = "the message store takes no writes now; try again shortly"
    retry_after = 5


class StoreLoading(StoreRefused):
    """LOADING: Redis is reading its data from disk after a start."""

    code = "store_loading"
    detail = "the message store is starting up; try again shortly"
    retry_after = 5


class StoreBusy(StoreRefused):
    """BUSY (a script or function running past ``busy-reply-threshold``) or TRYAGAIN (a
    cluster moving the keys' slot)."""

    code = "store_busy"
    detail = "the message store is busy; try again shortly"
    retry_after = 2


class StoreDown(StoreRefused):
    """MASTERDOWN (a replica that lost its primary and serves no stale data) or
    CLUSTERDOWN: Redis answers but serves nothing; to clients it is unavailable."""


class StoreNotReplicated(StoreRefused):
    """``WAIT`` counted fewer replicas holding the write than
    ``CONNECFY_REDIS_WAIT_REPLICAS`` within the command's time limit. Unlike the other
    refusals the command did run, on the primary alone, where a failover could lose it;
    so the client is not told it succeeded. Its retry is safe: a send repeated with its
    ``Idempotency-Key`` gets the same ids (once replicas hold them), a repeated status
    report is the usual no-op, and the leases of a claim whose answer was this end at
    once, so the phone's next claim is handed the same messages again."""

    code = "store_not_replicated"
    detail = "the message store could not copy the change to its replicas in time; try again shortly"
    retry_after = 5

    def __init__(self, reply: str, answers: Sequence[Any] = ()) -> None:
        super().__init__(reply)
        # The replies of the commands that ran on the primary alone (a claim's: see
        # Messages.claim_tasks, which ends the leases its phone never heard of).
        self.answers = list(answers)


# The exception classes redis-py raises for a refusal (checked in order: MasterDownError
# is a ClusterDownError), then the codes of those it raises as a plain ResponseError.
_REFUSED_TYPES: tuple[tuple[type[RedisError], type[StoreRefused]], ...] = (
    (OutOfMemoryError, StoreFull),
    (ReadOnlyError, StoreReadOnly),
    (BusyLoadingError, StoreLoading),
    (TryAgainError, StoreBusy),
    (ClusterDownError, StoreDown),
)
_REFUSED_CODES: dict[str, type[StoreRefused]] = {
    "OOM": StoreFull,
    "READONLY": StoreReadOnly,
    "MISCONF": StoreReadOnly,
    "NOREPLICAS": StoreReadOnly,
    "LOADING": StoreLoading,
    "BUSY": StoreBusy,
    "TRYAGAIN": StoreBusy,
    "MASTERDOWN": StoreDown,
    "CLUSTERDOWN": StoreDown,
}
# Redis 6.2 reports a refusal met by redis.call inside a script as
# "ERR Error running script (call to f_<sha>): @user_script:438: @user_script: 438:
# -OOM command not allowed when used memory > 'maxmemory'." (a ResponseError).
_SCRIPT_ERROR = "Error running script"
_REFUSED_IN_SCRIPT = re.compile(r"-(" + "|".join(_REFUSED_CODES) + r")\b")


def refusal(exc: BaseException) -> StoreRefused | None:
    """``exc`` as the refusal it is, or None when it is no refusal (a lost connection, a
    timeout, a script's own error reply, a programming error)."""
    if isinstance(exc, StoreRefused):
        return exc
    if not isinstance(exc, ResponseError | BusyLoadingError):
        return None
    reply = str(exc)
    for raised, refused in _REFUSED_TYPES:
        if isinstance(exc, raised):
            return refused(reply)
    kind = _REFUSED_CODES.get(reply.partition(" ")[0])
    if kind is None and reply.startswith(_SCRIPT_ERROR):
        found = _REFUSED_IN_SCRIPT.search(reply)
        if found:
            kind = _REFUSED_CODES[found[1]]
        elif "command not allowed when used memory" in reply:
            kind = StoreFull
    return None if kind is None else kind(reply)


RECANCEL_S = 0.1
"""How often a command past its time limit is cancelled again, should something below
have swallowed the cancellation: Python 3.11's ``asyncio.wait_for`` (redis-py sends every
command through it) loses a cancellation that arrives as the send completes, and the
command then waits for its socket timeout instead."""


class _Deadline:
    """Cancel the current task ``seconds`` from now, and again every :data:`RECANCEL_S`
    until :meth:`close`; afterwards, whether it fired and it alone cancelled the task.
    (``asyncio.timeout`` cancels once: a swallowed cancellation is lost.)"""

    __slots__ = ("cancels", "loop", "task", "timer", "was_cancelling")

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a Redis command runs in a task"
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.was_cancelling = task.cancelling()
        self.cancels = 0
        self.timer = self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.cancels += 1
        self.task.cancel()
        self.timer = self.loop.call_later(RECANCEL_S, self._expire)

    def close(self) -> bool:
        """Stop (again: a no-op); True when the deadline passed and no one else
        cancelled the task."""
        self.timer.cancel()
        fired, self.cancels = self.cancels, 0
        for _ in range(fired):
            self.task.uncancel()
        return fired > 0 and self.task.cancelling() <= self.was_cancelling


async def _settled(call: Awaitable[T], seconds: float | None) -> T:
    """``call``'s result, within ``seconds`` (None: no limit of its own), a refusal
    raised as its :class:`StoreRefused`."""
    deadline = None if seconds is None else _Deadline(seconds)
    try:
        return await call
    except asyncio.CancelledError:
        if deadline is not None and deadline.close():
            raise RedisTimeoutError(f"Redis did not answer within {seconds:g} s") from None
        raise
    except RedisError as exc:
        refused = refusal(exc)
        if refused is None or refused is exc:
            raise
        raise refused from exc
    finally:
        if deadline is not None:
            deadline.close()


class StorePipeline(Pipeline):
    """redis-py's pipeline, bounded in time and recognising refusals like
    :class:`StoreClient`: its ``execute`` and each command run at once (those of a
    WATCH) count as one command."""

    command_timeout: float | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await _settled(super().execute(raise_on_error), self.command_timeout)

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        call = super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await _settled(call, self.command_timeout)


class StoreClient(aioredis.Redis):
    """redis-py's client, each command bounded by ``command_timeout`` seconds (None:
    only by the socket timeouts) and a refusal raised as its :class:`StoreRefused`."""

    command_timeout: float | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        call = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await _settled(call, self.command_timeout)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> StorePipeline:
        pipe = StorePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.command_timeout = self.command_timeout
        return pipe


class StoreClusterPipeline(ClusterPipeline):
    """redis-py's cluster pipeline, its ``execute`` bounded in time and recognising
    refusals like :class:`StorePipeline`'s."""

    command_timeout: float | None = None

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        return await _settled(super().execute(raise_on_error, allow_redirections), self.command_timeout)


class StoreCluster(RedisCluster):
    """redis-py's cluster client, each command bounded and a refusal raised as its
    :class:`StoreRefused`, like :class:`StoreClient`. A MOVED or ASK reply is followed
    (the command did not run there); a timeout or a lost connection is not retried."""

    command_timeout: float | None = None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _settled(super().execute_command(*args, **kwargs), self.command_timeout)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> StoreClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint is not taken by a cluster pipeline")
        pipe = StoreClusterPipeline(self, transaction)  # type: ignore[abstract]
        pipe.command_timeout = self.command_timeout
        return pipe


async def check_writes(redis: RedisClient, key: str) -> None:
    """Raise :class:`StoreRefused` if Redis refuses writes now (full, read-only,
    loading...), found without writing: ``SETRANGE key 0 ""`` is a write, checked by
    Redis like any other (memory, role, persistence), that changes nothing whether
    ``key`` is absent or holds a string (a key of another type answers WRONGTYPE, which
    also means writes are taken)."""
    try:
        await redis.setrange(key, 0, "")
    except RedisError as exc:
        refused = refusal(exc)
        if refused is exc:
            raise
        if refused is not None:
            raise refused from exc
        if not (isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE")):
            raise


# Waiting for replicas -------------------------------------------------------------------

WAIT_KEPT_BACK_S = 0.2
WAIT_KEPT_BACK_SHARE = 0.1
"""What of a call's time limit is kept back from ``WAIT`` (the larger of the two), so
that "too few replicas" comes back as itself before the limit turns the call into a
timeout: Redis looks at a blocked ``WAIT``'s time on its clock tick (every 100 ms at the
default ``hz 10``), so ``WAIT`` answers up to a tick late, then the answer travels."""

REDIRECTS = 5
"""MOVED or ASK replies one replicated call follows on a cluster (each means the commands
did not run where they were sent)."""

Command = Sequence[EncodableT]


async def replicated(
    redis: RedisClient, key: str, commands: Sequence[Command], replicas: int, limit: float
) -> list[Any]:
    """Run ``commands`` (each in ``key``'s hash slot), then ``WAIT replicas <ms>``, in one
    round trip on one connection of the primary holding ``key``; their replies.

    ``WAIT`` counts the writes of the connection it is sent on, hence the one connection
    (a pool or a cluster client would send a command of its own anywhere). The call is
    bounded by the client's ``command_timeout`` (``limit`` seconds when it has none) and
    sent once, like any command; ``WAIT`` gets what is left of that time, less what
    :data:`WAIT_KEPT_BACK_S` says. The first error reply of a command is raised (a
    refusal as its :class:`StoreRefused`); else :class:`StoreNotReplicated` when ``WAIT``
    counted fewer than ``replicas``. On a cluster, a MOVED or ASK reply to the first
    command is followed (nothing ran there), and a lost connection asks redis-py for a
    fresh slot map, which the next command loads: a promoted replica is found so."""
    seconds = getattr(redis, "command_timeout", None) or limit
    kept_back = max(WAIT_KEPT_BACK_S, WAIT_KEPT_BACK_SHARE * seconds)
    loop = asyncio.get_running_loop()
    started = loop.time()

    def wait() -> Command:
        left = seconds - kept_back - (loop.time() - started)
        return ("WAIT", replicas, max(1, int(left * 1000)))

    async def run() -> list[Any]:
        if isinstance(redis, RedisCluster):
            replies = await _on_slot_primary(redis, key, commands, wait)
        else:
            replies = await _on_one_connection(redis, commands, wait)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        *answers, acked = replies
        if int(acked) < replicas:
            raise StoreNotReplicated(
                f"WAIT {replicas}: {acked} replica(s) acknowledged within {loop.time() - started:.3f} s", answers
            )
        return answers

    return await _settled(run(), seconds)


async def _exchange(connection: AbstractConnection, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` at once on ``connection`` and read every reply, an error reply
    as its exception. A failure part way closes the connection, so that no reply is left
    on it for its next user."""
    await connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    try:
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    return replies


async def _on_one_connection(
    redis: aioredis.Redis, commands: Sequence[Command], wait: Callable[[], Command]
) -> list[Any]:
    """One Redis: ``commands`` and the ``WAIT`` on one connection of its pool (taken out,
    and checked alive, as any command's is; ``WAIT``'s time reckoned once it is)."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await _exchange(connection, [*commands, wait()])
    finally:
        await pool.release(connection)


async def _on_slot_primary(
    cluster: RedisCluster, key: str, commands: Sequence[Command], wait: Callable[[], Command]
) -> list[Any]:
    """A Redis Cluster: ``commands`` and the ``WAIT`` on one connection of the primary
    that owns ``key``'s slot, as redis-py's cluster pipeline sends the commands of one
    node (``ClusterNode.execute_pipeline``; the pipeline itself would route the keyless
    ``WAIT`` to a node of its own choosing). Redirections and lost nodes are handled as
    redis-py's cluster client handles them for one command, without its retries."""
    await cluster.initialize()  # runs the slot map refresh an earlier failure asked for, once due
    slot = cluster.keyslot(key)
    node = cluster.nodes_manager.get_node_from_slot(slot)
    asking = False
    for _ in range(REDIRECTS + 1):
        sent: list[Command] = []
        answers: list[int] = []  # where each reply wanted is among those of ``sent``
        for command in commands:
            if asking:
                sent.append(("ASKING",))  # lets the one command after it in
            answers.append(len(sent))
            sent.append(command)
        answers.append(len(sent))
        sent.append(wait())
        stack = [PipelineCommand(i, *command) for i, command in enumerate(sent)]
        try:
            await node.execute_pipeline(stack)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            _node_failed(cluster, node, exc)
            raise
        replies = [stack[i].result for i in answers]
        first = replies[0]
        if isinstance(first, AskError):  # MOVED is an AskError too
            if not first.host:  # a node of unknown endpoint names only the port
                first.host = node.host
                first.node_addr = first.host, first.port
            if isinstance(first, MovedError):
                await cluster.nodes_manager.move_slot(first)
                node = cluster.nodes_manager.get_node_from_slot(slot)
                asking = False
            else:
                target = cluster.get_node(*cluster.nodes_manager.remap_host_port(first.host, first.port))
                if target is None:
                    raise first
                node, asking = target, True
            continue
        for reply in replies:
            if isinstance(reply, RedisConnectionError | RedisTimeoutError):
                _node_failed(cluster, node, reply)
            elif isinstance(reply, ClusterDownError):
                cluster._request_refresh()
        return replies
    raise RedisClusterException(f"more than {REDIRECTS} redirections for slot {slot}")


def _node_failed(cluster: RedisCluster, node: ClusterNode, exc: Exception) -> None:
    """What redis-py's cluster client does when a command to ``node`` loses its
    connection: ask for the slot map again (the next command loads it) naming ``node`` as
    the one that failed, so that a replica promoted in its place is found. A pool with no
    free connection is no failure of the node."""
    if isinstance(exc, RedisCluster.NOT_NODE_FAILURE_ERRORS):
        return
    cluster.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
    cluster._request_refresh(last_failed_node_name=node.name)


# The client -----------------------------------------------------------------------------


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


def with_hiredis_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client`` with its pool's connection class packing through hiredis."""
    pool = client.connection_pool
    base: type[AbstractConnection] = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(base.__name__, (_HiredisPacking, base), {})
    return client


def connect(
    url: str,
    *,
    max_connections: int | None = None,
    pool_timeout: float = 5.0,
    command_timeout: float | None = None,
    **options: Any,
) -> StoreClient:
    """A :class:`StoreClient` for ``url`` (``redis.asyncio.from_url(url, **options)``),
    packing with hiredis, retrying nothing.

    With ``max_connections`` the pool is a blocking one: a request that finds all of
    them busy waits up to ``pool_timeout`` seconds for one instead of failing at once.
    (redis-py's default pool holds 100 and refuses the 101st concurrent command with
    "Too many connections": under load that was a burst of 503s from a healthy Redis.)
    ``command_timeout`` bounds each command all told, the wait for a connection too."""
    options.setdefault("retry", Retry(NoBackoff(), 0))
    if max_connections is None:
        pool = aioredis.ConnectionPool.from_url(url, **options)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **options
        )
    client = cast(StoreClient, StoreClient.from_pool(pool))  # from_pool makes a cls
    client.command_timeout = command_timeout
    with_hiredis_packing(client)
    return client


def connect_cluster(
    url: str,
    *,
    max_connections: int | None = None,
    command_timeout: float | None = None,
    **options: Any,
) -> StoreCluster:
    """A :class:`StoreCluster` that finds the whole cluster from the node at ``url``,
    packing with hiredis like :func:`connect`, retrying nothing. ``max_connections`` is
    per node; a command finding all of a node's busy fails at once (a 503), where the
    single-node pool waits."""
    options.setdefault("retry", Retry(NoBackoff(), 0))
    options.pop("pool_timeout", None)
    if max_connections is not None:
        options["max_connections"] = max_connections
    client = cast(StoreCluster, StoreCluster.from_url(url, **options))
    client.command_timeout = command_timeout
    # Every node's connections are made with the manager's connection class: hiredis
    # packing for the nodes found later, and for the startup node already made.
    base: type[AbstractConnection] = client.nodes_manager.connection_kwargs.get("connection_class") or Connection
    packing = type(base.__name__, (_HiredisPacking, base), {})
    client.nodes_manager.connection_kwargs["connection_class"] = packing
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = packing
    return client


async def is_cluster(url: str, timeout: float = 2.0) -> bool:
    """Whether the Redis at ``url`` is a node of a Redis Cluster (``cluster_enabled``),
    asked with one short-lived connection. A unix socket is never one."""
    if url.startswith("unix://"):
        return False
    probe = aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        info = await probe.info("cluster")
    finally:
        await probe.aclose()
    return bool(int(info.get("cluster_enabled", 0)))


async def open_redis(url: str, **options: Any) -> RedisClient:
    """The client for ``url``: a :class:`StoreCluster` when it names a node of a Redis
    Cluster (any node will do), else a :class:`StoreClient` (:func:`connect`). Asks the
    node once, so Redis must answer: raises while it is away."""
    if await is_cluster(url):
        return connect_cluster(url, **options)
    return connect(url, **options)


def text(value: Any) -> str:
    """A Redis reply value (bytes, or already text) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_mapping(values: Mapping[str, EncodableT]) -> dict[FieldT, EncodableT]:
    """``values`` as redis-py's ``HSET ... mapping=`` is typed to take them."""
    return {name: value for name, value in values.items()}


def fields(raw: dict[Any, Any]) -> dict[str, str]:
    """A Redis hash reply as text."""
    return {text(k): text(v) for k, v in raw.items()}


async def redis_for(settings: Settings) -> RedisClient:
    """The Redis client of a server process: each command (or pipeline) gets
    ``redis_timeout_ms`` all told and is sent once; a connection Redis closed is
    replaced when next taken from the pool, so the client reconnects by itself. A
    ``REDIS_URL`` naming a node of a Redis Cluster gives the cluster client."""
    if not settings.redis_url:
        raise ValueError("no REDIS_URL to connect to")
    timeout = settings.redis_timeout_ms / 1000
    # redis-py's own limits only back the command's up, for the rare wait outside a
    # command (a pipeline's UNWATCH when it is put away): the command's comes first.
    backstop = timeout + 1
    return await open_redis(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        command_timeout=timeout,
        pool_timeout=backstop,
        socket_connect_timeout=backstop,
        socket_timeout=backstop,
        retry=Retry(NoBackoff(), 0),
    )


REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
"""Redis did not answer: refused or lost connections, and timeouts."""
REDIS_AWAY = (*REDIS_UNREACHABLE, StoreRefused)
"""Redis cannot serve now, unreachable or refusing: a later try may succeed."""


class PassLog:
    """How a background loop (sweeper, snapshotter, webhook dispatcher) reports its
    failed passes: Redis being away or refusing is one warning when it starts and one
    line when it is over, not a traceback every pass; any other failure is logged with
    its traceback."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.away = False

    def failed(self, exc: BaseException) -> None:
        refused = refusal(exc)
        if refused is not None or isinstance(exc, REDIS_AWAY):
            if not self.away:
                if refused is not None:
                    self.log.warning("%s paused: Redis refuses (%s: %s)", self.what, refused.code, refused.reply)
                else:
                    self.log.warning("%s paused: Redis is unreachable (%s)", self.what, exc)
            self.away = True
        else:
            self.log.error("%s failed", self.what, exc_info=exc)

    def ok(self) -> None:
        if self.away:
            self.log.warning("%s resumed: Redis is back", self.what)
            self.away = False
