"""The measured window of a run: from the start of the load to the senders' last answer.

At each end the server's ``/metrics`` (``server_metrics``) and memory (its processes'
RSS, Redis's ``used_memory``) are read; over the window come the figures a fleet is
judged by, each side by side with the client's own:

- per request kind, the client's p50/p99 (from the planned time) and the server's
  (from its histograms: the time in the server alone);
- requests per phone per minute, by kind (polls, long polls, heartbeats, reports);
- 202 → claimed, p50/p99, by where the message waited (device queue, the account's own
  pool, the platform pool);
- each generator process's event-loop lag and CPU, and the connections it held;
- the workers' garbage-collector pauses (from ``/metrics``) and Redis's latency monitor's
  events over 20 ms (a slow command or script, an append-only file write or fsync...),
  the two causes to rule in or out when every request kind's latency jumps at once.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.load import loop_lag, server_metrics
from bench.load.client import KINDS, PHONE_KINDS, Recorder, percentile
from bench.load.deployment import Deployment
from bench.load.fleet import Fleet
from bench.load.ledger import QUEUES, Ledger


class Window:
    def __init__(self, deployment: Deployment, recorder: Recorder) -> None:
        self.deployment = deployment
        self.recorder = recorder
        self.start = self.end = 0.0
        self.metrics: list[server_metrics.Snapshot | None] = []
        self.memory: list[dict[str, Any]] = []
        self.wall: list[float] = []  # Unix time of each snapshot
        self.redis_latency: dict[str, dict[str, float]] | None = None

    async def snapshot(self) -> float:
        """Read the server's metrics and memory now; returns the run second it was taken."""
        at = self.recorder.now()
        self.wall.append(time.time())
        self.metrics.append(await server_metrics.scrape(self.deployment.base_url))
        self.memory.append(await self.deployment.memory())
        return at

    async def open(self) -> None:
        await self.deployment.watch_redis_latency()
        self.start = await self.snapshot()

    async def close(self) -> None:
        self.end = self.recorder.now()
        await self.snapshot()
        self.redis_latency = await self.deployment.redis_latency(self.wall[0], self.wall[-1])

    def figures(self, ledger: Ledger, fleet: Fleet, phones: int, tasks_kind: str, parent_lag: Any) -> dict[str, Any]:
        start, end = self.start, self.end
        seconds = [row for s, row in self.recorder.seconds.items() if math.ceil(start) <= s < int(end)]
        span = len(seconds)  # whole seconds counted
        client: dict[str, Any] = {}
        for kind in KINDS:
            values = [v for row in seconds for v in row.latencies.get(kind, ())]
            requests = sum(row.requests.get(kind, 0) for row in seconds)
            if requests:
                client[kind] = {
                    "count": requests,
                    "errors": sum(row.errors.get(kind, 0) for row in seconds),
                    "p50_ms": round(percentile(values, 50) * 1000, 2),
                    "p99_ms": round(percentile(values, 99) * 1000, 2),
                }
        minutes = span / 60
        per_phone_minute = {
            kind: round(sum(row.requests.get(kind, 0) for row in seconds) / phones / minutes, 3)
            for kind in PHONE_KINDS
            if phones and minutes
        }
        claimed: dict[str, Any] = {}
        for queue in QUEUES:
            waits = [
                max(0.0, e.claimed - e.accepted)
                for e in ledger.accepted.values()
                if e.queue == queue and e.claimed is not None
            ]
            if waits:
                claimed[queue] = {
                    "count": len(waits),
                    "p50_ms": round(percentile(waits, 50) * 1000, 1),
                    "p99_ms": round(percentile(waits, 99) * 1000, 1),
                    "max_ms": round(max(waits) * 1000, 1),
                }
        before, after = [*self.metrics, None, None][:2]
        return {
            "start_s": round(start, 2),
            "end_s": round(end, 2),
            "seconds_counted": span,
            "client": client,
            "server": server_metrics.window(before, after, tasks_kind),
            "requests_per_phone_minute": {**per_phone_minute, "all": round(sum(per_phone_minute.values()), 3)},
            "claimed_after_202": claimed,
            "generators": fleet.figures(start, end),
            "parent_loop_lag_ms": loop_lag.summary(parent_lag.samples, start, end),
            "redis_latency_events": self.redis_latency,
            "memory": {
                "start": self.memory[0] if self.memory else None,
                "end": self.memory[-1] if self.memory else None,
            },
        }
