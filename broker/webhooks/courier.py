"""One webhook POST: signed, time-limited, to a checked address, redirects not followed.

Before each POST the stored URL is read again by
:func:`~broker.webhooks.addresses.parse_url` (the same reading as at registration) and
its host resolved by :class:`~broker.webhooks.addresses.SafeResolver`, which keeps only
allowed addresses. The request is then made to one of those addresses itself, pinned:
the URL handed to aiohttp is rebuilt with the address as its host, the ``Host`` header
carries the name, and for ``https://`` the TLS server name (SNI) and the certificate
check use the name too. aiohttp therefore never reads the original host nor resolves a
name (its resolver refuses every one); addresses are tried in the resolver's order
until one connects. The courier owns one aiohttp session (connections kept alive per
address and name); proxies from the environment are ignored. A 2xx answer is a
delivery; anything else (another status, a redirect, a timeout, a refused address, a
connection error) is a failure with its reason.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
from yarl import URL

from broker import __version__
from broker.context import Clock, wall_clock_ms
from broker.webhooks import events
from broker.webhooks.addresses import NoAllowedAddress, NoResolver, SafeResolver, Target, WebhookUrlRefused, parse_url

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
        self.resolver = SafeResolver(allow_loopback)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=NoResolver(),
                use_dns_cache=False,
                limit=self.max_in_flight,
                limit_per_host=0,
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
        try:
            target = parse_url(url, self.allow_loopback)
        except WebhookUrlRefused as exc:
            return Outcome(False, None, 0, f"address refused: {exc.detail}"[:RESPONSE_KEPT])
        payload = events.body(event)
        timestamp = self.clock() // 1000
        headers = {
            "Host": target.netloc,
            "Content-Type": "application/json",
            events.SIGNATURE_HEADER: events.signature_header(secrets, timestamp, payload),
            events.EVENT_ID_HEADER: event.id,
            events.EVENT_TYPE_HEADER: event.type,
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                addresses = await self.resolver.addresses(target)
                status, text = await self._send(target, addresses, payload, headers)
        except TimeoutError:
            return Outcome(False, None, _ms_since(started), f"timed out after {self.timeout_s:g} s")
        except NoAllowedAddress as exc:
            return Outcome(False, None, _ms_since(started), f"address refused: {exc}"[:RESPONSE_KEPT])
        except aiohttp.ClientConnectorError as exc:
            reason = str(exc.os_error) or type(exc.os_error).__name__
            return Outcome(False, None, _ms_since(started), f"could not connect: {reason}"[:RESPONSE_KEPT])
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(False, None, _ms_since(started), f"{type(exc).__name__}: {exc}"[:RESPONSE_KEPT])
        latency = _ms_since(started)
        if 200 <= status < 300:
            return Outcome(True, status, latency, "")
        if 300 <= status < 400:
            return Outcome(False, status, latency, "redirects are not followed")
        said = " ".join(text.split())
        return Outcome(False, status, latency, f"HTTP {status}: {said}"[:RESPONSE_KEPT] if said else f"HTTP {status}")

    async def _send(
        self, target: Target, addresses: list[str], payload: bytes, headers: dict[str, str]
    ) -> tuple[int, str]:
        """POST to the first of ``addresses`` that connects: the answer's status and, for a
        failure, the start of its body."""
        # The name the certificate must be for; None when the URL names an address.
        server_name = target.host if target.scheme == "https" and target.address is None else None
        for address in addresses[:-1]:
            try:
                return await self._send_to(target, address, payload, headers, server_name)
            except aiohttp.ClientConnectorError:
                continue
        return await self._send_to(target, addresses[-1], payload, headers, server_name)

    async def _send_to(
        self, target: Target, address: str, payload: bytes, headers: dict[str, str], server_name: str | None
    ) -> tuple[int, str]:
        async with self.session().post(
            pinned_url(target, address),
            data=payload,
            headers=headers,
            server_hostname=server_name,
            allow_redirects=False,
        ) as answer:
            kept = await answer.content.read(RESPONSE_KEPT)
            return answer.status, "" if 200 <= answer.status < 300 else kept.decode("utf-8", "replace")


def pinned_url(target: Target, address: str) -> URL:
    """The request URL for ``target`` with ``address`` (checked) as its host. Built from
    parts, so nothing of the original host is parsed again."""
    host = f"[{address}]" if ":" in address else address
    url = URL.build(
        scheme=target.scheme, host=host, port=target.port, path=target.path, query_string=target.query, encoded=True
    )
    if url.raw_host != address:
        raise NoAllowedAddress(f"the request URL's host {url.raw_host} is not the checked address {address}")
    return url


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
