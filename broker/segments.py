"""How many SMS segments a text takes, as the phone's SmsManager will split it.

GSM 03.38 text (7-bit) fits 160 septets in one segment, 153 per segment once split;
characters of the extension table such as ``€`` and ``{`` take two septets. Anything
else goes as UCS-2: 70 UTF-16 code units in one segment, 67 per segment once split. A
character's units are never split across two segments (an escape pair or a surrogate
pair stays whole), as on the phone.

Which characters are GSM-7 comes from the ``gsm0338`` codec: its decoding of every
single septet and every escape pair gives the two tables, read once at import.
"""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from broker.records import Segments

_GSM_SINGLE, _GSM_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67
_ESCAPE = 0x1B


def _gsm_tables() -> tuple[frozenset[str], frozenset[str]]:
    basic = {bytes([i]).decode("gsm03.38") for i in range(128) if i != _ESCAPE}
    extension = set()
    for i in range(128):
        try:
            char = bytes([_ESCAPE, i]).decode("gsm03.38")
        except UnicodeDecodeError:
            continue
        if len(char) == 1 and char not in basic:
            extension.add(char)
    return frozenset(basic), frozenset(extension)


GSM_BASIC, GSM_EXTENSION = _gsm_tables()
_GSM_ALL = GSM_BASIC | GSM_EXTENSION


def _pack(units: list[int], single: int, part: int) -> int:
    if sum(units) <= single:
        return 1
    count, room = 1, part
    for size in units:
        if size > room:
            count += 1
            room = part
        room -= size
    return count


def count_segments(text: str) -> Segments:
    chars = set(text)
    if chars <= GSM_BASIC:
        units = len(text)
        count = 1 if units <= _GSM_SINGLE else -(-units // _GSM_PART)
        return Segments("GSM-7", count, units)
    if chars <= _GSM_ALL:
        sizes = [2 if ch in GSM_EXTENSION else 1 for ch in text]
        return Segments("GSM-7", _pack(sizes, _GSM_SINGLE, _GSM_PART), sum(sizes))
    if text.isascii() or all(ord(ch) <= 0xFFFF for ch in chars):
        units = len(text)
        count = 1 if units <= _UCS2_SINGLE else -(-units // _UCS2_PART)
        return Segments("UCS-2", count, units)
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Segments("UCS-2", _pack(sizes, _UCS2_SINGLE, _UCS2_PART), sum(sizes))
