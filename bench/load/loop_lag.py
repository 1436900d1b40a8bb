"""How late a process's event loop runs: it asks to wake every ``interval`` and notes
by how much it overslept. A load generator whose loop runs late sends its requests late
and reads their answers late; its latencies then measure itself, not the server. Every
generator process (and the parent, with the senders) measures its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.load.client import percentile

INTERVAL = 0.1


class LoopLag:
    def __init__(self, clock: Callable[[], float], interval: float = INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (when it should have woken, seconds late)
        self.taken = 0  # samples handed out by ``take``

    async def run(self) -> None:
        while True:
            planned = self.clock() + self.interval
            await asyncio.sleep(self.interval)
            self.samples.append((planned, max(0.0, self.clock() - planned)))

    def take(self) -> list[tuple[float, float]]:
        """The samples since the last call."""
        new = self.samples[self.taken :]
        self.taken = len(self.samples)
        return new


def summary(samples: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """p50, p99 and max lateness (ms) of the samples from ``start`` to ``end``, and the
    five latest wake-ups (run second, ms late)."""
    inside = [(at, lag) for at, lag in samples if start <= at <= end]
    late = [lag for _, lag in inside]
    return {
        "samples": len(late),
        "p50_ms": round(percentile(late, 50) * 1000, 2),
        "p99_ms": round(percentile(late, 99) * 1000, 2),
        "max_ms": round(max(late, default=0.0) * 1000, 2),
        "worst": [(round(at, 1), round(lag * 1000, 1)) for at, lag in sorted(inside, key=lambda s: -s[1])[:5]],
    }
