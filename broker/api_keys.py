"""Send-only API keys: made (the secret shown once), listed, revoked, and resolved to
their account on every external send."""

from __future__ import annotations

import msgspec

from broker import errors, ids, keys
from broker.accounts import account_from_hash
from broker.context import Context
from broker.credential_cache import CredentialCache
from broker.records import Account, ApiKeyInfo, CreatedApiKey
from broker.redis_client import text
from broker.validation import check_name

LAST_USED_PRECISION_MS = 60_000
"""A key's last use is written at most this often per key and process."""
MAX_KEY_CHARS = 128


class ApiKeys:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._named: CredentialCache[tuple[str, str]] = CredentialCache()  # key hash -> (account id, key id)
        self._last_written: dict[str, int] = {}  # key id -> when its last use was written

    async def create(self, account: Account, name: str) -> CreatedApiKey:
        """A send-only key; the secret is returned this once and stored as SHA-256."""
        name = check_name(name, "name")
        info = ApiKeyInfo(ids.short_id(), name, self.ctx.now())
        secret = ids.secret_token()
        shard = self.ctx.account_shard(account.id)
        secret_sha = ids.sha256_hex(secret)
        record = {**msgspec.to_builtins(info), "sha256": secret_sha}
        await self.ctx.redis.hset(shard.api_keys(), info.id, msgspec.json.encode(record))
        await self.ctx.redis.set(keys.api_key_index(secret_sha), f"{account.id}|{info.id}")
        return CreatedApiKey(info, secret)

    async def list_for(self, account: Account) -> list[ApiKeyInfo]:
        shard = self.ctx.account_shard(account.id)
        raw = await self.ctx.redis.hgetall(shard.api_keys())
        used = {text(k): int(v) for k, v in (await self.ctx.redis.hgetall(shard.api_keys_last_used())).items()}
        found = [msgspec.json.decode(v, type=ApiKeyInfo) for v in raw.values()]
        return sorted(
            (msgspec.structs.replace(k, last_used_ms=used.get(k.id)) for k in found), key=lambda k: (k.created_ms, k.id)
        )

    async def revoke(self, account: Account, key_id: str) -> None:
        """Revoke a key: it stops working at once. Another account's key is not found."""
        shard = self.ctx.account_shard(account.id)
        if not ids.is_plain_id(key_id):
            raise errors.ApiKeyNotFound()
        redis = self.ctx.redis
        raw = await redis.hget(shard.api_keys(), key_id)
        if raw is None:
            raise errors.ApiKeyNotFound()
        # The record goes first: find_account refuses a key without one.
        await redis.hdel(shard.api_keys(), key_id)
        await redis.hdel(shard.api_keys_last_used(), key_id)
        await redis.delete(keys.api_key_index(msgspec.json.decode(raw)["sha256"]))

    async def find_account(self, secret: str) -> Account | None:
        """The account a live API key belongs to, or None; records when it was used.

        One round trip once the key is known to this process: the key index (which
        account and key id a secret names, never changing) is read on a key's first use
        and remembered; whether the key is still live, and the account, are read on every
        call, together (one shard), so a revoked key fails at once. The last-used time is
        written at most once a minute per key and process: the high-volume path should
        not pay a write per message for it."""
        if not isinstance(secret, str) or not 1 <= len(secret) <= MAX_KEY_CHARS:
            return None
        redis = self.ctx.redis
        digest = ids.sha256_hex(secret)
        named = self._named.get(digest)
        if named is None:
            value = await redis.get(keys.api_key_index(digest))
            if value is None:
                return None
            account_id, _, key_id = text(value).partition("|")
            if not ids.is_plain_id(account_id):
                return None
            named = self._named.remember(digest, (account_id, key_id))
        account_id, key_id = named
        shard = self.ctx.account_shard(account_id)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hexists(shard.api_keys(), key_id)
            pipe.hgetall(shard.account())
            live, raw = await pipe.execute()
        if not live or not raw:
            return None
        now = self.ctx.now()
        if now - self._last_written.get(key_id, 0) >= LAST_USED_PRECISION_MS:
            self._last_written[key_id] = now
            if len(self._last_written) > 10_000:
                self._last_written.clear()
            await redis.hset(shard.api_keys_last_used(), key_id, now)
        return account_from_hash(raw)
