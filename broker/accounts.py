"""Accounts: created at signup (or by ``connecfy operator create``), found by id or email."""

from __future__ import annotations

from typing import Any

import msgspec

from broker import errors, ids, keys
from broker.context import Context
from broker.pool_shards import PoolShards
from broker.records import Account, AccountType
from broker.redis_client import fields, hash_mapping, text
from broker.validation import check_country

MAX_EMAIL_CHARS = 254


class Accounts:
    def __init__(self, ctx: Context, pool_shards: PoolShards) -> None:
        self.ctx = ctx
        self.pool_shards = pool_shards

    async def create(
        self,
        email: str,
        account_type: AccountType,
        *,
        password_hash: str = "",
        operator: bool = False,
        daily_quota: int | None = None,
    ) -> Account:
        """A new account; EmailTaken when another has the address (in any case).

        The record is written before the email index that finds it, so an index entry
        always names a whole account: a crash in between leaves only a record nothing
        points at. Of two signups with one address, the index's SET NX picks one; the
        other's record is removed again."""
        if account_type not in ("self_managed", "api_only"):
            raise errors.InvalidInput("account_type must be self_managed or api_only", field="account_type")
        if not isinstance(email, str) or "@" not in email or len(email) > MAX_EMAIL_CHARS:
            raise errors.InvalidInput("email is not an email address", field="email")
        settings = self.ctx.settings
        if daily_quota is None:
            daily_quota = settings.quota_api_only if account_type == "api_only" else settings.quota_self_managed
        account_id = ids.short_id()
        account = Account(
            id=account_id,
            email=email.strip(),
            account_type=account_type,
            daily_quota=daily_quota,
            operator=operator,
            password_hash=password_hash,
            created_ms=self.ctx.now(),
            pool_home=self.pool_shards.home_for_sender(account_id) if account_type == "api_only" else "",
        )
        redis = self.ctx.redis
        shard = self.ctx.account_shard(account.id)
        record: dict[str, Any] = msgspec.to_builtins(account)
        record["operator"] = int(account.operator)
        await redis.hset(shard.account(), mapping=hash_mapping(record))
        if not await redis.set(keys.email_index(email), account.id, nx=True):
            await redis.delete(shard.account())
            raise errors.EmailTaken()
        await redis.sadd(keys.SHARDS, shard.tag)
        if operator:
            await redis.set(keys.OPERATOR, account.id, nx=True)  # the first one gets the pool's unclaimed SMS
        return account

    async def get(self, account_id: str) -> Account:
        raw = await self.ctx.redis.hgetall(self.ctx.account_shard(account_id).account())
        if not raw:
            raise errors.AccountNotFound()
        return account_from_hash(raw)

    async def set_default_country(self, account: Account, country: str | None) -> Account:
        """Set (or, with None or "", clear) the country the account's campaign files'
        national numbers are read in; InvalidInput for a code ``phonenumbers`` does not know."""
        key = self.ctx.account_shard(account.id).account()
        if not country:
            await self.ctx.redis.hdel(key, "default_country")
            return msgspec.structs.replace(account, default_country="")
        code = check_country(country)
        await self.ctx.redis.hset(key, "default_country", code)
        return msgspec.structs.replace(account, default_country=code)

    async def find_by_email(self, email: str) -> Account:
        account_id = await self.ctx.redis.get(keys.email_index(email))
        if account_id is None:
            raise errors.AccountNotFound()
        return await self.get(text(account_id))


def account_from_hash(raw: dict[Any, Any]) -> Account:
    """An account hash as read from Redis."""
    record: dict[str, Any] = dict(fields(raw))
    record["operator"] = record.get("operator") == "1"
    return msgspec.convert(record, Account, strict=False)
