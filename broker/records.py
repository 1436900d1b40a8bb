"""Typed values that go into and come out of the broker."""

from __future__ import annotations

from typing import Literal

import msgspec

from broker.keys import account_shard, pool_shard

AccountType = Literal["self_managed", "api_only"]
MessageStatus = Literal[
    "scheduled", "queued", "claimed", "sent", "delivered", "failed", "expired", "cancelled", "received"
]
ReportedStatus = Literal["sent", "delivered", "failed"]
STATUSES: tuple[str, ...] = (
    "scheduled",
    "queued",
    "claimed",
    "sent",
    "delivered",
    "failed",
    "expired",
    "cancelled",
    "received",
)
"""Every status; "scheduled" waits for its send_at; "received" is an inbound message's only
one (an SMS a phone received)."""
DIRECTIONS: tuple[str, ...] = ("outbound", "inbound")
"""Sent by the account, or received by one of the phones (or a pool phone) for it."""


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    account_type: AccountType
    daily_quota: int
    operator: bool = False
    password_hash: str = ""
    created_ms: int = 0
    # Rate limits the operator raised for this account; 0 means the server's default.
    sends_per_second: int = 0
    sends_burst: int = 0
    tasks_per_minute: int = 0
    tasks_burst: int = 0
    # An API-only account's home shard in the platform pool, chosen when it was created
    # (see broker.pool_shards); empty for one made before the pool was split: shard 0.
    pool_home: str = ""
    # The country a campaign file's national numbers are read in (ISO 3166, e.g. "US");
    # empty: the server's CONNECFY_DEFAULT_COUNTRY.
    default_country: str = ""

    @property
    def shard(self) -> str:
        """The shard its messages live in: its home shard of the platform pool for
        API-only accounts."""
        if self.account_type == "api_only":
            return self.pool_home or pool_shard()
        return account_shard(self.id)


class DeviceRef(msgspec.Struct, frozen=True):
    """Where a device lives: its shard tag and its id."""

    shard: str
    device_id: str


class PairingCode(msgspec.Struct, frozen=True):
    code: str
    expires_at_ms: int


class RegisteredDevice(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    device_token: str
    device_name: str
    shard: str
    account_id: str  # "" for a platform pool phone

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(self.shard, self.device_id)


class OutgoingMessage(msgspec.Struct, frozen=True):
    to: str
    message: str
    device_id: str | None = None
    send_at: str | int | None = None  # scheduled for then (ISO-8601, or ms); None or past: now
    valid_for: int | None = None  # seconds: expires this long after it is due, unless a phone took it
    sim_slot: int | None = None  # the SIM to send from (1-4), for a device-targeted message
    priority: str | None = None  # "normal" (None: the same) or "high": claimed first in its queue
    encrypted: bool = False  # ``message`` is an end-to-end envelope (broker.envelopes)


class Segments(msgspec.Struct, frozen=True):
    encoding: Literal["GSM-7", "UCS-2"]
    count: int
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2


class EnqueueResult(msgspec.Struct, frozen=True):
    ids: list[str]
    duplicate: bool
    shard: str
    rate: RateDecision | None = None  # the send limiter after this request
    statuses: list[str] = []  # per message: "scheduled" (its send_at is ahead) or "queued"


class ClaimedMessage(msgspec.Struct, frozen=True):
    id: str
    to: str
    message: str
    segments: int
    sim_slot: int | None = None  # the SIM the sender asked for (1-4); None: the phone's choice
    encrypted: bool = False  # ``message`` is an envelope the phone decrypts


class ClaimResult(msgspec.Struct, frozen=True):
    messages: list[ClaimedMessage]
    rate: RateDecision  # the device's poll limiter after this claim


class StatusChange(msgspec.Struct, frozen=True):
    id: str
    status: str
    changed: bool


class SweepReport(msgspec.Struct, frozen=True):
    expired: int = 0
    lost: int = 0
    returned: int = 0
    more: bool = False


class PresenceReport(msgspec.Struct, frozen=True):
    """Presence changes found by the background pass: devices that went offline, that
    came back online, and whether a shard had lapses left for another call."""

    offline: int = 0
    online: int = 0
    more: bool = False


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    reset_ms: int


class MessageRecord(msgspec.Struct, frozen=True):
    """A message as stored in Redis."""

    id: str
    account: str
    to: str
    message: str = msgspec.field(name="body")  # the text; "body" in the stored JSON
    segments: int
    route: Literal["device", "pool", "inbound"]
    device: str
    status: MessageStatus
    created: int
    expires: int
    leases: int
    lease_until: int
    updated: int
    error: str
    timeline: list[tuple[str, int, str, str]] = []  # (status, at ms, device, error), oldest first
    # An SMS a phone received: "inbound", from whom (E.164 or a sender name), when the
    # phone got it (ms, its clock) and through which SIM; ``to`` is then the phone's own
    # number ("" when unknown), and ``account`` the account it belongs to.
    direction: Literal["outbound", "inbound"] = "outbound"
    sender: str = msgspec.field(default="", name="from")
    received_at: int = 0
    sim_slot: int | None = None  # inbound: the SIM it came in on; outbound: the SIM asked for
    send_at: int | None = None  # when the sender scheduled it for (ms)
    priority: Literal["normal", "high"] = "normal"  # the stored JSON has it only when high
    encrypted: bool = False  # ``message`` is an end-to-end envelope; the stored JSON has it only when true
    campaign: str = ""  # the campaign it was queued for (the stored JSON has it only then)


class Event(msgspec.Struct, frozen=True):
    """One status change as appended to a shard's stream."""

    stream_id: str
    id: str
    account: str
    status: str
    device: str
    at: int
    error: str


class Session(msgspec.Struct, frozen=True):
    """A dashboard login. ``id`` is the cookie value, known only to the browser."""

    id: str
    account_id: str
    csrf_token: str
    expires_at_ms: int


class ApiKeyInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_ms: int
    last_used_ms: int | None = None


class CreatedApiKey(msgspec.Struct, frozen=True):
    info: ApiKeyInfo
    api_key: str  # shown this once; stored only as SHA-256


class SendWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a device may be handed new messages (broker/send_windows.py)."""

    start: str  # "HH:MM", local time
    end: str  # "HH:MM"; before start: the window runs over midnight
    timezone: str  # IANA name, e.g. "Europe/Berlin"


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    device_name: str
    phone_number: str
    online: bool
    last_seen_ms: int | None
    battery: int | None
    android_version: str | None
    app_version: str | None
    segments_per_minute: int
    segments_per_day: int
    created_ms: int
    counts: dict[str, int]
    send_window: SendWindow | None = None
    # Pool claims skip the phone until then (ms) after a run of failed reports, and why.
    pool_paused_until_ms: int | None = None
    pool_pause_reason: str | None = None


class MessagePage(msgspec.Struct, frozen=True):
    items: list[MessageRecord]
    next_cursor: str | None


LIMIT_FIELDS: tuple[str, ...] = ("sends_per_second", "sends_burst", "tasks_per_minute", "tasks_burst", "daily_quota")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """An account's effective limits: its overrides, else the server's defaults."""

    sends_per_second: int
    sends_burst: int
    tasks_per_minute: int
    tasks_burst: int
    daily_quota: int


class LimitChange(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Some of an account's limits, as requested or granted; None leaves one as it is."""

    sends_per_second: int | None = None
    sends_burst: int | None = None
    tasks_per_minute: int | None = None
    tasks_burst: int | None = None
    daily_quota: int | None = None


LimitRequestStatus = Literal["pending", "approved", "rejected"]


class LimitRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An account's request for higher limits, and the operator's decision."""

    id: str
    account_id: str
    email: str
    requested: LimitChange
    reason: str
    status: LimitRequestStatus
    created_ms: int
    granted: LimitChange | None = None
    note: str = ""
    decided_ms: int | None = None
