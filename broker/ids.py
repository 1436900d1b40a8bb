"""Identifiers and secrets: message ids, device and account ids, tokens, pairing codes."""

from __future__ import annotations

import hashlib
import secrets

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Pairing codes are typed by people: no 0/O, 1/I/L, U.
_PAIRING_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


def message_id(now_ms: int) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 Crockford base32 chars.

    Opaque, unique and time-sortable: ids compare in creation order to the millisecond.
    """
    value = (now_ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def message_ids(now_ms: int, count: int) -> list[str]:
    """``count`` message ids in ascending order, so a batch keeps its order in queues."""
    return sorted(message_id(now_ms) for _ in range(count))


def short_id() -> str:
    """An account or device id: 16 lower-case base32 characters (80 bits)."""
    value = secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(16)).lower()


def secret_token() -> str:
    """A device token or API key: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def is_plain_id(value: object, max_chars: int = 64) -> bool:
    """Whether ``value`` can be one of our ids: letters and digits only, so a caller's
    string never reaches a key name with a separator or a pattern in it."""
    return isinstance(value, str) and 0 < len(value) <= max_chars and value.isalnum()


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def pairing_code() -> str:
    """Eight characters a person can read off a screen and type (about 39 bits)."""
    return "".join(secrets.choice(_PAIRING_ALPHABET) for _ in range(8))
