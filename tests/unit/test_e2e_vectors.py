"""End-to-end envelopes: the shared vectors (``e2e-vectors.json``, the file the phone's
JUnit suite reads too) through the SDK, an independent PBKDF2 (``hashlib``), and the
server's envelope check; and the segment bound the server charges, which no text of
that many UTF-8 bytes may pass."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from connecfy_client import e2e
from hypothesis import example, given
from hypothesis import strategies as st

from broker import envelopes, errors
from broker.segments import count_segments

ROOT = Path(__file__).resolve().parents[2]
VECTORS_FILE = ROOT / "android-client" / "core" / "src" / "test" / "resources" / "e2e-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
GOOD = VECTORS["vectors"]
BAD = VECTORS["failures"]


def test_the_file_covers_non_ascii_emoji_and_a_wrong_passphrase() -> None:
    assert VECTORS["iterations"] == e2e.ITERATIONS == 100_000
    texts = [v["plaintext"] for v in GOOD]
    assert any(not t.isascii() for t in texts)
    assert any(ord(ch) > 0xFFFF for t in texts for ch in t)  # an emoji outside the BMP
    assert any(not v["passphrase"].isascii() for v in GOOD)
    assert "wrong-passphrase" in {f["name"] for f in BAD}


@pytest.mark.parametrize("vector", GOOD, ids=[v["name"] for v in GOOD])
def test_each_vector_encrypts_and_decrypts_as_written(vector: dict[str, Any]) -> None:
    salt, nonce = bytes.fromhex(vector["salt"]), bytes.fromhex(vector["nonce"])
    key = hashlib.pbkdf2_hmac("sha256", vector["passphrase"].encode(), salt, VECTORS["iterations"], 32)
    assert key.hex() == vector["key"] == e2e.derive_key(vector["passphrase"], salt).hex()
    envelope = e2e.encrypt(vector["plaintext"], vector["passphrase"], salt=salt, nonce=nonce)
    assert envelope == vector["envelope"]
    assert e2e.decrypt(vector["envelope"], vector["passphrase"]) == vector["plaintext"]
    raw = base64.b64decode(envelope[3:])
    assert raw[:16] == salt and raw[16:28] == nonce
    assert envelopes.plaintext_bytes(envelope) == len(vector["plaintext"].encode()) == vector["plaintext_bytes"]
    assert envelopes.most_segments(vector["plaintext_bytes"]) >= count_segments(vector["plaintext"]).count


@pytest.mark.parametrize("failure", BAD, ids=[f["name"] for f in BAD])
def test_each_failure_is_refused(failure: dict[str, Any]) -> None:
    assert failure["error"] == "decrypt_failed"
    with pytest.raises(e2e.DecryptionFailed):
        e2e.decrypt(failure["envelope"], failure["passphrase"])


def test_fresh_envelopes_differ_and_round_trip() -> None:
    first, second = e2e.encrypt("same text", "pw"), e2e.encrypt("same text", "pw")
    assert first != second  # a fresh salt and nonce every time
    assert e2e.decrypt(first, "pw") == e2e.decrypt(second, "pw") == "same text"


@pytest.mark.parametrize(
    ("envelope", "why"),
    [
        ("hello", "envelope"),
        ("v2:" + "A" * 64, "envelope"),
        ("v1:" + "A" * 56, "characters"),  # 42 bytes: less than salt, nonce and tag
        ("v1:" + "A" * 59 + "*", "base64"),
        ("v1:" + "A" * 58 + "=A", "base64"),
        ("v1:" + "A" * 12000, "characters"),
    ],
)
def test_the_server_refuses_malformed_envelopes_naming_message(envelope: str, why: str) -> None:
    with pytest.raises(errors.InvalidInput) as raised:
        envelopes.plaintext_bytes(envelope)
    assert raised.value.field == "message"
    assert why in raised.value.detail


def test_the_largest_plaintext_is_taken_and_one_byte_more_is_not() -> None:
    largest = "v1:" + base64.b64encode(bytes(44 + envelopes.MAX_PLAINTEXT_BYTES)).decode()
    assert len(largest) == envelopes.MAX_ENVELOPE_CHARS
    assert envelopes.plaintext_bytes(largest) == 4 * 1600
    with pytest.raises(errors.InvalidInput):
        envelopes.plaintext_bytes("v1:" + base64.b64encode(bytes(45 + envelopes.MAX_PLAINTEXT_BYTES)).decode())
    with pytest.raises(errors.InvalidInput):
        envelopes.plaintext_bytes("v1:" + base64.b64encode(bytes(44)).decode())  # no ciphertext at all


# Texts built to take many segments for their bytes: one-byte characters that force
# UCS-2 (the backtick is not GSM-7), surrogate pairs that do not fit a part's last unit,
# two-septet GSM-7 characters.
_CHARS = st.sampled_from(["a", "`", "{", "€", "é", "ж", "😀", "\u20ac", "~"])


@given(st.lists(_CHARS, min_size=1, max_size=1600).map("".join))
@example("`" + "a" * 65 + ("a" * 66 + "😀") * 20)
@example("`" * 70)
@example("`" * 71)
@example("{" * 1600)
@example("`" + ("a" * 66 + "😀") * 23)
def test_the_charged_bound_is_never_below_the_real_count(text: str) -> None:
    assert count_segments(text).count <= envelopes.most_segments(len(text.encode()))


def test_the_bound_is_close_for_one_byte_ucs2_text() -> None:
    """Not a loose guess: for text of one-byte characters that is UCS-2 (the most
    segments a byte can cost), the bound is at most one segment in 67 above the count."""
    for n in (1, 70, 71, 134, 135, 1600, 6400):
        real = count_segments("`" + "a" * (n - 1)).count
        assert real <= envelopes.most_segments(n) <= real + 1 + real // 67
    assert envelopes.plaintext_bytes("v1:" + base64.b64encode(bytes(45)).decode()) == 1
