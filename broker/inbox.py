"""The inbox: which received SMS the account has not seen yet.

Each account keeps one hash in its own shard (``{a:<account>}:inbox-seen``): when it
last opened the inbox (``at``, ms) and how many SMS it had received by then
(``received``, its ``a:<account>:received`` counter, which only ever grows). What it has
not seen is the counter now less that, one read of each, whatever the history's size:
the navigation shows it on every page. Not restored after a loss of Redis: the
account's received SMS then all count as new until it opens the inbox again.
"""

from __future__ import annotations

import msgspec

from broker import keys
from broker.context import Context
from broker.records import Account
from broker.redis_client import text


class InboxVisit(msgspec.Struct, frozen=True):
    previous_ms: int  # when the inbox was opened before this visit; 0: never
    received: int  # SMS received in all, as counted at this visit


class Inbox:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _keys(self, account: Account) -> tuple[str, str, str]:
        """The counters hash holding the account's received count, that field, and the
        account's inbox-seen hash."""
        counters = self.ctx.shard(account.shard).counters
        seen = self.ctx.shard(keys.account_shard(account.id)).inbox_seen()
        return counters, f"a:{account.id}:received", seen

    async def unread(self, account: Account) -> int:
        """SMS received since the account last opened the inbox."""
        counters, field, seen = self._keys(account)
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hget(counters, field)
            pipe.hget(seen, "received")
            received, known = await pipe.execute()
        return max(0, int(received or 0) - int(known or 0))

    async def open(self, account: Account) -> InboxVisit:
        """The account opens the inbox: what it received so far counts as seen. Call it
        before reading the threads to show: an SMS that arrives in between is then shown
        and still counts as new, never the other way round."""
        counters, field, seen = self._keys(account)
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hget(counters, field)
            pipe.hget(seen, "at")
            received, previous = await pipe.execute()
        count = int(received or 0)
        await self.ctx.redis.hset(seen, mapping={"at": self.ctx.now(), "received": count})
        return InboxVisit(int(text(previous)) if previous is not None else 0, count)
