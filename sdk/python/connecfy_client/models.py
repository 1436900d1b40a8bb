"""What goes out and what comes back, as msgspec Structs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from connecfy_client import e2e

Priority = Literal["normal", "high"]


class Queued(msgspec.Struct, frozen=True):
    """A message the server took (202): ``status`` is ``queued``, or ``scheduled`` until its ``send_at``.

    ``idempotency_key`` is the key the send went with; ``replayed`` is true when the
    server answered a repeat of it (a retry after a lost answer) with the first ids.
    """

    id: str
    status: str
    idempotency_key: str = ""
    replayed: bool = False


class BatchQueued(msgspec.Struct, frozen=True):
    """A batch the server took whole (202): one entry per message, in the order sent."""

    count: int
    messages: list[Queued]
    idempotency_key: str = ""
    replayed: bool = False


class Outgoing(msgspec.Struct, frozen=True):
    """One message of a batch, with every field a send takes.

    ``send_at``: an aware datetime or ISO-8601 text with a zone (at most 30 days ahead);
    ``valid_for``: seconds (30 to 86,400) or a timedelta; ``sim_slot``: 1 to 4 with a
    ``device_id``; ``priority``: ``"normal"`` or ``"high"``; ``passphrase``: encrypt the
    text end to end with it (:mod:`connecfy_client.e2e`; self-managed accounts, whose
    phones hold the same passphrase): only the envelope leaves this process.
    """

    to: str
    message: str
    device_id: str | None = None
    send_at: datetime | str | None = None
    valid_for: int | timedelta | None = None
    sim_slot: int | None = None
    priority: Priority | None = None
    passphrase: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON object the server takes: fields left out are not sent. With a
        passphrase, each call makes a new envelope (fresh salt and nonce)."""
        body: dict[str, Any] = {"to": self.to, "message": self.message}
        if self.passphrase is not None:
            body["message"] = e2e.encrypt(self.message, self.passphrase)
            body["encrypted"] = True
        if self.device_id is not None:
            body["device_id"] = self.device_id
        if self.send_at is not None:
            body["send_at"] = _instant(self.send_at)
        if self.valid_for is not None:
            body["valid_for"] = _seconds(self.valid_for)
        if self.sim_slot is not None:
            body["sim_slot"] = self.sim_slot
        if self.priority is not None:
            body["priority"] = self.priority
        return body


def _instant(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("send_at needs a time zone (an aware datetime), or the server cannot tell when it is")
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")


def _seconds(value: int | timedelta) -> int:
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    return value


class TimelineEntry(msgspec.Struct, frozen=True):
    status: str
    at: str
    device_id: str | None = None
    error: str | None = None


class Message(msgspec.Struct, frozen=True):
    """One message of the history, as ``GET /api/sms/`` lists it."""

    id: str
    to: str | None
    message: str
    status: str
    direction: str  # "outbound", or "inbound" for an SMS a phone received
    created_at: str
    device_id: str | None = None
    segments: int = 0
    error: str | None = None
    updated_at: str | None = None
    expires_at: str | None = None
    timeline: list[TimelineEntry] = msgspec.field(default_factory=list)
    sender: str | None = msgspec.field(default=None, name="from")  # inbound: who sent it
    received_at: str | None = None
    send_at: str | None = None
    sim_slot: int | None = None
    priority: str | None = None
    encrypted: bool = False  # message is an envelope: connecfy_client.e2e.decrypt(message, passphrase)
    campaign_id: str | None = None  # the campaign it was queued for


class MessagePage(msgspec.Struct, frozen=True):
    items: list[Message]
    next_cursor: str | None
