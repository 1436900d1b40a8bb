"""Where a webhook may point: no server-side request forgery.

An endpoint URL must be ``https://`` with a host, no user name or password, at most
2,048 characters. Plain ``http://`` is taken only for a loopback host and only with
``CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP`` (development and tests); the same setting is
what lets loopback addresses through at all.

Addresses are checked where they are used: the resolver of the delivering HTTP client
(:class:`SafeResolver`) drops every address that is not public (private, loopback,
link-local such as the 169.254.169.254 metadata service, carrier-grade NAT, multicast,
reserved, IPv4 inside IPv6), and a URL whose host resolves to none is not contacted;
the connection goes to an address that passed, so a name re-resolving to a private
address later (DNS rebinding) gains nothing. A URL naming an address directly is checked
the same way before each request, and at registration, where a name that resolves only
to refused addresses is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from broker import errors

MAX_URL = 2_048
RESOLVE_TIMEOUT_S = 3.0
_LOOPBACK_NAMES = ("localhost", "localhost.")


class WebhookUrlRefused(errors.InvalidInput):
    """This webhook URL is not allowed."""

    code = "webhook_url_refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="url")


def address_allowed(address: str, allow_loopback: bool) -> bool:
    """Whether a delivery may connect to ``address`` (an IPv4 or IPv6 literal)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    literal = literal_address(host)
    if literal is not None:
        ip = ipaddress.ip_address(literal)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback
    host = host.lower()
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


def check_url(url: object, allow_loopback: bool) -> str:
    """The URL if it may be registered as written (before any name is resolved)."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookUrlRefused("url must be an https:// URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise WebhookUrlRefused(f"url must be at most {MAX_URL} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise WebhookUrlRefused("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"url is not a valid URL: {exc}") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookUrlRefused("url must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("url must not carry a user name or password")
    if port == 0:
        raise WebhookUrlRefused("url must not use port 0")
    loopback = is_loopback_host(host)
    if loopback and not allow_loopback:
        raise WebhookUrlRefused("url must not point at this server (loopback)")
    if parts.scheme == "http" and not loopback:
        raise WebhookUrlRefused("url must use https:// (plain http:// only for loopback in development)")
    literal = literal_address(host)
    if literal is not None and not address_allowed(literal, allow_loopback):
        raise WebhookUrlRefused(f"url must not point at a private, link-local or reserved address ({literal})")
    return url


async def check_resolves(url: str, allow_loopback: bool) -> None:
    """Refuse a URL whose host resolves only to refused addresses. A host that does not
    resolve right now is let through: delivery checks every address again anyway."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if literal_address(host) is not None:
        return
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError):
        return
    found = {str(info[4][0]) for info in infos}
    if found and not any(address_allowed(a, allow_loopback) for a in found):
        raise WebhookUrlRefused(
            f"url's host {host} resolves to private or reserved addresses only ({', '.join(sorted(found))})"
        )


class NoAllowedAddress(OSError):
    """The host resolved to no address a webhook may reach."""


class SafeResolver(AbstractResolver):
    """aiohttp's threaded resolver, keeping only addresses :func:`address_allowed` takes."""

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if address_allowed(r["host"], self.allow_loopback)]
        if not allowed:
            raise NoAllowedAddress(
                f"{host} resolves to no public address ({', '.join(sorted({r['host'] for r in found}))})"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
