"""A process's memory of credentials it has looked up (device tokens, API keys).

A plain dict dropping its oldest entry when full: a token names one device for life,
and an API key one account and key id, so nothing in it goes stale; only whether the
device or key still exists is checked on every use, by the caller. (``cachetools``'
LRU would also track use order, a Python-level cost on every poll and send, for no
gain here.)
"""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")

CREDENTIAL_CACHE = 100_000
"""Entries remembered per cache and process (some 25 MB each at most)."""


class CredentialCache(Generic[V]):
    __slots__ = ("_entries", "size")

    def __init__(self, size: int = CREDENTIAL_CACHE) -> None:
        self.size = size
        self._entries: dict[str, V] = {}

    def get(self, key: str) -> V | None:
        return self._entries.get(key)

    def remember(self, key: str, value: V) -> V:
        """Keep ``value`` under ``key``, the oldest entry dropped first when full; returns ``value``."""
        entries = self._entries
        if len(entries) >= self.size:
            del entries[next(iter(entries))]
        entries[key] = value
        return value

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
