"""Locks with a fencing token, each taken, renewed and released in one script: what the
shards' background leases are made of (:mod:`broker.leases`, which calls the same
scripts in pipelines, one call per shard).

A holder takes a lock for a lease; if it stalls past the lease (a long GC pause, a
frozen host) another holder takes the lock with a higher token, and the stale holder's
renew, release and :meth:`Locks.check` are all refused, so it learns it lost the lock
instead of extending or dropping the new holder's. A write that a stale holder must not
make checks the token inside its own script, in the same atomic call (the trim, the
webhook lanes): :meth:`Locks.check` is only a look, which may be stale a moment later.
"""

from __future__ import annotations

from broker import errors, keys
from broker.context import Context
from broker.redis_client import text


class Locks:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def acquire(self, lock: str, holder: str, lease_ms: int) -> int | None:
        """The fencing token when ``holder`` has ``lock`` (newly, or renewed when it held
        it already), None while another holder's lease runs."""
        if "|" in holder:
            raise ValueError("a lock holder's name has no '|'")
        token = int(await self.ctx.call("lock-acquire", [lock, keys.fence(lock)], [holder, lease_ms]))
        return token or None

    async def renew(self, lock: str, holder: str, token: int, lease_ms: int) -> bool:
        """Start the lease again; False when the lock is no longer this holder's with this token."""
        return bool(int(await self.ctx.call("lock-renew", [lock], [holder, token, lease_ms])))

    async def release(self, lock: str, holder: str, token: int) -> bool:
        """Let go of the lock; False (and nothing changed) when it is not this holder's with this token."""
        return bool(int(await self.ctx.call("lock-release", [lock], [holder, token])))

    async def check(self, lock: str, token: int) -> None:
        """LockLost unless ``token`` is the lock's current fencing token."""
        current = await self.ctx.redis.get(lock)
        if current is None or text(current).rpartition("|")[2] != str(token):
            raise errors.LockLost(lock)
