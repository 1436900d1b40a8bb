"""Message ids: the base32 encoder against a digit-by-digit reference, and the ULID layout."""

from __future__ import annotations

import random

from broker import ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference(value: int, chars: int) -> str:
    digits = []
    for _ in range(chars):
        digits.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(digits))


def test_crockford_base32_matches_the_digit_by_digit_reference() -> None:
    rng = random.Random(7)
    for chars in (1, 7, 8, 9, 16, 26):
        assert ids.crockford_base32(0, chars) == "0" * chars
        assert ids.crockford_base32(32**chars - 1, chars) == "Z" * chars
        for _ in range(2000):
            value = rng.getrandbits(5 * chars) >> rng.randrange(5 * chars)
            assert ids.crockford_base32(value, chars) == reference(value, chars)


def test_message_ids_carry_their_millisecond_and_sort_in_a_batch() -> None:
    now = 1_795_787_432_585
    batch = ids.message_ids(now, 500)
    assert batch == sorted(batch) and len(set(batch)) == 500
    for message_id in batch:
        value = sum(CROCKFORD.index(c) << (5 * i) for i, c in enumerate(reversed(message_id)))
        assert len(message_id) == 26 and value >> 80 == now
    assert ids.message_id(now + 1) > max(batch)


def test_a_message_id_tells_its_millisecond_and_the_first_id_of_a_millisecond_bounds_it() -> None:
    for ms in (0, 1, 1_800_000_000_000, 2**48 - 1):
        made = ids.message_ids(ms, 20)
        assert {ids.message_id_ms(i) for i in made} == {ms}
        assert all(ids.first_message_id(ms) <= i for i in made)
        if ms < 2**48 - 1:
            assert all(i < ids.first_message_id(ms + 1) for i in made)
    assert [ids.message_id_ms(x) for x in ("", "short", "I" * 26, "0" * 27)] == [None] * 4
