"""End-to-end encrypted messages: the envelope a sender sends in place of the text.

``v1:<base64(salt ‖ nonce ‖ ciphertext ‖ tag)>``: AES-256-GCM under a key derived from
a passphrase the sender shares with its phones (PBKDF2-HMAC-SHA256, 100,000 iterations,
16-byte salt per message, 12-byte nonce, 16-byte tag). The server holds no passphrase
and never decrypts: it checks the envelope's shape and size, and charges budgets by the
most segments a plaintext of that size can take.

AES-GCM's ciphertext is exactly as long as the plaintext's UTF-8 bytes, so the envelope
tells the plaintext's byte length ``L`` and nothing else. A text of at most
:data:`~broker.validation.MAX_MESSAGE_CHARS` characters has at most four bytes a
character, so ``L`` is at most :data:`MAX_PLAINTEXT_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import re

from broker import errors
from broker.validation import MAX_MESSAGE_CHARS

PREFIX = "v1:"
SALT_BYTES, NONCE_BYTES, TAG_BYTES = 16, 12, 16
OVERHEAD_BYTES = SALT_BYTES + NONCE_BYTES + TAG_BYTES
MAX_PLAINTEXT_BYTES = 4 * MAX_MESSAGE_CHARS
"""The largest plaintext (UTF-8 bytes) an envelope may carry: 1,600 characters of four bytes."""
MIN_ENVELOPE_CHARS = len(PREFIX) + 4 * -(-(OVERHEAD_BYTES + 1) // 3)
MAX_ENVELOPE_CHARS = len(PREFIX) + 4 * -(-(OVERHEAD_BYTES + MAX_PLAINTEXT_BYTES) // 3)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_UCS2_SINGLE = 70
_UCS2_PART_WORST = 66
"""A UCS-2 part holds 67 UTF-16 units, but a surrogate pair is never split across two,
so a part may hold only 66 of them before the next part begins."""


def plaintext_bytes(envelope: object, field: str = "message") -> int:
    """The byte length of the plaintext inside a well-formed envelope, or InvalidInput
    naming ``field``."""
    if not isinstance(envelope, str) or not envelope.startswith(PREFIX):
        raise errors.InvalidInput(
            f"'{field}' of an encrypted message must be an envelope 'v1:<base64>' (salt, nonce, ciphertext, tag)",
            field=field,
        )
    if not MIN_ENVELOPE_CHARS <= len(envelope) <= MAX_ENVELOPE_CHARS:
        raise errors.InvalidInput(
            f"'{field}' of an encrypted message must be an envelope of {MIN_ENVELOPE_CHARS} to "
            f"{MAX_ENVELOPE_CHARS} characters (a plaintext of 1 to {MAX_PLAINTEXT_BYTES} UTF-8 bytes)",
            field=field,
        )
    encoded = envelope[len(PREFIX) :]
    if len(encoded) % 4 or not _BASE64.fullmatch(encoded):
        raise errors.InvalidInput(f"'{field}' of an encrypted message is not valid base64 after 'v1:'", field=field)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise errors.InvalidInput(
            f"'{field}' of an encrypted message is not valid base64 after 'v1:'", field=field
        ) from None
    size = len(raw) - OVERHEAD_BYTES
    if not 1 <= size <= MAX_PLAINTEXT_BYTES:
        raise errors.InvalidInput(
            f"'{field}' of an encrypted message must carry 1 to {MAX_PLAINTEXT_BYTES} bytes of ciphertext "
            f"after its {SALT_BYTES}-byte salt and {NONCE_BYTES}-byte nonce, and a {TAG_BYTES}-byte tag",
            field=field,
        )
    return size


def most_segments(plaintext_size: int) -> int:
    """The most SMS segments a text of ``plaintext_size`` UTF-8 bytes can take.

    Every UTF-16 unit takes at least one UTF-8 byte, so the text has at most that many
    units; the worst case is UCS-2 (one non-GSM character makes the whole text UCS-2):
    one segment up to 70 units, else at least 66 units (and so 66 bytes) in every part
    but the last. GSM-7 is never worse: an extension character such as ``{`` takes two
    septets for one byte, 152 septets or more a part, 76 bytes or more."""
    if plaintext_size <= _UCS2_SINGLE:
        return 1
    return -(-plaintext_size // _UCS2_PART_WORST)
