"""Time as people and the API read it: timestamps in ISO-8601 UTC with milliseconds, and
spans of time in their largest whole unit."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def iso_utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


ISO_MOMENT = re.compile(
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""An ISO-8601 moment as phones and programs write it: date, "T", time with seconds (and
up to six decimals), and "Z" or an offset."""


def parse_iso_ms(value: object) -> int | None:
    """A moment written as :data:`ISO_MOMENT` says, as ms since the epoch; None when
    ``value`` is not one, or names a day the calendar does not have."""
    if not isinstance(value, str) or not ISO_MOMENT.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def duration_text(seconds: int) -> str:
    """A span in its largest whole unit: "24 h", "90 min", "45 s"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
