"""Send-only API keys: made (the secret shown once), listed, revoked, and resolved to
their account on every external send."""

from __future__ import annotations

from typing import NamedTuple

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
ADMISSION_MAX_AGE_MS = 60_000
"""How long a process trusts a key's check before it reads the key again (the epoch
check in the enqueue script catches a revoke or a limit change before that)."""
MAX_KEY_CHARS = 128


class Admission(NamedTuple):
    """An API key found live: its account, the account's credentials epoch then (None:
    not known, the enqueue not checked against one), the key id, and when."""

    account: Account
    epoch: int | None
    key_id: str
    checked_ms: int


async def move_credentials_epoch(ctx: Context, account: Account) -> None:
    """Make every process check the account's API keys again before its next external
    send (a key was revoked, or its limits changed): see :meth:`ApiKeys.admit`."""
    await ctx.redis.hincrby(ctx.shard(account.shard).credentials, account.id, 1)


class ApiKeys:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._named: CredentialCache[tuple[str, str]] = CredentialCache()  # key hash -> (account id, key id)
        self._admitted: CredentialCache[Admission] = CredentialCache()  # key hash -> its last admission
        self._homes: CredentialCache[str] = CredentialCache()  # account id -> the shard its messages live in
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
        # The record goes first: find_account refuses a key without one. The epoch moves
        # after it, so a process that admitted the key before the record went sees it moved.
        await redis.hdel(shard.api_keys(), key_id)
        await redis.hdel(shard.api_keys_last_used(), key_id)
        await redis.delete(keys.api_key_index(msgspec.json.decode(raw)["sha256"]))
        await move_credentials_epoch(self.ctx, account)

    async def find_account(self, secret: str) -> Account | None:
        """The account a live API key belongs to, or None (a fresh check: :meth:`admit`
        without what this process remembers of earlier checks)."""
        self.forget(secret)
        admission = await self.admit(secret)
        return None if admission is None else admission.account

    def forget(self, secret: str) -> None:
        """Drop what this process remembers of the key's last check."""
        if isinstance(secret, str):
            self._admitted.forget(ids.sha256_hex(secret))

    async def admit(self, secret: str) -> Admission | None:
        """The account a live API key belongs to, with the credentials epoch it was found
        live under; None for an unknown or revoked key.

        The key index (which account and key id a secret names, never changing) is read
        on a key's first use and remembered. Whether the key is still live, and the
        account, are read together (one shard, one round trip), after the account's
        credentials epoch (in the shard its messages live in, ``{S}:credentials``). Such
        an admission is remembered for up to ``ADMISSION_MAX_AGE_MS`` and then costs no
        round trip at all: the enqueue script compares the epoch with the one it was
        admitted under and refuses (StaleCredentials, nothing queued) once a revoke or a
        limit change (:func:`move_credentials_epoch`, which runs after the change) has moved it. The
        epoch read comes before the liveness read, so a change that the liveness read
        missed moves the epoch past the one remembered. The first admission of a key in
        a process does not know the account's shard yet: it is not remembered and carries
        no epoch (the enqueue is not checked against one).

        The last-used time is written at most once a minute per key and process: the
        high-volume path should not pay a write per message for it."""
        if not isinstance(secret, str) or not 1 <= len(secret) <= MAX_KEY_CHARS:
            return None
        redis = self.ctx.redis
        digest = ids.sha256_hex(secret)
        now = self.ctx.now()
        held = self._admitted.get(digest)
        if held is not None and now - held.checked_ms < ADMISSION_MAX_AGE_MS:
            await self._note_use(held.account.id, held.key_id, now)
            return held
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
        home = self._homes.get(account_id)
        epoch = None
        if home is not None:
            epoch = int(await redis.hget(self.ctx.shard(home).credentials, account_id) or 0)
        shard = self.ctx.account_shard(account_id)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hexists(shard.api_keys(), key_id)
            pipe.hgetall(shard.account())
            live, raw = await pipe.execute()
        if not live or not raw:
            self._admitted.forget(digest)
            return None
        account = account_from_hash(raw)
        self._homes.remember(account_id, account.shard)
        admission = Admission(account, epoch if home == account.shard else None, key_id, now)
        if admission.epoch is None:
            self._admitted.forget(digest)
        else:
            self._admitted.remember(digest, admission)
        await self._note_use(account_id, key_id, now)
        return admission

    async def _note_use(self, account_id: str, key_id: str, now: int) -> None:
        if now - self._last_written.get(key_id, 0) >= LAST_USED_PRECISION_MS:
            self._last_written[key_id] = now
            if len(self._last_written) > 10_000:
                self._last_written.clear()
            await self.ctx.redis.hset(self.ctx.account_shard(account_id).api_keys_last_used(), key_id, now)
