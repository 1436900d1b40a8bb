"""Webhook events: what a status change, or a device's change of presence, becomes, its
body, and its signature.

An event is built from one entry of a shard's stream. Its id is derived from the shard
and the entry id, so reading the same entry again (after a crash) gives the same event,
and every retry and manual redelivery of it carries that id: receivers de-duplicate by
it. The body is the same bytes on every attempt.

A message's events are ``message.<status>``, with the message in ``data``. A device's
are ``device.offline`` and ``device.online`` (``presence-changes-5.lua``), with
``device_id``, ``device_name`` and ``at`` (when its presence lapsed, or when it was seen
again) beside ``type`` at the top of the body, as the design names them.

Signature (header ``Connecfy-Signature``): ``t=<unix seconds>,v1=<hex>``, where the hex is
HMAC-SHA256 with the endpoint's secret over ``<t>.<body>``. For a day after a secret is
rotated a second ``v1=`` signed with the previous secret follows. A receiver recomputes
the HMAC over the raw body, compares in constant time, and refuses a ``t`` more than
five minutes away from its clock (a replay).
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from broker.clock import iso_utc
from broker.ids import crockford_base32
from broker.records import STATUSES

MESSAGE_EVENT_TYPES: tuple[str, ...] = tuple(f"message.{status}" for status in STATUSES)
DEVICE_EVENT_TYPES: tuple[str, ...] = ("device.offline", "device.online")
EVENT_TYPES: tuple[str, ...] = (*MESSAGE_EVENT_TYPES, *DEVICE_EVENT_TYPES)
TEST_EVENT = "webhook.test"
SIGNATURE_HEADER = "Connecfy-Signature"
EVENT_ID_HEADER = "Connecfy-Event-Id"
EVENT_TYPE_HEADER = "Connecfy-Event-Type"
TOLERANCE_SECONDS = 300


class QueuedEvent(msgspec.Struct, array_like=True, frozen=True):
    """An event waiting in an endpoint's lane (kept compact: a backlog can be long)."""

    id: str
    type: str
    message_id: str  # "" for a device's event
    device: str
    at: int  # ms, when the status changed (a device's event: when it went offline or came back)
    error: str
    queued_ms: int  # when it was first queued for this endpoint: retries stop a day later
    manual: bool = False  # queued again by hand from the delivery log
    sender: str = ""  # message.received: who sent the SMS
    text: str = ""  # message.received: its text
    device_name: str = ""  # device.offline, device.online: the device's name when the event was queued

    @property
    def ordering_key(self) -> str:
        """What the events that must arrive in order share (one lane): the message, or
        for a device's events the device."""
        return self.device if self.type in DEVICE_EVENT_TYPES else self.message_id


class EventData(msgspec.Struct, omit_defaults=False):
    message_id: str
    status: str
    device_id: str | None
    error: str | None


class ReceivedData(msgspec.Struct):
    """``message.received``: an SMS one of the account's phones received."""

    message_id: str
    status: str
    device_id: str | None
    sender: str = msgspec.field(name="from")
    message: str


class EventBody(msgspec.Struct):
    id: str
    type: str
    created_at: str
    data: EventData | ReceivedData | dict[str, str]


class DeviceEventBody(msgspec.Struct):
    """``device.offline``, ``device.online``: the design's fields (type, device_id,
    device_name, at) with the id and created_at every event has."""

    id: str
    type: str
    created_at: str
    device_id: str
    device_name: str
    at: str


def event_id(shard: str, stream_id: str) -> str:
    """``evt_`` and 26 base32 digits of a hash of the stream entry: stable for the event."""
    digest = hashlib.sha256(f"{shard}|{stream_id}".encode()).digest()
    return "evt_" + crockford_base32(int.from_bytes(digest[:17], "big") >> 6, 26).lower()


def event_type(fields: dict[str, str]) -> str:
    """The event type of a stream entry: a device's change of presence names its own,
    a message's status change is ``message.<status>``."""
    return fields.get("event") or f"message.{fields['status']}"


def event_from_stream(
    shard: str, stream_id: str, fields: dict[str, str], queued_ms: int, device_name: str = ""
) -> QueuedEvent:
    kind = event_type(fields)
    if kind in DEVICE_EVENT_TYPES:
        return QueuedEvent(
            event_id(shard, stream_id),
            kind,
            "",
            fields["device"],
            int(fields["at"]),
            "",
            queued_ms,
            device_name=device_name,
        )
    return QueuedEvent(
        event_id(shard, stream_id),
        f"message.{fields['status']}",
        fields["id"],
        fields.get("device", ""),
        int(fields["at"]),
        fields.get("error", ""),
        queued_ms,
        sender=fields.get("from", ""),
        text=fields.get("body", ""),
    )


def body(event: QueuedEvent) -> bytes:
    if event.type in DEVICE_EVENT_TYPES:
        at = iso_utc(event.at) or ""
        return msgspec.json.encode(DeviceEventBody(event.id, event.type, at, event.device, event.device_name, at))
    if event.type == TEST_EVENT:
        data: EventData | ReceivedData | dict[str, str] = {"endpoint_id": event.message_id}
    elif event.type == "message.received":
        data = ReceivedData(event.message_id, "received", event.device or None, event.sender, event.text)
    else:
        data = EventData(
            event.message_id, event.type.removeprefix("message."), event.device or None, event.error or None
        )
    return msgspec.json.encode(EventBody(event.id, event.type, iso_utc(event.at) or "", data))


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + payload, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], timestamp: int, payload: bytes) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, payload)}" for s in secrets)])


def verify(secret: str, header: str, payload: bytes, now_s: int, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """Whether ``header`` signs ``payload`` with ``secret`` and is recent: what a receiver
    does (docs/webhooks.md shows the same in a few lines)."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now_s - int(stamps[0])) > tolerance:
        return False
    expected = sign(secret, int(stamps[0]), payload)
    return any(hmac.compare_digest(expected, v) for k, _, v in parts if k == "v1")
