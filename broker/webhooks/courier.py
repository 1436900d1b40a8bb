"""One webhook POST: signed, time-limited, to a checked address, redirects not followed.

The courier owns one aiohttp session (connections kept alive per host) whose resolver
is :class:`~broker.webhooks.addresses.SafeResolver`; proxies from the environment are
ignored. A 2xx answer is a delivery; anything else (another status, a redirect, a
timeout, a refused address, a connection error) is a failure with its reason.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp
import msgspec

from broker import __version__
from broker.context import Clock, wall_clock_ms
from broker.webhooks import events
from broker.webhooks.addresses import SafeResolver, address_allowed, literal_address

RESPONSE_KEPT = 200  # characters of a failed answer's body kept in the delivery log


class Outcome(msgspec.Struct, frozen=True):
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str


class Courier:
    def __init__(
        self, *, timeout_s: float, max_in_flight: int, allow_loopback: bool, clock: Clock = wall_clock_ms
    ) -> None:
        self.timeout_s = timeout_s
        self.clock = clock  # the signature's timestamp: the broker's clock, in seconds
        self.max_in_flight = max_in_flight
        self.allow_loopback = allow_loopback
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=SafeResolver(self.allow_loopback),
                limit=self.max_in_flight,
                limit_per_host=0,
                ttl_dns_cache=10,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=False,
                headers={"User-Agent": f"Connecfy-Webhooks/{__version__}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, secrets: list[str], event: events.QueuedEvent) -> Outcome:
        payload = events.body(event)
        literal = literal_address(urlsplit(url).hostname or "")
        if literal is not None and not address_allowed(literal, self.allow_loopback):
            return Outcome(False, None, 0, f"address refused: {literal} is not public")
        timestamp = self.clock() // 1000
        headers = {
            "Content-Type": "application/json",
            events.SIGNATURE_HEADER: events.signature_header(secrets, timestamp, payload),
            events.EVENT_ID_HEADER: event.id,
            events.EVENT_TYPE_HEADER: event.type,
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.session().post(url, data=payload, headers=headers, allow_redirects=False) as answer:
                    text = ""
                    if not 200 <= answer.status < 300:
                        text = (await answer.content.read(RESPONSE_KEPT)).decode("utf-8", "replace")
                    else:
                        await answer.content.read(RESPONSE_KEPT)
        except TimeoutError:
            return Outcome(False, None, _ms_since(started), f"timed out after {self.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            return Outcome(False, None, _ms_since(started), f"could not connect: {exc.os_error or exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(False, None, _ms_since(started), f"{type(exc).__name__}: {exc}"[:RESPONSE_KEPT])
        latency = _ms_since(started)
        if 200 <= answer.status < 300:
            return Outcome(True, answer.status, latency, "")
        if 300 <= answer.status < 400:
            return Outcome(False, answer.status, latency, "redirects are not followed")
        said = " ".join(text.split())
        return Outcome(
            False,
            answer.status,
            latency,
            f"HTTP {answer.status}: {said}"[:RESPONSE_KEPT] if said else f"HTTP {answer.status}",
        )


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
