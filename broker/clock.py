"""Time as people and the API read it: timestamps in ISO-8601 UTC with milliseconds, and
spans of time in their largest whole unit."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MAX_ISO_CHARS = 40


def parse_iso_ms(value: object) -> int | None:
    """An ISO-8601 date and time as ms since the epoch (one without an offset is UTC);
    None when ``value`` is not one."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ISO_CHARS:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def duration_text(seconds: int) -> str:
    """A span in its largest whole unit: "24 h", "90 min", "45 s"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
