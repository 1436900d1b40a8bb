"""Where a webhook may point: no server-side request forgery.

An endpoint URL must be ``https://`` with a host, no user name or password, at most
2,048 characters. Plain ``http://`` is taken only for a loopback host and only with
``CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP`` (development and tests); the same setting is
what lets loopback addresses through at all.

Every URL goes through one reading, :func:`parse_url`, at registration and again before
each delivery. Its host is normalised once (:func:`normalise_host`): UTS #46 mapping and
IDNA 2008 (so U+1FBF1 SEGMENTED DIGIT ONE then ``27.0.0.1``, fullwidth or mathematical
digits, or ideographic full stops, all read as ``127.0.0.1``), lower case, no trailing
dot; a host ending in a number is read the way URL parsers and ``inet_aton`` read it
(``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` are all ``127.0.0.1``) and
refused if it is not a valid IPv4 address; an IPv6 literal takes its compressed form. A
host that cannot be read this way (invalid IDNA, percent-encoded, an IPv6 zone id, stray
characters) is refused. The URL stored and delivered to is rebuilt from these parts.

An address is allowed (:func:`address_allowed`) only if it is public: not private,
loopback, link-local (such as the 169.254.169.254 metadata service), carrier-grade NAT,
multicast, site-local or reserved. An IPv6 address carrying an IPv4 one is judged by
the IPv4 address for the IPv4-mapped (``::ffff:0:0/96``) and NAT64 (``64:ff9b::/96``)
forms, and refused outright for the IPv4-compatible (``::/96``), local-use NAT64
(``64:ff9b:1::/48``), 6to4 (``2002::/16``), Teredo (``2001::/32``) and ISATAP forms.

Before each delivery the host is resolved here (:class:`SafeResolver`, the system
resolver keeping only allowed addresses; a name's allowed addresses are reused for up to
10 s) and the request is made to one of those addresses, never to the name: the HTTP
client neither reads the original host nor resolves anything itself (see
:mod:`broker.webhooks.courier`), so a name re-resolving to a private address later (DNS
rebinding) gains nothing. At registration a URL naming a refused address or a
``localhost`` name is refused, and so is a name that resolves only to refused
addresses; a name that does not resolve yet is taken, and checked again at every
delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import idna
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from broker import errors

MAX_URL = 2_048
RESOLVE_TIMEOUT_S = 3.0
CHECKED_FOR_S = 10.0  # how long a delivery reuses a name's checked addresses
CHECKED_KEPT = 1_024  # names whose checked addresses are kept at most
DEFAULT_PORTS = {"https": 443, "http": 80}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
# What a path or query keeps as written; anything else (non-ASCII, quotes, braces, ...)
# is percent-encoded as UTF-8.
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


class WebhookUrlRefused(errors.InvalidInput):
    """This webhook URL is not allowed."""

    code = "webhook_url_refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="url")


class NoAllowedAddress(OSError):
    """The host resolved to no address a webhook may reach."""


# Addresses ----------------------------------------------------------------------------


def _refusal(ip: IPAddress, allow_loopback: bool) -> str:
    """Why a delivery may not connect to ``ip`` ("" when it may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # this machine's IPv4 stack: loopback is loopback
            why = _refusal(ip.ipv4_mapped, allow_loopback)
            return f"carries {ip.ipv4_mapped}, which is {why}" if why else ""
        if ip in _NAT64:  # a translator's IPv4 side: never this machine's loopback
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
            why = _refusal(carried, allow_loopback=False)
            return f"carries {carried}, which is {why}" if why else ""
        if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are judged below
            return "an IPv4-compatible IPv6 address"
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        if ip in _SIX_TO_FOUR:
            return "a 6to4 address"
        if ip in _TEREDO:
            return "a Teredo address"
        if (int(ip) >> 32) & 0xFDFF_FFFF == 0x0000_5EFE:
            return "an ISATAP address"
        if ip.is_site_local:
            return "site-local"
    if ip.is_loopback:
        return "" if allow_loopback else "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _SHARED:
        return "carrier-grade NAT"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved (not public)"
    return ""


def refusal(address: str, allow_loopback: bool) -> str:
    """Why a delivery may not connect to ``address``, an IPv4 or IPv6 literal ("" when it
    may). A literal with an IPv6 zone id is refused."""
    if "%" in address:
        return "an address with a zone id"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    return _refusal(ip, allow_loopback)


def address_allowed(address: str, allow_loopback: bool) -> bool:
    """Whether a delivery may connect to ``address`` (an IPv4 or IPv6 literal)."""
    return not refusal(address, allow_loopback)


def _is_loopback(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


# Hosts --------------------------------------------------------------------------------


def _ipv4_part(text: str) -> int | None:
    """One part of a host read as an IPv4 number the way URL parsers and ``inet_aton``
    read it: ``0x`` hexadecimal, a leading ``0`` octal, else decimal."""
    if not text:
        return None
    radix, digits = 10, "0123456789"
    if text[:2] in ("0x", "0X"):
        text, radix, digits = text[2:], 16, "0123456789abcdefABCDEF"
        if not text:
            return 0
    elif len(text) > 1 and text[0] == "0":
        text, radix, digits = text[1:], 8, "01234567"
    if any(c not in digits for c in text):
        return None
    return int(text, radix)


def _ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """``host`` as an IPv4 address written in any of the forms ``inet_aton`` and the
    WHATWG URL standard take (one to four parts, each decimal, octal or hexadecimal)."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers = [_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    return ipaddress.IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(values[:-1])) + values[-1])


def _ends_in_number(host: str) -> bool:
    last = host.rsplit(".", 1)[-1]
    return bool(last) and ((last.isascii() and last.isdigit()) or _ipv4_part(last) is not None)


def normalise_host(host: str) -> str:
    """``host`` as written in a URL's authority (an IPv6 literal in brackets), in the one
    form every later step reads: a lower-case A-label name without a trailing dot, a
    dotted-quad IPv4 address, or a compressed IPv6 address in brackets.

    Raises :class:`WebhookUrlRefused` for a host that cannot be read so."""
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if "%" in inner:
            raise WebhookUrlRefused("url must not carry an IPv6 zone id")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise WebhookUrlRefused(f"url's host {host} is not a valid IPv6 address") from None
    if "%" in host:
        raise WebhookUrlRefused("url's host must not be percent-encoded")
    try:
        name = idna.encode(host, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (UnicodeError, ValueError) as exc:
        raise WebhookUrlRefused(f"url's host is not a valid host name ({exc})") from None
    name = name.lower().removesuffix(".")
    if _ends_in_number(name):
        ip = _ipv4_number(name)
        if ip is None:
            raise WebhookUrlRefused(f"url's host {name} ends in a number but is not an IPv4 address")
        return str(ip)
    if not _NAME.fullmatch(name):
        raise WebhookUrlRefused(f"url's host {name!r} is not a valid host name")
    return name


def host_address(host: str) -> IPAddress | None:
    """The address a normalised host is, or None for a name."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """Whether a normalised host is a loopback address or a ``localhost`` name."""
    ip = host_address(host)
    if ip is not None:
        return _is_loopback(ip)
    return host == "localhost" or host.endswith(".localhost")


# URLs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A webhook URL as read by :func:`parse_url`, every part normalised."""

    scheme: str  # https, or http for loopback
    host: str  # see normalise_host; an IPv6 literal in brackets
    port: int  # the port connected to (443 or 80 unless the URL says otherwise)
    path: str
    query: str
    address: IPAddress | None  # the host when the URL names an address

    @property
    def netloc(self) -> str:
        """The host and, unless it is the scheme's default, the port: the URL's
        authority and the ``Host`` header."""
        return self.host if self.port == DEFAULT_PORTS[self.scheme] else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}" + (f"?{self.query}" if self.query else "")


def _split_authority(netloc: str) -> tuple[str, int | None]:
    if "@" in netloc:
        raise WebhookUrlRefused("url must not carry a user name or password")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise WebhookUrlRefused("url's IPv6 host is missing its closing ]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
    else:
        host, colon, port = netloc.partition(":")
        rest = colon + port
    if not host:
        raise WebhookUrlRefused("url must be an https:// URL with a host")
    if not rest or rest == ":":
        return host, None
    port = rest[1:]
    if not rest.startswith(":") or not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise WebhookUrlRefused(f"url's port {rest!r} is not a port number")
    number = int(port)
    if not 0 < number < 65_536:
        raise WebhookUrlRefused("url's port must be from 1 to 65535")
    return host, number


def parse_url(url: object, allow_loopback: bool) -> Target:
    """The URL's parts if a webhook may point there as written (before any name is
    resolved); raises :class:`WebhookUrlRefused` otherwise. The one reading of a webhook
    URL, at registration and at each delivery. A name is judged by the addresses it
    resolves to (:class:`SafeResolver`), not here."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookUrlRefused("url must be an https:// URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise WebhookUrlRefused(f"url must be at most {MAX_URL} characters")
    if any(ord(c) < 33 or ord(c) == 127 or c.isspace() for c in url):
        raise WebhookUrlRefused("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise WebhookUrlRefused(f"url is not a valid URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        raise WebhookUrlRefused("url must be an https:// URL with a host")
    raw_host, port = _split_authority(parts.netloc)
    host = normalise_host(raw_host)
    address = host_address(host)
    if address is not None:
        why = _refusal(address, allow_loopback)
        if why == "loopback":
            raise WebhookUrlRefused(f"url must not point at this server (loopback {address})")
        if why:
            raise WebhookUrlRefused(
                f"url must not point at a private, link-local or reserved address ({address}: {why})"
            )
    if parts.scheme == "http" and not is_loopback_host(host):
        raise WebhookUrlRefused("url must use https:// (plain http:// only for loopback in development)")
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port or DEFAULT_PORTS[parts.scheme],
        path=quote(parts.path, safe=_PATH_SAFE) or "/",
        query=quote(parts.query, safe=_QUERY_SAFE),
        address=address,
    )


def check_url(url: object, allow_loopback: bool) -> str:
    """The URL to store if it may be registered (before any name is resolved): rebuilt
    from its normalised parts, without a fragment. A ``localhost`` name is refused here
    without asking the resolver (unless loopback is allowed)."""
    target = parse_url(url, allow_loopback)
    if not allow_loopback and is_loopback_host(target.host):
        raise WebhookUrlRefused("url must not point at this server (loopback)")
    return target.url


async def check_resolves(url: str, allow_loopback: bool) -> None:
    """Refuse a URL whose host resolves only to refused addresses. A host that does not
    resolve right now is let through: delivery checks every address again anyway."""
    target = parse_url(url, allow_loopback)
    if target.address is not None:
        return
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_S,
        )
    except (OSError, TimeoutError, UnicodeError):
        return
    found = {str(info[4][0]) for info in infos}
    if found and not any(address_allowed(a, allow_loopback) for a in found):
        raise WebhookUrlRefused(
            f"url's host {target.host} resolves to private or reserved addresses only ({', '.join(sorted(found))})"
        )


# Resolving ----------------------------------------------------------------------------


class SafeResolver(AbstractResolver):
    """The system resolver (aiohttp's threaded one, ``getaddrinfo``), keeping only the
    addresses :func:`address_allowed` takes. It answers only for normalised names."""

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback
        self._checked: dict[tuple[str, int], tuple[float, list[str]]] = {}  # (name, port) -> until, addresses

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        try:
            normal = normalise_host(host)
        except WebhookUrlRefused as exc:
            raise NoAllowedAddress(exc.detail) from None
        if normal != host or host_address(host) is not None:
            raise NoAllowedAddress(f"{host!r} is not a normalised host name")
        found = await ThreadedResolver().resolve(host, port, family)  # on the running loop
        allowed = [r for r in found if address_allowed(r["host"], self.allow_loopback)]
        if not allowed:
            raise NoAllowedAddress(
                f"{host} resolves to no public address ({', '.join(sorted({r['host'] for r in found}))})"
            )
        return allowed

    async def addresses(self, target: Target) -> list[str]:
        """The addresses a delivery to ``target`` may connect to, in the resolver's order;
        raises :class:`NoAllowedAddress` when there are none. Plain ``http://`` goes to
        loopback addresses only. A name's allowed addresses are reused for
        :data:`CHECKED_FOR_S` (as an HTTP client's own DNS cache would); a name that
        resolves to none is asked again each time."""
        if target.address is not None:
            why = _refusal(target.address, self.allow_loopback)
            if why:
                raise NoAllowedAddress(f"{target.address} is not public ({why})")
            return [str(target.address)]
        key = (target.host, target.port)
        now = time.monotonic()
        until, found = self._checked.get(key, (0.0, []))
        if until <= now:
            resolved = await self.resolve(target.host, target.port, socket.AF_UNSPEC)
            found = list(dict.fromkeys(str(ipaddress.ip_address(r["host"])) for r in resolved))
            if len(self._checked) >= CHECKED_KEPT:
                self._checked.clear()
            self._checked[key] = (now + CHECKED_FOR_S, found)
        if target.scheme == "http":
            loopback = [a for a in found if _is_loopback(ipaddress.ip_address(a))]
            if not loopback:
                raise NoAllowedAddress(f"plain http:// goes to loopback only; {target.host} resolves to {found}")
            return loopback
        return found

    async def close(self) -> None:
        return None


class NoResolver(AbstractResolver):
    """For the delivering HTTP client: it is only ever given checked addresses, so any
    name it would resolve is refused."""

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        raise NoAllowedAddress(f"{host} was not checked: deliveries connect to checked addresses only")

    async def close(self) -> None:
        return None
