"""One HTTP session for the whole swarm, and the recorder every figure comes from.

Every request is timed from its *planned* start, not from when the client got round to
sending it: a phone planned to poll at t, a sender planned its n-th message at
t0 + n/rate. A slow server therefore cannot hide behind a slow client (coordinated
omission). The client's own lateness (actual start minus planned) is kept apart as
``lag``: when it grows, the load generator, not the server, is the bottleneck.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from bench.load.http1 import Http1Pool, decoded

KINDS = ("send", "batch", "poll", "long poll", "heartbeat", "status")
PHONE_KINDS = ("poll", "long poll", "heartbeat", "status")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Second:
    """What happened in one second of the run, for the plot and the progress line."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


class Recorder:
    """Latencies, errors and a per-second series, keyed by request kind. The clock is the
    system's monotonic one from ``t0``: a generator process given the parent's ``t0``
    records on the parent's clock."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, Counter[str]] = defaultdict(Counter)
        self.lags: list[float] = []
        self.seconds: dict[int, Second] = defaultdict(Second)
        self.messages_accepted = 0

    def now(self) -> float:
        """Seconds since the run started (the clock every planned time is on)."""
        return time.monotonic() - self.t0

    def record(
        self,
        kind: str,
        planned: float,
        started: float,
        finished: float,
        outcome: str,
        messages: int = 0,
        ready: float | None = None,
    ) -> None:
        """One request: ``outcome`` is "ok", an HTTP status such as "503", or an exception
        name; ``messages`` is how many messages a successful send queued."""
        latency = finished - planned
        second = self.seconds[int(finished)]
        second.requests[kind] += 1
        if outcome == "ok":
            self.latencies[kind].append(latency)
            second.latencies[kind].append(latency)
            second.messages += messages
            self.messages_accepted += messages
        else:
            self.errors[kind][outcome] += 1
            second.errors[kind] += 1
        self.lags.append(started - max(planned, ready or planned))

    def error_count(self) -> int:
        return sum(sum(c.values()) for c in self.errors.values())

    def take_seconds(self, before: int) -> dict[int, Second]:
        """Remove and return the rows of the seconds before ``before`` (complete once the
        clock has passed them: a request is recorded under the second it finished in)."""
        done = {s: row for s, row in self.seconds.items() if s < before}
        for second in done:
            del self.seconds[second]
        return done

    def merge_second(self, second: int, row: Second) -> None:
        """Add another process's row of one second."""
        mine = self.seconds[second]
        mine.requests.update(row.requests)
        mine.errors.update(row.errors)
        mine.messages += row.messages
        for kind, values in row.latencies.items():
            mine.latencies[kind].extend(values)

    def merge(self, latencies: dict[str, list[float]], errors: dict[str, dict[str, int]], lags: list[float]) -> None:
        """Add another process's latencies, errors and lateness (its seconds come apart)."""
        for kind, values in latencies.items():
            self.latencies[kind].extend(values)
        for kind, counts in errors.items():
            self.errors[kind].update(counts)
        self.lags.extend(lags)


class Http:
    """Requests to one base URL, every call recorded under a kind. Phones and API-key
    senders carry their credential in each request and go through the lean client
    (``http1``; a phone's own from its own ``local_address``); a dashboard session keeps
    cookies, in an aiohttp session of its own."""

    def __init__(
        self,
        base_url: str,
        recorder: Recorder,
        *,
        connections: int = 256,
        timeout: float = 30.0,
        cookies: bool = False,
        local_address: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.recorder = recorder
        self.lean = (
            None if cookies else Http1Pool(base_url, size=connections, timeout=timeout, local_address=local_address)
        )
        self.session = (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=connections),
                timeout=aiohttp.ClientTimeout(total=timeout),
                cookie_jar=aiohttp.CookieJar(unsafe=True),
            )
            if cookies
            else None
        )

    async def close(self) -> None:
        if self.lean is not None:
            await self.lean.close()
        if self.session is not None:
            await self.session.close()

    async def _exchange(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        if self.lean is not None:
            status, raw, headers = await self.lean.request(
                method,
                path,
                headers=kwargs.get("headers"),
                body=kwargs.get("data"),
                params=kwargs.get("params"),
                timeout=kwargs.get("timeout"),
            )
            return status, decoded(raw), headers
        assert self.session is not None
        if kwargs.get("timeout") is None:
            kwargs.pop("timeout", None)
        else:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=kwargs["timeout"])
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            raw = await response.read()
            return response.status, decoded(raw), dict(response.headers)

    async def call(
        self,
        kind: str | None,
        method: str,
        path: str,
        *,
        planned: float | None = None,
        ready: float | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        messages: int = 0,
        **kwargs: Any,
    ) -> tuple[int, Any, dict[str, str]]:
        """Make one request; returns (status, decoded JSON body or None, headers).
        Status 0 means no HTTP answer (connection refused, reset, timeout). Latency runs
        from ``planned``; the client's own lateness from ``ready`` when later (a phone
        cannot ask again before its previous answer came)."""
        started = self.recorder.now()
        planned = started if planned is None else planned
        body: Any = None
        headers: dict[str, str] = {}
        if "json" in kwargs:  # msgspec encodes several times faster than aiohttp's json.dumps
            kwargs["data"] = msgspec.json.encode(kwargs.pop("json"))
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
        try:
            status, body, headers = await self._exchange(method, path, **kwargs)
            outcome = "ok" if status in ok else str(status)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            status, outcome = 0, type(exc).__name__
        if kind is not None:
            self.recorder.record(
                kind, planned, started, self.recorder.now(), outcome, messages if outcome == "ok" else 0, ready=ready
            )
        return status, body, headers


def retry_after(headers: dict[str, str], default: float) -> float:
    """Seconds a 429 or 503 asks to wait, or ``default``."""
    try:
        return max(0.0, float(headers.get("Retry-After", default)))
    except ValueError:
        return default
