"""Dashboard sessions: server-side, expiring; the cookie holds the id, Redis its hash."""

from __future__ import annotations

from broker import ids, keys
from broker.context import Context
from broker.records import Account, Session
from broker.redis_client import fields

MAX_SESSION_ID_CHARS = 128


class Sessions:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create(self, account: Account) -> Session:
        """A new session with its own CSRF token, expiring after the session TTL."""
        ttl_ms = self.ctx.settings.session_ttl_seconds * 1000
        session = Session(ids.secret_token(), account.id, ids.secret_token(), self.ctx.now() + ttl_ms)
        key = keys.session(ids.sha256_hex(session.id))
        async with self.ctx.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "account": account.id,
                    "csrf_token": session.csrf_token,
                    "expires_at_ms": session.expires_at_ms,
                },
            )
            pipe.pexpire(key, ttl_ms)
            await pipe.execute()
        return session

    async def get(self, session_id: str) -> Session | None:
        if not isinstance(session_id, str) or not 1 <= len(session_id) <= MAX_SESSION_ID_CHARS:
            return None
        raw = await self.ctx.redis.hgetall(keys.session(ids.sha256_hex(session_id)))
        if not raw:
            return None
        found = fields(raw)
        return Session(session_id, found["account"], found["csrf_token"], int(found["expires_at_ms"]))

    async def delete(self, session_id: str) -> None:
        if isinstance(session_id, str) and 1 <= len(session_id) <= MAX_SESSION_ID_CHARS:
            await self.ctx.redis.delete(keys.session(ids.sha256_hex(session_id)))
