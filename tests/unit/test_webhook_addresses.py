"""Where a webhook may point (``broker.webhooks.addresses``): one reading of a URL's host
at registration and at delivery, and which addresses are refused however they are
spelt.

- every code point that UTS #46 maps to an ASCII digit (found by scanning, not listed
  by hand) is read as that digit, so a loopback, metadata or private address written
  with them is refused;
- the IPv4 spellings URL parsers and ``inet_aton`` take (one to four parts, decimal,
  octal or hexadecimal), trailing dots, upper case, ideographic full stops and ignored
  characters are read as the address they mean;
- IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4, Teredo, ISATAP) is unwrapped or
  refused; hosts that cannot be read (percent-encoded, zone ids, invalid IDNA, a
  number that is no address) are refused;
- the URL stored is the normalised one, and normalising it again changes nothing.
"""

from __future__ import annotations

import functools
from ipaddress import ip_address

import idna
import pytest

from broker.webhooks.addresses import (
    NoAllowedAddress,
    NoResolver,
    SafeResolver,
    Target,
    WebhookUrlRefused,
    address_allowed,
    check_url,
    normalise_host,
    parse_url,
    refusal,
)

# Planes 4-13 are unassigned, 14 holds tags and variation selectors, 15-16 are private
# use: no code point there maps to a digit.
LAST_SCANNED = 0x3FFFF


@functools.cache
def digit_lookalikes() -> dict[str, list[str]]:
    """Each ASCII digit -> the non-ASCII code points UTS #46 (as the ``idna`` package
    applies it) maps to exactly that digit."""
    found: dict[str, list[str]] = {d: [] for d in "0123456789"}
    for code in range(0x80, LAST_SCANNED + 1):
        try:
            mapped = idna.uts46_remap(chr(code), std3_rules=True)
        except idna.IDNAError:
            continue
        if mapped in found:
            found[mapped].append(chr(code))
    return found


def ones() -> list[str]:
    return digit_lookalikes()["1"]


# A refused address holding each digit, and the digit's first place in it.
TEMPLATES = {
    "0": "10.0.0.1",
    "1": "127.0.0.1",
    "2": "127.0.0.1",
    "3": "192.168.3.3",
    "4": "169.254.169.254",
    "5": "169.254.169.254",
    "6": "169.254.169.254",
    "7": "127.0.0.1",
    "8": "192.168.8.8",
    "9": "169.254.169.254",
}


def disguised(address: str, digit: str, lookalike: str) -> str:
    return address.replace(digit, lookalike, 1)


def cases_of_every_digit() -> list[object]:
    return [
        pytest.param(c, d, id=f"U+{ord(c):04X}-for-{d}")
        for d, lookalikes in digit_lookalikes().items()
        for c in lookalikes
    ]


def test_eleven_code_points_or_more_read_as_each_digit() -> None:
    found = digit_lookalikes()
    assert len(found["1"]) >= 11, [f"U+{ord(c):04X}" for c in found["1"]]
    assert "\U0001fbf1" in found["1"] and "\uff11" in found["1"] and "\U0001d7cf" in found["1"]
    assert all(len(found[d]) >= 10 for d in found)


@pytest.mark.parametrize("one", [pytest.param(c, id=f"U+{ord(c):04X}") for c in ones()])
@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.0.0.1"])
def test_a_lookalike_one_is_read_as_1_and_the_address_refused(one: str, address: str) -> None:
    host = disguised(address, "1", one)
    assert normalise_host(host) == address
    for url in (f"https://{host}:18150/hook", f"https://{host}/", f"http://{host}:9/x"):
        with pytest.raises(WebhookUrlRefused):
            check_url(url, allow_loopback=False)
    if address == "127.0.0.1":
        # Loopback allowed (development): the URL kept is the one connected to.
        assert check_url(f"https://{host}:18150/hook", allow_loopback=True) == "https://127.0.0.1:18150/hook"
    else:
        with pytest.raises(WebhookUrlRefused):
            check_url(f"https://{host}/", allow_loopback=True)


@pytest.mark.parametrize("lookalike, digit", cases_of_every_digit())
def test_every_digit_lookalike_is_read_as_its_digit(lookalike: str, digit: str) -> None:
    address = TEMPLATES[digit]
    host = disguised(address, digit, lookalike)
    assert host != address and normalise_host(host) == address
    with pytest.raises(WebhookUrlRefused):
        check_url(f"https://{host}/hook", allow_loopback=False)


def test_whole_addresses_in_other_digits() -> None:
    for digits in (
        "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
        "".join(chr(0x1D7CE + i) for i in range(10)),
    ):
        table = str.maketrans("0123456789", digits)
        for address in ("127.0.0.1", "169.254.169.254", "10.20.30.40", "192.168.0.1"):
            host = address.translate(table)
            assert normalise_host(host) == address
            with pytest.raises(WebhookUrlRefused):
                check_url(f"https://{host}/", allow_loopback=False)


@pytest.mark.parametrize(
    "host, read_as",
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.01", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("127\u30020\u30020\u30021", "127.0.0.1"),  # ideographic full stops
        ("127\uff0e0\uff0e0\uff0e1", "127.0.0.1"),  # fullwidth full stops
        ("127\u00ad.0.0.1", "127.0.0.1"),  # a soft hyphen is ignored
        ("127.0.0.1\u200b", "127.0.0.1"),  # so is a zero-width space
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("012.0.0.1", "10.0.0.1"),
        ("0xa.0.0.1", "10.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("100.64.0.1", "100.64.0.1"),
    ],
)
def test_numeric_spellings_are_read_as_the_address_they_mean(host: str, read_as: str) -> None:
    assert normalise_host(host) == read_as
    with pytest.raises(WebhookUrlRefused):
        check_url(f"https://{host}/hook", allow_loopback=False)
    with pytest.raises(WebhookUrlRefused):
        check_url(f"https://{host.upper()}/hook", allow_loopback=False)


@pytest.mark.parametrize(
    "host",
    [
        "LOCALHOST",
        "LocalHost.",
        "localhost.",
        "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",  # fullwidth letters
        "\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3",  # circled letters
        "hooks.localhost",
        "HOOKS.LOCALHOST.",
    ],
)
def test_localhost_in_any_spelling_is_refused_at_registration(host: str) -> None:
    assert normalise_host(host) in ("localhost", "hooks.localhost")
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        check_url(f"https://{host}/hook", allow_loopback=False)


@pytest.mark.parametrize(
    "host, why",
    [
        ("[::1]", "loopback"),
        ("[0:0:0:0:0:0:0:1]", "loopback"),
        ("[::]", "private|reserved"),
        ("[::ffff:7f00:1]", "carries 127.0.0.1"),
        ("[::ffff:127.0.0.1]", "carries 127.0.0.1"),
        ("[::FFFF:127.0.0.1]", "carries 127.0.0.1"),
        ("[0:0:0:0:0:ffff:7f00:1]", "carries 127.0.0.1"),
        ("[::ffff:a9fe:a9fe]", "carries 169.254.169.254"),
        ("[::ffff:10.0.0.1]", "carries 10.0.0.1"),
        ("[::ffff:0.0.0.0]", "carries 0.0.0.0"),
        ("[::127.0.0.1]", "IPv4-compatible"),
        ("[::7f00:1]", "IPv4-compatible"),
        ("[::169.254.169.254]", "IPv4-compatible"),
        ("[::93.184.216.34]", "IPv4-compatible"),
        ("[64:ff9b::7f00:1]", "carries 127.0.0.1"),
        ("[64:ff9b::127.0.0.1]", "carries 127.0.0.1"),
        ("[64:ff9b::a9fe:a9fe]", "carries 169.254.169.254"),
        ("[64:ff9b::10.0.0.1]", "carries 10.0.0.1"),
        ("[64:ff9b:1::7f00:1]", "local-use NAT64"),
        ("[64:ff9b:1::5db8:d822]", "local-use NAT64"),
        ("[2002:7f00:1::]", "6to4"),
        ("[2002:a9fe:a9fe::1]", "6to4"),
        ("[2002:5db8:d822::1]", "6to4"),
        ("[2001::1]", "Teredo"),
        ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "Teredo"),  # client 127.0.0.1, inverted
        ("[2001:0:4136:e378:8000:63bf:5601:5601]", "Teredo"),  # client 169.254.169.254
        ("[2606:4700::5efe:7f00:1]", "ISATAP"),
        ("[2606:4700::200:5efe:a9fe:a9fe]", "ISATAP"),
        ("[fe80::1]", "link-local"),
        ("[fd00:ec2::254]", "private"),
        ("[fec0::1]", "site-local"),
        ("[ff02::1]", "multicast"),
    ],
)
def test_ipv4_inside_ipv6_and_other_ipv6_addresses_are_refused(host: str, why: str) -> None:
    with pytest.raises(WebhookUrlRefused, match=why):
        check_url(f"https://{host}:8443/hook", allow_loopback=False)
    assert not address_allowed(host.strip("[]"), allow_loopback=False)


def test_only_loopback_itself_opens_with_the_setting() -> None:
    for host in ("[::1]", "[::ffff:127.0.0.1]", "127.0.0.1", "2130706433"):
        assert parse_url(f"https://{host}/", allow_loopback=True).address is not None
    for host in ("[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]"):
        with pytest.raises(WebhookUrlRefused):
            check_url(f"https://{host}/", allow_loopback=True)


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("::ffff:93.184.216.34", True),
        ("64:ff9b::93.184.216.34", True),
        ("64:ff9b::5db8:d822", True),
        ("2606:4700:4700::1111", True),
        ("93.184.216.34", True),
        ("::93.184.216.34", False),
        ("64:ff9b:1::5db8:d822", False),
        ("2002:5db8:d822::1", False),
        ("2001:0:4136:e378:8000:63bf:a247:27dd", False),  # Teredo, client 93.184.216.34
        ("2606:4700::1%eth0", False),
        ("100.64.0.1", False),
        ("198.18.0.1", False),
        ("240.0.0.1", False),
    ],
)
def test_public_addresses_pass_and_their_wrappings_only_where_they_are_plain(address: str, allowed: bool) -> None:
    assert address_allowed(address, allow_loopback=False) is allowed
    assert address_allowed(address, allow_loopback=True) is allowed
    assert (refusal(address, False) == "") is allowed


@pytest.mark.parametrize(
    "url, why",
    [
        ("https://%31%32%37.0.0.1/", "percent-encoded"),
        ("https://127.0.0.%31/", "percent-encoded"),
        ("https://local%68ost/", "percent-encoded"),
        ("https://[fe80::1%25eth0]/", "zone id"),
        ("https://[::1%25lo]/", "zone id"),
        ("https://[2606:4700::1%25eth0]/", "zone id"),
        ("https://[v1.fe]/", "IPv6"),
        ("https://[::1/", "URL"),
        ("https://[::1]x/", "port"),
        ("https://127.0.0.1:0x50/", "port"),
        ("https://127.0.0.1:\uff18\uff10/", "port"),
        ("https://example.com:0/", "port"),
        ("https://example.com:65536/", "port"),
        ("https://1.2.3.4.5/", "not an IPv4 address"),
        ("https://127.0.0.1.2/", "not an IPv4 address"),
        ("https://example.123/", "not an IPv4 address"),
        ("https://256.0.0.1/", "not an IPv4 address"),
        ("https://127.0.0.08/", "not an IPv4 address"),
        ("https://0x100000000/", "not an IPv4 address"),
        ("https://a..b/", "host name"),
        ("https://a_b.example.com/", "host name"),
        ("https://-a.example.com/", "host name"),
        ("https://xn--.example.com/", "host name"),
        ("https://\u0661\u0662\u0667.0.0.1/", "host name"),  # Arabic-Indic digits: bidi rule
        ("https://\u2488\u0032\u0037.0.0.1/", "host name"),  # DIGIT ONE FULL STOP
        ("https://example.com\\@127.0.0.1/", "user name"),
        ("https://user@127.0.0.1/", "user name"),
        ("https://127.0.0.1\u3000/", "spaces"),
        ("https://127.0.0.1\t/", "spaces"),
    ],
)
def test_hosts_that_cannot_be_read_are_refused(url: str, why: str) -> None:
    for allow in (False, True):
        with pytest.raises(WebhookUrlRefused, match=why):
            check_url(url, allow_loopback=allow)


@pytest.mark.parametrize(
    "url, stored",
    [
        ("https://hooks.example.com/connecfy", "https://hooks.example.com/connecfy"),
        ("HTTPS://Hooks.Example.COM./In?a=1#part", "https://hooks.example.com/In?a=1"),
        ("https://hooks.example.com:443", "https://hooks.example.com/"),
        ("https://hooks.example.com:08443/x", "https://hooks.example.com:8443/x"),
        ("https://b\u00fccher.example/h\u00fck?q=\u00fc", "https://xn--bcher-kva.example/h%C3%BCk?q=%C3%BC"),
        ("https://\uff48\uff4f\uff4f\uff4b\uff53.example.com/", "https://hooks.example.com/"),
        ("https://93.184.216.34/hook", "https://93.184.216.34/hook"),
        ("https://1572395042/hook", "https://93.184.216.34/hook"),
        ("https://[2606:4700:4700:0:0:0:0:1111]:8443/x", "https://[2606:4700:4700::1111]:8443/x"),
        ("https://[64:ff9b::93.184.216.34]/", "https://[64:ff9b::5db8:d822]/"),
        ('https://hooks.example.com/a"b<c>', "https://hooks.example.com/a%22b%3Cc%3E"),
    ],
)
def test_the_url_stored_is_the_normalised_one(url: str, stored: str) -> None:
    assert check_url(url, allow_loopback=False) == stored
    assert check_url(stored, allow_loopback=False) == stored


def test_canonical_loopback_urls_are_kept_as_written_with_the_setting() -> None:
    for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "https://[::1]/x", "http://a.localhost/"):
        assert check_url(url, allow_loopback=True) == url
    with pytest.raises(WebhookUrlRefused, match="https"):
        check_url("http://hooks.example.com/", allow_loopback=True)
    with pytest.raises(WebhookUrlRefused, match="https"):
        check_url("http://[64:ff9b::5db8:d822]/", allow_loopback=True)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "::ffff:7f00:1",
        "::7f00:1",
        "64:ff9b::7f00:1",
        "64:ff9b:1::5db8:d822",
        "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2606:4700::5efe:7f00:1",
        "169.254.169.254",
        "10.0.0.1",
    ],
)
async def test_the_delivery_pin_refuses_an_address_on_its_own(address: str) -> None:
    """Even a target that never went through parse_url gets no address to connect to."""
    target = Target("https", f"[{address}]" if ":" in address else address, 443, "/", "", ip_address(address))
    with pytest.raises(NoAllowedAddress, match="not public"):
        await SafeResolver(allow_loopback=False).addresses(target)


async def test_the_resolvers_answer_only_for_normalised_names() -> None:
    resolver = SafeResolver(allow_loopback=True)
    try:
        for host in ("LOCALHOST", "localhost.", "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "127.0.0.1"):
            with pytest.raises(NoAllowedAddress):
                await resolver.resolve(host, 443)
        assert await resolver.addresses(parse_url("http://localhost:9/", allow_loopback=True))
    finally:
        await resolver.close()
    with pytest.raises(NoAllowedAddress):
        await NoResolver().resolve("localhost", 443)
