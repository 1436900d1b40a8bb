"""Identifiers and secrets: message ids, device and account ids, tokens, pairing codes."""

from __future__ import annotations

import base64
import hashlib
import secrets

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Pairing codes are typed by people: no 0/O, 1/I/L, U.
_PAIRING_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


# RFC 4648 base32 digits -> Crockford's, so the C base32 encoder does the work.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def crockford_base32(value: int, chars: int) -> str:
    """``value`` (below 32**chars) as exactly ``chars`` Crockford base32 digits, most
    significant first: shifted left to a whole number of 40-bit groups, encoded by
    ``base64.b32encode`` and the digits mapped, the padding digits cut off."""
    groups = -(-chars // 8)
    data = (value << (5 * (8 * groups - chars))).to_bytes(5 * groups, "big")
    return base64.b32encode(data)[:chars].translate(_TO_CROCKFORD).decode()


def message_id(now_ms: int) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 Crockford base32 chars.

    Opaque, unique and time-sortable: ids compare in creation order to the millisecond.
    """
    return message_ids(now_ms, 1)[0]


_CROCKFORD_VALUES = {c: i for i, c in enumerate(_CROCKFORD)}


def message_id_ms(message_id: str) -> int | None:
    """The millisecond a message id was made in (its first 10 characters); None for a
    string that is not one of ours."""
    if len(message_id) != 26:
        return None
    value = 0
    for char in message_id[:10]:
        digit = _CROCKFORD_VALUES.get(char)
        if digit is None:
            return None
        value = value * 32 + digit
    return value


def first_message_id(ms: int) -> str:
    """The least message id of millisecond ``ms`` (every id made in it or later sorts at
    or after it; every id made before it, before it)."""
    return crockford_base32(max(0, min(ms, 2**48 - 1)) << 80, 26)


def message_ids(now_ms: int, count: int) -> list[str]:
    """``count`` message ids in ascending order, so a batch keeps its order in queues.
    The random bits of all of them come from one read of the system's random source."""
    random = secrets.token_bytes(10 * count)
    return sorted(
        crockford_base32((now_ms << 80) | int.from_bytes(random[i : i + 10], "big"), 26)
        for i in range(0, 10 * count, 10)
    )


def short_id() -> str:
    """An account or device id: 16 lower-case base32 characters (80 bits)."""
    value = secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(16)).lower()


def secret_token() -> str:
    """A device token or API key: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


MAX_ID_CHARS = 64
"""The longest id a caller may name (ours are shorter; longer is refused before Redis)."""


def is_plain_id(value: object, max_chars: int = MAX_ID_CHARS) -> bool:
    """Whether ``value`` can be one of our ids: letters and digits only, so a caller's
    string never reaches a key name with a separator or a pattern in it."""
    return isinstance(value, str) and 0 < len(value) <= max_chars and value.isalnum()


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def pairing_code() -> str:
    """Eight characters a person can read off a screen and type (about 39 bits)."""
    return "".join(secrets.choice(_PAIRING_ALPHABET) for _ in range(8))
