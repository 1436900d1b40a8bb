"""End-to-end encrypted messages: the envelope the account's phones decrypt.

``v1:<base64(salt ‖ nonce ‖ ciphertext ‖ tag)>`` (standard base64 with padding):
AES-256-GCM with no associated data, under a key derived from the passphrase (its UTF-8
bytes) with PBKDF2-HMAC-SHA256, 100,000 iterations and a fresh random 16-byte salt per
message; a fresh random 12-byte nonce; a 16-byte tag. The server stores and forwards
the envelope and never sees the passphrase or the text. The same format is made by the
dashboard's Send page (WebCrypto) and read by the phone app; ``e2e-vectors.json`` holds
the vectors all three are tested with.

``encrypt(text, passphrase)`` returns the envelope to send with ``"encrypted": true``
(``Client.send(..., passphrase=...)`` does it for you); ``decrypt(envelope, passphrase)``
gives the text back, or raises :class:`DecryptionFailed`.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

PREFIX = "v1:"
ITERATIONS = 100_000
SALT_BYTES, NONCE_BYTES, TAG_BYTES, KEY_BYTES = 16, 12, 16, 32
MAX_TEXT_CHARS = 1_600


class DecryptionFailed(ValueError):
    """The envelope is malformed, or the passphrase is not the one it was made with
    (AES-GCM cannot tell the two apart from a tampered envelope, and does not try)."""


def derive_key(passphrase: str, salt: bytes) -> bytes:
    """The AES-256 key for one message: PBKDF2-HMAC-SHA256 of the passphrase's UTF-8 bytes."""
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt must be {SALT_BYTES} bytes")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=ITERATIONS)
    return kdf.derive(passphrase.encode())


def encrypt(text: str, passphrase: str, *, salt: bytes | None = None, nonce: bytes | None = None) -> str:
    """The envelope of ``text`` (1 to 1,600 characters). ``salt`` and ``nonce`` are
    random unless given; give them only to reproduce a test vector: a nonce used twice
    under one key gives the text away."""
    if not 1 <= len(text) <= MAX_TEXT_CHARS:
        raise ValueError(f"the text must be 1 to {MAX_TEXT_CHARS} characters")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    sealed = AESGCM(derive_key(passphrase, salt)).encrypt(nonce, text.encode(), None)
    return PREFIX + base64.b64encode(salt + nonce + sealed).decode("ascii")


def decrypt(envelope: str, passphrase: str) -> str:
    """The text inside ``envelope``, or :class:`DecryptionFailed`."""
    if not envelope.startswith(PREFIX):
        raise DecryptionFailed("not a v1 envelope")
    try:
        raw = base64.b64decode(envelope[len(PREFIX) :], validate=True)
    except binascii.Error:
        raise DecryptionFailed("the envelope is not valid base64") from None
    if len(raw) < SALT_BYTES + NONCE_BYTES + TAG_BYTES + 1:
        raise DecryptionFailed("the envelope is too short")
    salt, nonce, sealed = raw[:SALT_BYTES], raw[SALT_BYTES : SALT_BYTES + NONCE_BYTES], raw[SALT_BYTES + NONCE_BYTES :]
    try:
        plain = AESGCM(derive_key(passphrase, salt)).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise DecryptionFailed("wrong passphrase, or the envelope was changed") from None
    try:
        return plain.decode()
    except UnicodeDecodeError:
        raise DecryptionFailed("the plaintext is not UTF-8") from None
