"""Receiving Connecfy's webhooks: check the signature, then read the event.

The server signs every delivery with the endpoint's secret. Its header is
``Connecfy-Signature: t=<unix seconds>,v1=<hex>``, the hex being HMAC-SHA256 over
``<t>.<raw body>``; for a day after the secret is rotated a second ``v1=``, made with the
previous secret, follows, so a receiver still holding the old secret keeps working while
it is updated. :func:`verify` recomputes the HMAC over the body exactly as received,
compares in constant time, and refuses a ``t`` further than the tolerance from now (a
replayed delivery). Deliveries are retried with the same event id: de-duplicate by
``event.id``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

import msgspec

SIGNATURE_HEADER = "Connecfy-Signature"
EVENT_ID_HEADER = "Connecfy-Event-Id"
EVENT_TYPE_HEADER = "Connecfy-Event-Type"
DEFAULT_TOLERANCE = 300.0  # seconds


class WebhookVerificationError(Exception):
    """The delivery is not to be trusted: no or malformed signature, a wrong one, or too old."""


class EventData(msgspec.Struct, frozen=True):
    """What an event is about. ``message.*`` events: ``message_id``, ``status``,
    ``device_id``, ``error`` (failed); ``message.received`` adds ``sender`` (JSON ``from``)
    and ``message``; the dashboard's test event carries ``endpoint_id`` only."""

    message_id: str | None = None
    status: str | None = None
    device_id: str | None = None
    error: str | None = None
    sender: str | None = msgspec.field(default=None, name="from")
    message: str | None = None
    endpoint_id: str | None = None


class WebhookEvent(msgspec.Struct, frozen=True):
    id: str  # the same on every retry of this event
    type: str  # message.queued, message.sent, message.delivered, message.failed, ..., webhook.test
    created_at: str
    data: EventData


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``v1`` hex the server sends for ``body`` at ``timestamp`` with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes | Iterable[str | bytes],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> WebhookEvent:
    """Check a delivery and return its event; raise :class:`WebhookVerificationError` if
    it is not signed with ``secret`` (or any of several secrets: the current and the
    previous one while you rotate) or its timestamp is more than ``tolerance`` seconds
    from ``now`` (the clock by default).

    ``body`` must be the raw bytes received, before any JSON parsing; ``headers`` any
    mapping of the request's headers (names in any case).
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    header = _header(headers, SIGNATURE_HEADER)
    if header is None:
        raise WebhookVerificationError(f"no {SIGNATURE_HEADER} header")
    parts = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in parts if name == "t"]
    offered = [value for name, _, value in parts if name == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not offered:
        raise WebhookVerificationError(f"malformed {SIGNATURE_HEADER} header")
    timestamp = int(stamps[0])
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        raise WebhookVerificationError(f"signature timestamp {timestamp} is more than {tolerance:g} s from now")
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not secrets:
        raise ValueError("no secret to verify with")
    expected = [signature(s, timestamp, raw).encode() for s in secrets]
    # Every pair is compared (no early exit), each in constant time.
    matched = False
    for candidate in offered:
        for wanted in expected:
            matched |= hmac.compare_digest(wanted, candidate.encode())
    if not matched:
        raise WebhookVerificationError("signature does not match")
    try:
        return msgspec.json.decode(raw, type=WebhookEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WebhookVerificationError(f"signed, but not an event: {exc}") from None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None
