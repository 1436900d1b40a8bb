"""How many SMS segments a text takes, as the phone's SmsManager will split it.

GSM 03.38 text (7-bit, the ``gsm0338`` codec decides what is encodable, extension
characters such as ``€`` and ``{`` take two septets) fits 160 septets in one segment,
153 per segment once split. Anything else goes as UCS-2: 70 UTF-16 code units in one
segment, 67 per segment once split. A character's units are never split across two
segments (an escape pair or a surrogate pair stays whole), as on the phone.
"""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from broker.records import Segments

_GSM_SINGLE, _GSM_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67


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
    try:
        text.encode("gsm03.38")
    except UnicodeEncodeError:
        units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
        return Segments("UCS-2", _pack(units, _UCS2_SINGLE, _UCS2_PART), sum(units))
    units = [len(ch.encode("gsm03.38")) for ch in text]
    return Segments("GSM-7", _pack(units, _GSM_SINGLE, _GSM_PART), sum(units))
