"""Segment counting as the phone will split the text."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker.segments import GSM_BASIC, GSM_EXTENSION, count_segments


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),
        ("€" * 81, "GSM-7", 2),
        ("a" * 152 + "€", "GSM-7", 1),
        ("a" * 152 + "€" + "a" * 8, "GSM-7", 2),
        ("п" * 70, "UCS-2", 1),
        ("п" * 71, "UCS-2", 2),
        ("п" * 134, "UCS-2", 2),
        ("п" * 135, "UCS-2", 3),
        ("😀" * 35, "UCS-2", 1),
        ("😀" * 36, "UCS-2", 2),
        ("a" * 66 + "😀", "UCS-2", 1),
        ("Hello", "GSM-7", 1),
        ("Ünïcode ok? Ü is GSM, ï is not", "UCS-2", 1),
    ],
)
def test_known_lengths(text: str, encoding: str, count: int) -> None:
    result = count_segments(text)
    assert (result.encoding, result.count) == (encoding, count)


def test_escape_pair_is_not_split_across_segments() -> None:
    # 152 septets then a two-septet character: it does not fit the first part's 153.
    assert count_segments("a" * 152 + "€" + "a" * 152).count == 3


@given(st.text(min_size=1, max_size=1600))
def test_segments_cover_the_text(text: str) -> None:
    result = count_segments(text)
    per_part = 153 if result.encoding == "GSM-7" else 67
    single = 160 if result.encoding == "GSM-7" else 70
    if result.units <= single:
        assert result.count == 1
    else:
        assert result.count * per_part >= result.units
        assert (result.count - 1) * per_part < result.units + result.count  # at most one unit lost per part


def _by_codec(text: str) -> tuple[str, list[int]]:
    """The reference: ask the gsm0338 codec about every character. The one exception is
    a literal ESC: the codec writes it as the escape septet, but it is no character of
    the alphabet (Android's table has no glyph there), so such text goes as UCS-2."""
    if "\x1b" in text:
        return "UCS-2", [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    try:
        return "GSM-7", [len(ch.encode("gsm03.38")) for ch in text]
    except UnicodeEncodeError:
        return "UCS-2", [2 if ord(ch) > 0xFFFF else 1 for ch in text]


GSM_AND_MORE = st.text(
    alphabet=st.sampled_from([*sorted(GSM_BASIC | GSM_EXTENSION), "п", "😀", "ç", "é"]), min_size=1, max_size=400
)


@given(st.one_of(st.text(min_size=1, max_size=400), GSM_AND_MORE))
@example("\x1b")
@example("a\x0c{")
def test_tables_agree_with_the_codec(text: str) -> None:
    encoding, sizes = _by_codec(text)
    result = count_segments(text)
    assert (result.encoding, result.units) == (encoding, sum(sizes))
