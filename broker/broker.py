"""The broker: one typed async method per Lua script, and the only Python that talks
to Redis. Callers pass ``now_ms`` where it matters (tests drive time); by default the
broker's clock is used. Scripts never read the clock themselves.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import phonenumbers
from redis.exceptions import WatchError

from broker import errors, ids, keys
from broker.history import HistoryStore
from broker.redis_client import fields as _fields
from broker.redis_client import text as _text
from broker.records import (
    LIMIT_FIELDS,
    STATUSES,
    Account,
    AccountType,
    ApiKeyInfo,
    ClaimedMessage,
    ClaimResult,
    CreatedApiKey,
    DeviceInfo,
    DeviceRef,
    EnqueueResult,
    Event,
    LimitChange,
    LimitRequest,
    Limits,
    MessagePage,
    MessageRecord,
    OutgoingMessage,
    PairingCode,
    RateDecision,
    RegisteredDevice,
    Session,
    StatusChange,
    SweepReport,
)
from broker.scripts import ScriptRegistry
from broker.segments import count_segments
from broker.settings import Settings
from broker.webhooks.endpoints import WebhookEndpoints

MAX_MESSAGE_CHARS = 1_600
MAX_FIELD_CHARS = 32
MAX_ERROR_CHARS = 200
LAST_USED_PRECISION_MS = 60_000
CREDENTIAL_CACHE = 100_000  # device tokens and API keys remembered per process (some 25 MB each at most)
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def check_text(value: object, field: str, *, min_chars: int = 0, max_chars: int) -> str:
    """A string of ``min_chars`` to ``max_chars`` characters that encodes as UTF-8, or InvalidInput."""
    if not isinstance(value, str) or not min_chars <= len(value) <= max_chars:
        raise errors.InvalidInput(f"'{field}' must be {min_chars} to {max_chars} characters", field=field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise errors.InvalidInput(f"'{field}' is not valid text", field=field) from None
    return value


def check_name(value: object, field: str) -> str:
    """A name a person typed: surrounding spaces dropped, then 1 to 64 characters."""
    if isinstance(value, str):
        value = value.strip()
    return check_text(value, field, min_chars=1, max_chars=64)


def _remember(cache: dict[str, Any], key: str, value: Any) -> Any:
    """Keep ``value`` under ``key`` in a per-process credential cache of at most
    CREDENTIAL_CACHE entries, the oldest dropped first; returns ``value``."""
    if len(cache) >= CREDENTIAL_CACHE:
        del cache[next(iter(cache))]
    cache[key] = value
    return value


def normalize_phone_number(number: str, field: str = "to") -> str:
    """Return ``number`` if it is E.164, or raise InvalidInput.

    E.164 means ``+``, a country code and the number, digits only (no spaces, letters or
    extensions), at most 15 digits; ``phonenumbers`` then checks that the country code
    exists and the length is possible for it. Whether the number is allocated is not
    checked: the carrier decides that, and the API doc's own +1555... examples must work.
    """
    if not isinstance(number, str) or not _E164.fullmatch(number):
        raise errors.InvalidInput(f"'{field}' must be an E.164 number such as +15551234567", field=field)
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise errors.InvalidInput(f"'{field}' is not a phone number", field=field) from None
    if not phonenumbers.is_possible_number(parsed):
        raise errors.InvalidInput(f"'{field}' is not a possible phone number for its country", field=field)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class Broker:
    def __init__(
        self,
        redis: Any,
        settings: Settings | None = None,
        scripts: ScriptRegistry | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.redis = redis
        self.settings = settings or Settings()
        self.scripts = scripts or ScriptRegistry()
        self.clock = clock
        self._shards: dict[str, keys.ShardKeys] = {}
        self._key_last_written: dict[str, int] = {}  # API key id -> when its last use was written
        self._device_tokens: dict[str, DeviceRef] = {}  # token hash -> device (see device_for_token)
        self._api_keys: dict[str, tuple[str, str]] = {}  # key hash -> (account id, key id)
        # The history store, when attached: reads of messages no longer in Redis go there.
        self.history: HistoryStore | None = None
        self.webhooks = WebhookEndpoints(self)

    async def start(self) -> None:
        """Load every script (a broken one fails here) and register the platform pool."""
        await self.scripts.load(self.redis)
        await self.redis.sadd(keys.SHARDS, keys.pool_shard())

    def _now(self, now_ms: int | None) -> int:
        return self.clock() if now_ms is None else now_ms

    def shard(self, tag: str) -> keys.ShardKeys:
        shard = self._shards.get(tag)
        if shard is None:
            shard = self._shards[tag] = keys.ShardKeys(tag)
        return shard

    async def _call(self, name: str, key_list: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.scripts.call(self.redis, name, key_list, args)

    # Accounts -------------------------------------------------------------------------

    async def create_account(
        self,
        email: str,
        account_type: AccountType,
        *,
        password_hash: str = "",
        operator: bool = False,
        daily_quota: int | None = None,
        now_ms: int | None = None,
    ) -> Account:
        if account_type not in ("self_managed", "api_only"):
            raise errors.InvalidInput("account_type must be self_managed or api_only", field="account_type")
        if not isinstance(email, str) or "@" not in email or len(email) > 254:
            raise errors.InvalidInput("email is not an email address", field="email")
        if daily_quota is None:
            daily_quota = (
                self.settings.quota_api_only if account_type == "api_only" else self.settings.quota_self_managed
            )
        account = Account(
            id=ids.short_id(),
            email=email.strip(),
            account_type=account_type,
            daily_quota=daily_quota,
            operator=operator,
            password_hash=password_hash,
            created_ms=self._now(now_ms),
        )
        if not await self.redis.set(keys.email_index(email), account.id, nx=True):
            raise errors.EmailTaken()
        shard = self.shard(keys.account_shard(account.id))
        fields = msgspec.to_builtins(account)
        fields["operator"] = int(account.operator)
        await self.redis.hset(shard.account(), mapping=fields)
        await self.redis.sadd(keys.SHARDS, shard.tag)
        return account

    async def get_account(self, account_id: str) -> Account:
        raw = await self.redis.hgetall(self.shard(keys.account_shard(account_id)).account())
        if not raw:
            raise errors.AccountNotFound()
        return _account(raw)

    async def find_account_by_email(self, email: str) -> Account:
        account_id = await self.redis.get(keys.email_index(email))
        if account_id is None:
            raise errors.AccountNotFound()
        return await self.get_account(_text(account_id))

    # Sessions and API keys ------------------------------------------------------------

    async def create_session(self, account: Account, *, now_ms: int | None = None) -> Session:
        """A server-side dashboard session; the id goes in the cookie, its hash in Redis."""
        now = self._now(now_ms)
        ttl_ms = self.settings.session_ttl_seconds * 1000
        session = Session(ids.secret_token(), account.id, ids.secret_token(), now + ttl_ms)
        key = keys.session(ids.sha256_hex(session.id))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"account": account.id, "csrf_token": session.csrf_token,
                                    "expires_at_ms": session.expires_at_ms})
            pipe.pexpire(key, ttl_ms)
            await pipe.execute()
        return session

    async def get_session(self, session_id: str) -> Session | None:
        if not isinstance(session_id, str) or not 1 <= len(session_id) <= 128:
            return None
        raw = await self.redis.hgetall(keys.session(ids.sha256_hex(session_id)))
        if not raw:
            return None
        fields = _fields(raw)
        return Session(session_id, fields["account"], fields["csrf_token"], int(fields["expires_at_ms"]))

    async def delete_session(self, session_id: str) -> None:
        if isinstance(session_id, str) and 1 <= len(session_id) <= 128:
            await self.redis.delete(keys.session(ids.sha256_hex(session_id)))

    async def create_api_key(self, account: Account, name: str, *, now_ms: int | None = None) -> CreatedApiKey:
        """A send-only key; the secret is returned this once and stored as SHA-256."""
        name = check_name(name, "name")
        info = ApiKeyInfo(ids.short_id(), name, self._now(now_ms))
        secret = ids.secret_token()
        shard = self.shard(keys.account_shard(account.id))
        secret_sha = ids.sha256_hex(secret)
        record = {**msgspec.to_builtins(info), "sha256": secret_sha}
        await self.redis.hset(shard.api_keys(), info.id, msgspec.json.encode(record))
        await self.redis.set(keys.api_key_index(secret_sha), f"{account.id}|{info.id}")
        return CreatedApiKey(info, secret)

    async def list_api_keys(self, account: Account) -> list[ApiKeyInfo]:
        shard = self.shard(keys.account_shard(account.id))
        raw = await self.redis.hgetall(shard.api_keys())
        used = {_text(k): int(v) for k, v in (await self.redis.hgetall(shard.api_keys_last_used())).items()}
        found = [msgspec.json.decode(v, type=ApiKeyInfo) for v in raw.values()]
        return sorted((msgspec.structs.replace(k, last_used_ms=used.get(k.id)) for k in found),
                      key=lambda k: (k.created_ms, k.id))

    async def revoke_api_key(self, account: Account, key_id: str) -> None:
        """Revoke a key: it stops working at once. Another account's key is not found."""
        shard = self.shard(keys.account_shard(account.id))
        if not ids.is_plain_id(key_id):
            raise errors.ApiKeyNotFound()
        raw = await self.redis.hget(shard.api_keys(), key_id)
        if raw is None:
            raise errors.ApiKeyNotFound()
        # The record goes first: find_account_by_api_key refuses a key without one.
        await self.redis.hdel(shard.api_keys(), key_id)
        await self.redis.hdel(shard.api_keys_last_used(), key_id)
        await self.redis.delete(keys.api_key_index(msgspec.json.decode(raw)["sha256"]))

    async def find_account_by_api_key(self, secret: str, *, now_ms: int | None = None) -> Account | None:
        """The account a live API key belongs to, or None; records when it was used.

        One round trip once the key is known to this process: the key index (which
        account and key id a secret names, never changing) is read on a key's first use
        and remembered; whether the key is still live, and the account, are read on every
        call, together (one shard), so a revoked key fails at once. The last-used time is
        written at most once a minute per key and process: the high-volume path should
        not pay a write per message for it."""
        if not isinstance(secret, str) or not 1 <= len(secret) <= 128:
            return None
        digest = ids.sha256_hex(secret)
        named = self._api_keys.get(digest)
        if named is None:
            value = await self.redis.get(keys.api_key_index(digest))
            if value is None:
                return None
            account_id, _, key_id = _text(value).partition("|")
            if not ids.is_plain_id(account_id):
                return None
            named = _remember(self._api_keys, digest, (account_id, key_id))
        account_id, key_id = named
        shard = self.shard(keys.account_shard(account_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(shard.api_keys(), key_id)
            pipe.hgetall(shard.account())
            live, raw = await pipe.execute()
        if not live or not raw:
            return None
        now = self._now(now_ms)
        if now - self._key_last_written.get(key_id, 0) >= LAST_USED_PRECISION_MS:
            self._key_last_written[key_id] = now
            if len(self._key_last_written) > 10_000:
                self._key_last_written.clear()
            await self.redis.hset(shard.api_keys_last_used(), key_id, now)
        return _account(raw)

    # Pairing ----------------------------------------------------------------------------

    async def create_pairing_code(self, owner: Account | None, *, now_ms: int | None = None) -> PairingCode:
        """A one-time code pairing a phone to ``owner``'s account, or to the platform pool
        when ``owner`` is None (the operator's pool phones)."""
        now = self._now(now_ms)
        ttl_ms = self.settings.pairing_code_ttl_seconds * 1000
        tag = keys.pool_shard() if owner is None else keys.account_shard(owner.id)
        shard = self.shard(tag)
        for _ in range(8):
            code = ids.pairing_code()
            if await self.redis.set(keys.pairing_code_index(code), tag, px=ttl_ms, nx=True):
                await self.redis.set(shard.pairing_code(code), "" if owner is None else owner.id, px=ttl_ms)
                return PairingCode(code, now + ttl_ms)
        raise RuntimeError("could not find a free pairing code")

    async def register_device(
        self,
        code: str,
        device_name: str,
        phone_number: str = "",
        *,
        now_ms: int | None = None,
    ) -> RegisteredDevice:
        """Redeem a pairing code; the device token is returned this once, stored hashed."""
        if not ids.is_plain_id(code, 16):
            raise errors.PairingCodeInvalid()
        device_name = check_name(device_name, "device_name")
        if phone_number:
            phone_number = normalize_phone_number(phone_number, "phone_number")
        now = self._now(now_ms)
        code = code.upper()
        tag = await self.redis.get(keys.pairing_code_index(code))
        if tag is None:
            raise errors.PairingCodeInvalid()
        shard = self.shard(_text(tag))
        device_id = ids.short_id()
        token = ids.secret_token()
        token_sha = ids.sha256_hex(token)
        # The token index is written first: if the script then fails, the index points
        # at no device and is dropped; a crash in between leaves only a dead pointer.
        index = keys.device_token_index(token_sha)
        await self.redis.set(index, f"{shard.tag}|{device_id}")
        try:
            owner = await self._call(
                "register-device",
                [shard.pairing_code(code), shard.device(device_id), shard.devices],
                [device_id, token_sha, device_name, phone_number, now,
                 self.settings.device_segments_per_minute, self.settings.device_segments_per_day],
            )
        except BaseException:
            await self.redis.delete(index)
            raise
        await self.redis.delete(keys.pairing_code_index(code))
        return RegisteredDevice(
            device_id=device_id,
            device_token=token,
            device_name=device_name,
            shard=shard.tag,
            account_id=_text(owner),
        )

    async def find_device_by_token(self, token: str) -> DeviceRef | None:
        """The device a token belongs to, or None. Tokens are looked up by SHA-256."""
        if not isinstance(token, str) or not token or len(token) > 128:
            return None
        value = await self.redis.get(keys.device_token_index(ids.sha256_hex(token)))
        if value is None:
            return None
        tag, _, device_id = _text(value).partition("|")
        return DeviceRef(tag, device_id)

    async def device_for_token(self, token: str) -> DeviceRef | None:
        """:meth:`find_device_by_token`, remembered in this process: a token names one
        device for life, so only its first use costs a Redis round trip. Whether that
        device still exists is not remembered: the script of every call a device makes
        checks it (claim and heartbeat raise DeviceNotFound, a status report
        MessageNotFound), and the caller then drops the entry with
        :meth:`forget_device_token` and checks afresh."""
        if not isinstance(token, str) or not token or len(token) > 128:
            return None
        digest = ids.sha256_hex(token)
        device = self._device_tokens.get(digest)
        if device is None:
            device = await self.find_device_by_token(token)
            if device is not None:
                _remember(self._device_tokens, digest, device)
        return device

    def forget_device_token(self, token: str) -> None:
        self._device_tokens.pop(ids.sha256_hex(token), None)

    async def get_device(self, device: DeviceRef) -> dict[str, str]:
        raw = await self.redis.hgetall(self.shard(device.shard).device(device.device_id))
        if not raw:
            raise errors.DeviceNotFound()
        return _fields(raw)

    async def list_devices(self, owner: Account | None, *, now_ms: int | None = None) -> list[DeviceInfo]:
        """The devices of an account, or of the platform pool when ``owner`` is None,
        with presence and per-device message counts, oldest paired first."""
        shard = self.shard(keys.pool_shard() if owner is None else keys.account_shard(owner.id))
        device_ids = sorted(_text(d) for d in await self.redis.smembers(shard.devices))
        found = await self._device_infos(shard, device_ids, self._now(now_ms))
        return sorted(found, key=lambda d: (d.created_ms, d.device_id))

    async def device_info(self, device: DeviceRef, *, now_ms: int | None = None) -> DeviceInfo:
        """One device as ``list_devices`` shows it."""
        found = await self._device_infos(self.shard(device.shard), [device.device_id], self._now(now_ms))
        if not found:
            raise errors.DeviceNotFound()
        return found[0]

    async def _device_infos(self, shard: keys.ShardKeys, device_ids: list[str], now: int) -> list[DeviceInfo]:
        """Device hashes and their counters, in one round trip; removed devices are left out."""
        if not device_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for device_id in device_ids:
                pipe.hgetall(shard.device(device_id))
                pipe.hmget(shard.counters, [f"d:{device_id}:{st}" for st in STATUSES])
            replies = await pipe.execute()
        ttl_ms = self.settings.presence_ttl_seconds * 1000
        found = []
        for index, device_id in enumerate(device_ids):
            raw, counts = replies[2 * index], replies[2 * index + 1]
            if not raw:
                continue
            f = _fields(raw)
            last_seen = int(f["last_seen"]) if "last_seen" in f else None
            found.append(DeviceInfo(
                device_id=device_id,
                device_name=f["name"],
                phone_number=f.get("phone_number", ""),
                online=last_seen is not None and last_seen + ttl_ms > now,
                last_seen_ms=last_seen,
                battery=int(f["battery"]) if "battery" in f else None,
                android_version=f.get("android_version"),
                app_version=f.get("app_version"),
                segments_per_minute=int(f["per_minute"]),
                segments_per_day=int(f["per_day"]),
                created_ms=int(f["created"]),
                counts={st: int(n or 0) for st, n in zip(STATUSES, counts)},
            ))
        return found

    async def update_device(
        self,
        device: DeviceRef,
        *,
        name: str | None = None,
        segments_per_minute: int | None = None,
        segments_per_day: int | None = None,
    ) -> None:
        if name is not None:
            name = check_name(name, "device_name")
        for field, value in (("segments_per_minute", segments_per_minute), ("segments_per_day", segments_per_day)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= 1_000_000):
                raise errors.InvalidInput(f"{field} must be a whole number from 1 to 1000000", field=field)
        shard = self.shard(device.shard)
        await self._call(
            "update-device", [shard.device(device.device_id)],
            [device.device_id, name or "", segments_per_minute or "", segments_per_day or ""])

    async def remove_device(self, device: DeviceRef, *, now_ms: int | None = None) -> SweepReport:
        """Remove a device; its token stops working at once. Messages queued for it fail
        with ``device_removed``; pool messages it held go back to the pool."""
        now = self._now(now_ms)
        shard = self.shard(device.shard)
        did = device.device_id
        token_sha = await self.redis.hget(shard.device(did), "token_sha256")
        if token_sha is None:
            raise errors.DeviceNotFound()
        await self.redis.delete(keys.device_token_index(_text(token_sha)))
        failed = returned = 0
        while True:
            reply = await self._call(
                "remove-device",
                [shard.device(did), shard.device_window(did), shard.device_presence(did), shard.devices,
                 shard.last_seen, shard.messages, shard.counters, shard.queue, shard.leased,
                 shard.lease_checks, shard.expiry, shard.pool, shard.pool_state, shard.events],
                [did, now, self.settings.sweep_batch])
            failed, returned = failed + int(reply[0]), returned + int(reply[1])
            if not int(reply[2]):
                return SweepReport(lost=failed, returned=returned)

    # Messages ---------------------------------------------------------------------------

    def route(self, account: Account, message: OutgoingMessage, index: int) -> tuple[str, str]:
        """(route, device id) for one message, by the account's routing rules."""
        if account.account_type == "api_only":
            if message.device_id is not None:
                raise errors.RoutingError(
                    "API-only accounts send through the platform pool: omit device_id",
                    field="device_id", index=index)
            return "pool", ""
        if message.device_id is None:
            return "pool", ""
        if not ids.is_plain_id(message.device_id):
            raise errors.DeviceNotFound("no such device", index=index)
        return "device", message.device_id

    async def enqueue(
        self,
        account: Account,
        messages: Sequence[OutgoingMessage],
        *,
        idempotency_key: str | None = None,
        now_ms: int | None = None,
    ) -> EnqueueResult:
        """Queue one message or a batch, all or nothing, in one call to Redis.

        Self-managed accounts: a ``device_id`` puts the message in that device's queue,
        none puts it in the account's own pool. API-only accounts: the platform pool.
        """
        if not 1 <= len(messages) <= self.settings.batch_max_messages:
            raise errors.InvalidInput(
                f"send between 1 and {self.settings.batch_max_messages} messages", field="messages")
        if idempotency_key is not None:
            check_text(idempotency_key, "Idempotency-Key", min_chars=1, max_chars=255)
        now = self._now(now_ms)
        shard = self.shard(account.shard)
        args: list[Any] = []
        canonical: list[tuple[str, str, str]] = []
        problems: list[errors.Problem] = []
        targeted: list[tuple[int, str]] = []
        message_ids = ids.message_ids(now, len(messages))
        for index, message in enumerate(messages):
            try:
                to = normalize_phone_number(message.to)
                text = check_text(message.message, "message", min_chars=1, max_chars=MAX_MESSAGE_CHARS)
                route, device_id = self.route(account, message, index)
            except errors.InvalidInput as exc:
                problems.append(errors.Problem(index, exc.field, exc.detail, type(exc)))
                continue
            except errors.DeviceNotFound:
                problems.append(errors.Problem(index, "device_id", "no such device"))
                continue
            segments = count_segments(text).count
            args += [message_ids[index], route, device_id, to, text, segments]
            canonical.append((to, text, device_id))
            if route == "device":
                targeted.append((index, device_id))
        if problems:
            # Refused already: name the unknown devices too (the script would only reach
            # them once the rest is valid), so one answer lists every bad item.
            if targeted:
                known = await self.redis.smismember(shard.devices, [d for _, d in targeted])
                problems += [errors.Problem(i, "device_id", "no such device")
                             for (i, _), found in zip(targeted, known) if not found]
                problems.sort(key=lambda p: p.index)
            raise _invalid_messages(problems)
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = hashlib.sha256(msgspec.json.encode(canonical)).hexdigest()
        limits = self.limits(account)
        if len(messages) > limits.daily_quota:
            # Never allowed, whatever the day: a 429 saying "try again tomorrow" would lie.
            raise errors.InvalidInput(
                f"{len(messages)} messages are more than the account's whole daily quota of "
                f"{limits.daily_quota}; send fewer at once or ask for a higher quota", field="messages")
        reply = await self._call(
            "enqueue",
            [shard.messages, shard.counters, shard.quota,
             shard.idempotency(account.id, idempotency_key or "-"), shard.expiry, shard.events,
             shard.pool, shard.pool_state, shard.queue, shard.devices, shard.sent(account.id),
             shard.send_rate(account.id)],
            [account.id, now, self.settings.message_ttl_seconds * 1000, limits.daily_quota,
             fingerprint, self.settings.idempotency_ttl_seconds * 1000, len(messages),
             1000 / limits.sends_per_second, limits.sends_burst, *args],
        )
        kind = _text(reply[0])
        rate = RateDecision(True, limits.sends_burst, int(reply[1]), 0, int(reply[2]))
        return EnqueueResult([_text(x) for x in reply[3:]], kind == "duplicate", shard.tag, rate)

    async def claim(self, device: DeviceRef, limit: int | None = None, *, now_ms: int | None = None
                    ) -> list[ClaimedMessage]:
        """Atomically claim up to ``limit`` messages for one device (see claim-14.lua)."""
        return (await self.claim_tasks(device, limit, now_ms=now_ms)).messages

    async def claim_tasks(self, device: DeviceRef, limit: int | None = None, *, now_ms: int | None = None
                          ) -> ClaimResult:
        """Claim as :meth:`claim` does, with the device's poll limiter after the claim.
        Polling faster than the tasks limit raises RateLimited and changes nothing."""
        if limit is None:
            limit = self.settings.claim_default_limit
        if not isinstance(limit, int) or not 1 <= limit <= self.settings.claim_max_limit:
            raise errors.InvalidInput(
                f"limit must be 1 to {self.settings.claim_max_limit}", field="limit")
        now = self._now(now_ms)
        shard = self.shard(device.shard)
        did = device.device_id
        reply = await self._call(
            "claim",
            [shard.device(did), shard.device_window(did), shard.messages, shard.counters, shard.queue,
             shard.leased, shard.lease_checks, shard.expiry, shard.pool, shard.pool_state,
             shard.last_seen, shard.events, shard.poll_rate(did), shard.account()],
            [did, now, limit, self.settings.lease_seconds * 1000, self.settings.max_leases,
             self.settings.presence_ttl_seconds * 1000, self.settings.tasks_per_minute,
             self.settings.tasks_burst],
        )
        remaining, burst, reset = (int(x) for x in reply[0])
        return ClaimResult([ClaimedMessage(_text(m[0]), _text(m[1]), _text(m[2]), int(m[3])) for m in reply[1:]],
                           RateDecision(True, burst, remaining, 0, reset))

    async def report_status(
        self,
        device: DeviceRef,
        message_id: str,
        status: str,
        error: str = "",
        *,
        now_ms: int | None = None,
    ) -> StatusChange:
        if status not in ("sent", "delivered", "failed"):
            raise errors.InvalidInput("status must be sent, delivered or failed", field="status")
        if not ids.is_plain_id(message_id):
            raise errors.MessageNotFound()
        check_text(error, "error", max_chars=MAX_ERROR_CHARS)
        now = self._now(now_ms)
        shard = self.shard(device.shard)
        try:
            reply = await self._call(
                "report-status",
                [shard.messages, shard.counters, shard.leased, shard.lease_checks, shard.events],
                [device.device_id, message_id, status, error, now],
            )
        except errors.MessageNotFound:
            trimmed = await self._trimmed(device.shard, message_id)
            if trimmed is None or trimmed.device != device.device_id:
                raise
            return _repeat_or_refuse(trimmed, status)
        return StatusChange(_text(reply[0]), _text(reply[1]), _text(reply[2]) == "1")

    async def cancel(self, account: Account, message_id: str, *, now_ms: int | None = None) -> StatusChange:
        if not ids.is_plain_id(message_id):
            raise errors.MessageNotFound()
        now = self._now(now_ms)
        shard = self.shard(account.shard)
        try:
            reply = await self._call(
                "cancel",
                [shard.messages, shard.counters, shard.queue, shard.expiry, shard.pool, shard.pool_state,
                 shard.events],
                [account.id, message_id, now],
            )
        except errors.MessageNotFound:
            trimmed = await self._trimmed(account.shard, message_id)
            if trimmed is None or trimmed.account != account.id:
                raise
            return _repeat_or_refuse(trimmed, "cancelled")
        return StatusChange(_text(reply[0]), _text(reply[1]), _text(reply[2]) == "1")

    async def _trimmed(self, shard_tag: str, message_id: str) -> MessageRecord | None:
        """A finished message that left Redis after its hot window, as the store keeps it."""
        if self.history is None or await self.redis.hexists(self.shard(shard_tag).messages, message_id):
            return None
        return await self.history.message(shard_tag, message_id)

    async def heartbeat(
        self,
        device: DeviceRef,
        *,
        battery: int | None = None,
        android_version: str | None = None,
        app_version: str | None = None,
        now_ms: int | None = None,
    ) -> int:
        """Refresh presence; returns the last-seen time (ms)."""
        if battery is not None and (isinstance(battery, bool) or not isinstance(battery, int)
                                    or not 0 <= battery <= 100):
            raise errors.InvalidInput("battery must be a whole number from 0 to 100", field="battery")
        for name, value in (("android_version", android_version), ("app_version", app_version)):
            if value is not None:
                check_text(value, name, max_chars=MAX_FIELD_CHARS)
        now = self._now(now_ms)
        shard = self.shard(device.shard)
        did = device.device_id
        reply = await self._call(
            "heartbeat",
            [shard.device(did), shard.device_presence(did), shard.last_seen],
            [did, now, self.settings.presence_ttl_seconds * 1000,
             "" if battery is None else battery, android_version or "", app_version or ""],
        )
        return int(reply)

    async def is_online(self, device: DeviceRef, *, now_ms: int | None = None) -> bool:
        now = self._now(now_ms)
        seen = await self.redis.zscore(self.shard(device.shard).last_seen, device.device_id)
        return seen is not None and seen + self.settings.presence_ttl_seconds * 1000 > now

    async def sweep(self, shard_tag: str, *, now_ms: int | None = None) -> SweepReport:
        """One bounded pass over a shard: expire, fail lost, return pool messages."""
        now = self._now(now_ms)
        shard = self.shard(shard_tag)
        reply = await self._call(
            "sweep",
            [shard.messages, shard.counters, shard.queue, shard.leased, shard.lease_checks, shard.expiry,
             shard.pool, shard.pool_state, shard.last_seen, shard.events],
            [now, self.settings.sweep_batch, self.settings.max_leases,
             self.settings.presence_ttl_seconds * 1000],
        )
        return SweepReport(int(reply[0]), int(reply[1]), int(reply[2]), bool(int(reply[3])))

    async def sweep_if_leader(self, holder: str, *, lease_ms: int = 30_000, now_ms: int | None = None
                              ) -> SweepReport | None:
        """Sweep every shard if this process holds (or takes) the sweeper lock: one
        sweeper at a time across workers; a dead holder's lock expires after ``lease_ms``."""
        if not await self.hold_lock(keys.SWEEPER_LOCK, holder, lease_ms):
            return None
        return await self.sweep_all(now_ms=now_ms)

    async def hold_lock(self, lock: str, holder: str, lease_ms: int) -> bool:
        """Take ``lock`` for ``holder``, or renew it if ``holder`` has it already; False
        while another holder's lease runs (a dead holder's lock expires after ``lease_ms``)."""
        if await self.redis.set(lock, holder, nx=True, px=lease_ms):
            return True
        if _text(await self.redis.get(lock) or b"") != holder:
            return False
        await self.redis.pexpire(lock, lease_ms)
        return True

    async def trim(self, shard_tag: str, account_id: str, cutoff_ms: int, pairs: Sequence[str]) -> int:
        """Remove a sender's finished messages last changed by ``cutoff_ms`` that the
        history store holds (``pairs``: id, stored version, ...); see trim-3.lua."""
        shard = self.shard(shard_tag)
        return int(await self._call("trim", [shard.messages, shard.trim, shard.sent(account_id)],
                                    [account_id, cutoff_ms, *pairs]))

    async def sweep_all(self, *, now_ms: int | None = None, max_passes: int = 100) -> SweepReport:
        """Sweep every shard until none has more due work (at most ``max_passes`` each)."""
        total = SweepReport()
        async for tag in self.redis.sscan_iter(keys.SHARDS):
            for _ in range(max_passes):
                report = await self.sweep(_text(tag), now_ms=now_ms)
                total = SweepReport(total.expired + report.expired, total.lost + report.lost,
                                    total.returned + report.returned, total.more or report.more)
                if not report.more:
                    break
        return total

    # Rate limits ------------------------------------------------------------------------

    async def rate_limit(
        self,
        limiter_key: str,
        *,
        rate: int,
        period_ms: int,
        burst: int,
        cost: int = 1,
        now_ms: int | None = None,
    ) -> RateDecision:
        """GCRA: ``rate`` requests per ``period_ms`` with bursts of ``burst``.

        Returns the decision when allowed; raises RateLimited carrying it when not.
        """
        if rate < 1 or burst < 1 or cost < 1 or period_ms < 1:
            raise errors.InvalidInput("rate, burst, cost and period must be positive")
        now = self._now(now_ms)
        reply = await self._call("rate-limit", [limiter_key], [now, period_ms / rate, burst, cost])
        decision = RateDecision(bool(int(reply[0])), burst, int(reply[1]), int(reply[2]), int(reply[3]))
        if not decision.allowed:
            raise errors.RateLimited(decision)
        return decision

    # Limits and requests for higher ones -------------------------------------------------

    def limits(self, account: Account) -> Limits:
        """The account's limits: what the operator raised, else the server's defaults."""
        s = self.settings
        return Limits(
            sends_per_second=account.sends_per_second or s.sends_per_second,
            sends_burst=account.sends_burst or s.sends_burst,
            tasks_per_minute=account.tasks_per_minute or s.tasks_per_minute,
            tasks_burst=account.tasks_burst or s.tasks_burst,
            daily_quota=account.daily_quota,
        )

    async def quota_used(self, account: Account, *, now_ms: int | None = None) -> int:
        """Messages the account queued today (UTC), as the enqueue script counts them."""
        day, used = await self.redis.hmget(self.shard(account.shard).quota,
                                           [f"{account.id}:day", f"{account.id}:used"])
        today = self._now(now_ms) // 86_400_000
        return int(used) if day is not None and int(day) == today and used is not None else 0

    async def set_limits(self, account_id: str, change: LimitChange) -> Account:
        """Raise (or lower) an account's limits; fields left None keep their value."""
        values = _limit_values(change)
        if not ids.is_plain_id(account_id):
            raise errors.AccountNotFound()
        account = await self.get_account(account_id)
        if values:
            own = self.shard(keys.account_shard(account.id))
            await self.redis.hset(own.account(), mapping=values)
            account = msgspec.structs.replace(account, **values)
            # A changed limiter starts afresh, so new limits apply at once: its state is a
            # time measured in the old rate's units.
            if values.keys() & {"sends_per_second", "sends_burst"}:
                await self.redis.delete(self.shard(account.shard).send_rate(account.id))
            if values.keys() & {"tasks_per_minute", "tasks_burst"}:
                for device_id in [_text(d) for d in await self.redis.smembers(own.devices)]:
                    await self.redis.delete(own.poll_rate(device_id))
        return account

    async def request_limits(self, account: Account, requested: LimitChange, reason: str, *,
                             now_ms: int | None = None) -> LimitRequest:
        """Ask the operator for higher limits; one request waits at a time per account."""
        if not _limit_values(requested):
            raise errors.InvalidInput("ask for at least one limit", field="requested")
        reason = check_text(reason.strip() if isinstance(reason, str) else reason, "reason", max_chars=1000)
        request = LimitRequest(id=ids.short_id(), account_id=account.id, email=account.email,
                               requested=requested, reason=reason, status="pending", created_ms=self._now(now_ms))
        own = self.shard(keys.account_shard(account.id))
        # The record goes first, so a pending id always names a stored request.
        await self.redis.hset(keys.LIMIT_REQUESTS, request.id, msgspec.json.encode(request))
        if not await self.redis.hsetnx(own.account(), "pending_request", request.id):
            await self.redis.hdel(keys.LIMIT_REQUESTS, request.id)
            raise errors.LimitRequestPending()
        await self.redis.zadd(own.limit_requests(), {request.id: request.created_ms})
        return request

    async def get_limit_request(self, request_id: str) -> LimitRequest:
        raw = await self.redis.hget(keys.LIMIT_REQUESTS, request_id) if ids.is_plain_id(request_id) else None
        if raw is None:
            raise errors.LimitRequestNotFound()
        return msgspec.json.decode(raw, type=LimitRequest)

    async def list_limit_requests(self, *, account_id: str | None = None, status: str | None = None,
                                  limit: int = 500) -> list[LimitRequest]:
        """Requests, newest first, optionally one account's (read through its own index,
        not the whole hash) or one status's."""
        if account_id is not None:
            if not ids.is_plain_id(account_id):
                return []
            request_ids = await self.redis.zrevrange(
                self.shard(keys.account_shard(account_id)).limit_requests(), 0, limit - 1)
            raws = await self.redis.hmget(keys.LIMIT_REQUESTS, request_ids) if request_ids else []
        else:
            raws = list((await self.redis.hgetall(keys.LIMIT_REQUESTS)).values())
        found = [msgspec.json.decode(v, type=LimitRequest) for v in raws if v is not None]
        found = [r for r in found if (account_id is None or r.account_id == account_id)
                 and (status is None or r.status == status)]
        return sorted(found, key=lambda r: (r.created_ms, r.id), reverse=True)[:limit]

    async def decide_limit_request(self, request_id: str, *, approve: bool, granted: LimitChange | None = None,
                                   note: str = "", now_ms: int | None = None) -> LimitRequest:
        """The operator's answer. Approving grants what was asked (or ``granted``); a raised
        rate without a burst gets a burst scaled like the default one."""
        note = check_text(note, "note", max_chars=1000)
        decided = await self._decide(request_id, approve, granted, note, self._now(now_ms))
        if decided.granted is not None:
            await self.set_limits(decided.account_id, decided.granted)
        account_key = self.shard(keys.account_shard(decided.account_id)).account()
        if _text(await self.redis.hget(account_key, "pending_request") or b"") == decided.id:
            await self.redis.hdel(account_key, "pending_request")
        return decided

    async def _decide(self, request_id: str, approve: bool, granted: LimitChange | None, note: str,
                      now: int) -> LimitRequest:
        """Move a request from pending to decided, once: of two operators answering at
        the same moment, one wins and the other gets LimitRequestDecided (WATCH on the
        requests hash; a concurrent change there makes this try again)."""
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(keys.LIMIT_REQUESTS)
                raw = await pipe.hget(keys.LIMIT_REQUESTS, request_id) if ids.is_plain_id(request_id) else None
                if raw is None:
                    raise errors.LimitRequestNotFound()
                request = msgspec.json.decode(raw, type=LimitRequest)
                if request.status != "pending":
                    raise errors.LimitRequestDecided()
                grant: LimitChange | None = None
                if approve:
                    grant = self._scaled_bursts(granted if granted is not None and _limit_values(granted)
                                                else request.requested)
                    _limit_values(grant)
                decided = msgspec.structs.replace(request, status="approved" if approve else "rejected",
                                                  granted=grant, note=note, decided_ms=now)
                pipe.multi()
                pipe.hset(keys.LIMIT_REQUESTS, request.id, msgspec.json.encode(decided))
                try:
                    await pipe.execute()
                except WatchError:
                    continue
                return decided
        raise errors.LimitRequestDecided("the request kept changing; try again")

    def _scaled_bursts(self, change: LimitChange) -> LimitChange:
        s = self.settings
        extra: dict[str, int] = {}
        if change.sends_per_second and not change.sends_burst:
            extra["sends_burst"] = min(MAX_LIMIT, max(
                s.sends_burst, -(-change.sends_per_second * s.sends_burst // s.sends_per_second)))
        if change.tasks_per_minute and not change.tasks_burst:
            extra["tasks_burst"] = min(MAX_LIMIT, max(
                s.tasks_burst, -(-change.tasks_per_minute * s.tasks_burst // s.tasks_per_minute)))
        return msgspec.structs.replace(change, **extra) if extra else change

    async def pending_limit_request(self, account: Account) -> LimitRequest | None:
        pending = await self.redis.hget(self.shard(keys.account_shard(account.id)).account(), "pending_request")
        if pending is None:
            return None
        try:
            return await self.get_limit_request(_text(pending))
        except errors.LimitRequestNotFound:
            return None

    # Reads ------------------------------------------------------------------------------

    async def get_message(self, shard_tag: str, message_id: str) -> MessageRecord:
        """A message from Redis while it is hot, else from the history store."""
        raw = await self.redis.hget(self.shard(shard_tag).messages, message_id)
        if raw is not None:
            return msgspec.json.decode(raw, type=MessageRecord)
        stored = None
        if self.history is not None and ids.is_plain_id(message_id):
            stored = await self.history.message(shard_tag, message_id)
        if stored is None:
            raise errors.MessageNotFound()
        return stored

    async def list_messages(
        self,
        account: Account,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
        device_id: str | None = None,
        scan_limit: int = 5_000,
    ) -> MessagePage:
        """A sender's messages, newest first, from Redis (hot ones) and the history store
        (stored ones, trimmed from Redis or not) merged by id without duplicates: a
        message shows from the moment it is queued and stays after it is trimmed.

        Each source is complete from the top down to its own bound (the last id it
        looked at, or nothing left); the page keeps only what lies above the higher of
        the two bounds, so no message is skipped between pages."""
        hot = await self._list_hot(account, limit, cursor, status, device_id, scan_limit)
        if self.history is None:
            return hot
        stored = await self.history.list_messages(account.id, limit=limit, before=cursor, status=status,
                                                  device=device_id)
        bounds = [b for b in (hot.next_cursor, stored[-1].id if len(stored) == limit else None) if b is not None]
        bound = max(bounds) if bounds else None
        # A stored row may be behind Redis (a change not yet snapshotted): Redis decides.
        shard = self.shard(account.shard)
        live = await self.redis.hmget(shard.messages, [r.id for r in stored]) if stored else []
        merged = {r.id: r for r in hot.items}
        for record, raw in zip(stored, live):
            if record.id in merged:
                continue
            if raw is not None:
                record = msgspec.json.decode(raw, type=MessageRecord)
                if (status is not None and record.status != status) or (
                        device_id is not None and record.device != device_id):
                    continue
            merged[record.id] = record
        items = sorted((r for r in merged.values() if bound is None or r.id >= bound),
                       key=lambda r: r.id, reverse=True)
        if len(items) >= limit:
            return MessagePage(items[:limit], items[limit - 1].id)
        return MessagePage(items, bound)

    async def _list_hot(self, account: Account, limit: int, cursor: str | None, status: str | None,
                        device_id: str | None, scan_limit: int) -> MessagePage:
        """A sender's messages, newest first, ``limit`` a page, optionally only one status
        or one device. A filtered page reads at most ``scan_limit`` ids; ``next_cursor``
        then points past what was read, so a client pages on through sparse matches."""
        if not isinstance(limit, int) or not 1 <= limit <= 500:
            raise errors.InvalidInput("limit must be 1 to 500", field="limit")
        if status is not None and status not in STATUSES:
            raise errors.InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
        if cursor is not None and not ids.is_plain_id(cursor):
            raise errors.InvalidInput("cursor is not one this server gave out", field="cursor")
        shard = self.shard(account.shard)
        index = shard.sent(account.id)
        items: list[MessageRecord] = []
        upper = "+" if cursor is None else f"({cursor}"
        scanned = 0
        last: str | None = None
        while len(items) < limit and scanned < scan_limit:
            chunk = limit if status is None and device_id is None else min(500, scan_limit - scanned)
            ids_ = [_text(i) for i in await self.redis.zrevrangebylex(index, upper, "-", start=0, num=chunk)]
            if not ids_:
                last = None
                break
            scanned += len(ids_)
            records = await self.redis.hmget(shard.messages, ids_)
            for message_id, raw in zip(ids_, records):
                last = message_id
                if raw is None:
                    continue
                record = msgspec.json.decode(raw, type=MessageRecord)
                if (status is None or record.status == status) and (device_id is None or record.device == device_id):
                    items.append(record)
                    if len(items) == limit:
                        break
            upper = f"({last}"
            if len(ids_) < chunk:
                if len(items) < limit:
                    last = None
                break
        return MessagePage(items, last)

    async def stats(self, account: Account, *, now_ms: int | None = None) -> dict[str, Any]:
        """Counts per state for the account, and its devices with presence and counts."""
        counts = await self.account_counts(account)
        devices = [] if account.account_type == "api_only" else await self.list_devices(account, now_ms=now_ms)
        return {"counts": counts, "devices": devices}

    async def counters(self, shard_tag: str) -> dict[str, int]:
        """The raw counters hash of a shard (``a:<account>:<status>``, ``d:<device>:<status>``)."""
        raw = await self.redis.hgetall(self.shard(shard_tag).counters)
        return {_text(k): int(v) for k, v in raw.items()}

    async def account_counts(self, account: Account) -> dict[str, int]:
        """The account's messages per state, and in all (its own fields only: the platform
        pool's counters hash holds every API-only sender's)."""
        names = (*STATUSES, "total")
        values = await self.redis.hmget(self.shard(account.shard).counters, [f"a:{account.id}:{n}" for n in names])
        return {name: int(value or 0) for name, value in zip(names, values)}

    async def events(self, shard_tag: str, count: int = 1000) -> list[Event]:
        entries = await self.redis.xrange(self.shard(shard_tag).events, count=count)
        events = []
        for stream_id, fields in entries:
            f = {_text(k): _text(v) for k, v in fields.items()}
            events.append(Event(_text(stream_id), f["id"], f["account"], f["status"], f["device"],
                                int(f["at"]), f["error"]))
        return events


MAX_LIMIT = 10_000_000


def _limit_values(change: LimitChange) -> dict[str, int]:
    """The fields a change sets, each a whole number from 1 to MAX_LIMIT, or InvalidInput."""
    values = {}
    for field in LIMIT_FIELDS:
        value = getattr(change, field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
            raise errors.InvalidInput(f"{field} must be a whole number from 1 to {MAX_LIMIT}", field=field)
        values[field] = value
    return values


def _repeat_or_refuse(trimmed: MessageRecord, status: str) -> StatusChange:
    """A status change asked of a trimmed message: a repeat is the usual no-op; any other
    move is refused (a phone reporting ``delivered`` after the hot window gets 404 as
    before, since the record it would change is no longer in Redis)."""
    if trimmed.status == status:
        return StatusChange(trimmed.id, status, False)
    if status == "cancelled" or trimmed.status != "sent":
        raise errors.InvalidTransition(trimmed.status, status)
    raise errors.MessageNotFound("the message finished and left the hot store; its history is kept")


def _invalid_messages(problems: list[errors.Problem]) -> errors.InvalidInput:
    """One bad message is reported as itself; several as a list naming each index.
    Unknown devices alone are DeviceNotFound, as the script reports them."""
    if all(p.field == "device_id" and p.detail == "no such device" for p in problems):
        indexes = [p.index for p in problems]
        return errors.DeviceNotFound(f"message {', '.join(map(str, indexes))}: no such device",
                                     index=indexes[0], indexes=indexes)
    if len(problems) == 1:
        p = problems[0]
        return p.kind(f"message {p.index}: {p.detail}", field=p.field, index=p.index, problems=problems)
    named = ", ".join(str(p.index) for p in problems[:20]) + (", ..." if len(problems) > 20 else "")
    return errors.InvalidInput(f"{len(problems)} messages are invalid (messages {named}); nothing was queued",
                               field="messages", problems=problems)


def _account(raw: dict[Any, Any]) -> Account:
    """An account hash as read from Redis."""
    fields: dict[str, Any] = _fields(raw)
    fields["operator"] = fields.get("operator") == "1"
    return msgspec.convert(fields, Account, strict=False)


