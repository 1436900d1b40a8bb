"""Time as people and the API read it: timestamps in ISO-8601 UTC with milliseconds, and
spans of time in their largest whole unit."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration_text(seconds: int) -> str:
    """A span in its largest whole unit: "24 h", "90 min", "45 s"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
