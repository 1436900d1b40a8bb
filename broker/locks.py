"""Locks for the one-at-a-time background jobs (sweeper, snapshotter, webhook delivery):
taken, renewed and released each in one script, with a fencing token.

A holder takes a lock for a lease; if it stalls past the lease (a long GC pause, a
frozen host) another holder takes the lock with a higher token, and the stale holder's
renew, release and :meth:`Locks.check` are all refused, so it learns it lost the lock
instead of extending or dropping the new holder's.
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


class Lease:
    """One holder's hold on one lock across the passes of a background loop: each pass
    calls :meth:`hold`, which renews the lease or, once it was lost, tries to take the
    lock afresh (with a new token)."""

    def __init__(self, locks: Locks, lock: str, holder: str, lease_ms: int) -> None:
        self.locks = locks
        self.lock = lock
        self.holder = holder
        self.lease_ms = lease_ms
        self.token: int | None = None

    async def hold(self) -> bool:
        """Whether this holder has the lock for another lease from now."""
        if self.token is not None and await self.locks.renew(self.lock, self.holder, self.token, self.lease_ms):
            return True
        self.token = await self.locks.acquire(self.lock, self.holder, self.lease_ms)
        return self.token is not None

    async def check(self) -> None:
        """LockLost unless this lease still holds the lock with its token: called before a
        step a stale holder must not take (the snapshotter's trim)."""
        if self.token is None:
            raise errors.LockLost(self.lock)
        await self.locks.check(self.lock, self.token)

    async def release(self) -> None:
        if self.token is not None:
            await self.locks.release(self.lock, self.holder, self.token)
            self.token = None
