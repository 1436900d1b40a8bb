"""Webhook URLs that disguise a loopback, link-local or private address: refused when
registered over HTTP on a real ``connecfy serve``, and never contacted when delivered to.

- registering any disguise answers 400 ``webhook_url_refused`` (field ``url``) and
  stores nothing;
- delivering to a loopback disguise (the courier given the URL as stored, or an
  endpoint whose URL was written into Redis past registration) fails with "address
  refused", and a real TCP listener on 127.0.0.1 sees no connection. Deliveries are
  tried to loopback disguises only, so nothing here could reach another machine if the
  check ever broke; the same reading refuses the metadata and private ones
  (``tests/unit/test_webhook_addresses.py``);
- with loopback allowed (development), a loopback URL is still delivered to, at the
  address checked, with the ``Host`` header and the TLS server name of the URL's name.

Disguises: every code point UTS #46 maps to a digit (found by scanning), numeric IPv4
spellings, trailing dots, upper case, ideographic dots, ignored characters,
percent-encoding, IPv6 zone ids and IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4,
Teredo, ISATAP). Every target is on this machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from broker import Broker
from broker.webhooks import events
from broker.webhooks.courier import Courier
from tests.support.backends import roomy_settings
from tests.support.e2e_server import Api, ServerProcess, expect, expect_error
from tests.support.fleet import self_managed
from tests.support.http_world import World
from tests.support.webhook_receiver import Receiver
from tests.unit.test_webhook_addresses import digit_lookalikes

EVENT = events.QueuedEvent("evt_ssrf", "message.sent", "M1", "d", 1, "", 1)


class Listener:
    """A plain TCP socket listening on a free 127.0.0.1 port that never answers. A
    connection made to it completes in the kernel's accept queue; :meth:`accepted`
    takes every one waiting there, with the bytes the client sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.seen: list[tuple[str, bytes]] = []

    def accepted(self) -> list[tuple[str, bytes]]:
        while True:
            try:
                conn, peer = self.sock.accept()
            except BlockingIOError:
                return self.seen
            with conn:
                conn.setblocking(False)
                try:
                    data = conn.recv(65_536)
                except OSError:
                    data = b""
            self.seen.append((peer[0], data))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


def loopback_disguises() -> list[str]:
    """Hosts that all mean this machine (127.0.0.1, ::1, 0.0.0.0 or ::), read in any way."""
    found = digit_lookalikes()
    hosts = [c + "27.0.0.1" for c in found["1"]]  # every code point read as "1"
    hosts += ["1" + c + "7.0.0.1" for c in found["2"]]
    hosts += ["12" + c + ".0.0.1" for c in found["7"]]
    hosts += ["127." + c + ".0.1" for c in found["0"]]
    hosts += [
        "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits
        "\U0001d7cf\U0001d7d0\U0001d7d5.\U0001d7ce.\U0001d7ce.\U0001d7cf",  # mathematical bold digits
        "\u2460\u2461\u2466.0.0.\u2460",  # circled digits
        "127\u30020\u30020\u30021",
        "127\uff0e0\uff0e0\uff0e1",
        "127\u00ad.0.0.1",
        "127.0.0.1\u200b",
        "2130706433",
        "0x7f000001",
        "0X7F000001",
        "017700000001",
        "0x7f.1",
        "0x7f.0x0.0x0.0x1",
        "0177.0.0.1",
        "0177.1",
        "127.1",
        "127.0.1",
        "127.0.0.01",
        "127.000.000.001",
        "127.0.0.1.",
        "127.1.",
        "0",
        "0x0",
        "0.0.0.0",
        "localhost",
        "localhost.",
        "LOCALHOST",
        "LocalHost.",
        "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",
        "\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::]",
        "[::ffff:7f00:1]",
        "[::ffff:127.0.0.1]",
        "[::FFFF:127.0.0.1]",
        "[0:0:0:0:0:ffff:7f00:1]",
        "[::ffff:0.0.0.0]",
        "[::127.0.0.1]",
        "[::7f00:1]",
        "%31%32%37.0.0.1",
        "127.0.0.%31",
        "local%68ost",
        "[::1%25lo]",
        "[fe80::1%25lo]",
    ]
    return hosts


def other_disguises() -> list[str]:
    """Hosts meaning the metadata service or a private network, or wrapping loopback in
    a translated or tunnelled IPv6 address (routed to another machine)."""
    ones = digit_lookalikes()["1"]
    hosts = [c + "69.254.169.254" for c in ones] + [c + "0.0.0.1" for c in ones]
    hosts += [
        "2852039166",
        "0xa9fea9fe",
        "0251.0376.0251.0376",
        "169.254.43518",
        "169.254.169.254.",
        "10.1",
        "012.0.0.1",
        "0xa.0.0.1",
        "167772161",
        "\uff11\uff19\uff12.\uff11\uff16\uff18.0.1",
        "[::ffff:a9fe:a9fe]",
        "[::169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::10.0.0.1]",
        "[2002:a9fe:a9fe::1]",
        "[2001:0:4136:e378:8000:63bf:5601:5601]",
        "[fd00:ec2::254]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::127.0.0.1]",
        "[64:ff9b:1::7f00:1]",
        "[2002:7f00:1::]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[2606:4700::5efe:7f00:1]",
    ]
    return hosts


def host_id(host: str) -> str:
    return host.encode("ascii", "backslashreplace").decode()


# Registration over HTTP -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("webhook-ssrf")).start()  # loopback not allowed
    yield process
    assert process.stop() == 0, process.output()[-3000:]


@pytest.fixture(scope="module")
def user(server: ServerProcess) -> Iterator[Api]:
    world = World(server)
    yield world.signup()
    world.close()


@pytest.mark.parametrize("host", [pytest.param(h, id=host_id(h)) for h in loopback_disguises() + other_disguises()])
def test_registering_a_disguised_address_is_refused_and_stores_nothing(user: Api, host: str) -> None:
    for url in (f"https://{host}:18150/hook", f"http://{host}/hook"):
        error = expect_error(user.post("/api/webhooks/", json={"url": url}), 400, "webhook_url_refused")
        assert error["field"] == "url"
    assert expect(user.get("/api/webhooks/"), 200) == []


# Delivery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [pytest.param(h, id=host_id(h)) for h in loopback_disguises()])
async def test_delivering_to_a_loopback_disguise_never_connects(listener: Listener, host: str) -> None:
    courier = Courier(timeout_s=2, max_in_flight=4, allow_loopback=False)
    try:
        for scheme in ("https", "http"):
            outcome = await courier.post(f"{scheme}://{host}:{listener.port}/hook", ["s"], EVENT)
            assert not outcome.ok and outcome.status_code is None, outcome
            assert outcome.error.startswith("address refused"), outcome
    finally:
        await courier.close()
    assert listener.accepted() == []


@pytest.mark.parametrize(
    "host",
    ["\U0001fbf127.0.0.1", "\uff11\uff12\uff17.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost"],
)
async def test_an_endpoint_whose_stored_url_is_a_disguise_is_never_contacted(
    broker: Broker, listener: Listener, host: str
) -> None:
    # Registered while loopback was allowed, then the URL rewritten in Redis past the
    # registration check; deliveries now run with loopback refused.
    lenient = Broker(broker.redis, roomy_settings(webhook_allow_loopback_http=True), broker.scripts, clock=broker.clock)
    account, _ = await self_managed(lenient, devices=0)
    endpoint = await lenient.webhooks.create(account, f"http://127.0.0.1:{listener.port}/hook")
    await broker.redis.hset(
        broker.ctx.account_shard(account.id).webhook(endpoint.id), "url", f"https://{host}:{listener.port}/hook"
    )
    courier = Courier(timeout_s=2, max_in_flight=4, allow_loopback=False)
    try:
        attempt = await broker.webhooks.send_test(account, endpoint.id, courier)
    finally:
        await courier.close()
    assert attempt.status_code is None and attempt.error.startswith("address refused"), attempt
    logged = await broker.webhooks.deliveries(account, endpoint.id)
    assert [a.error for a in logged] == [attempt.error]
    assert listener.accepted() == []


async def test_loopback_is_delivered_to_the_checked_address_when_allowed() -> None:
    receiver = Receiver()
    port = int(receiver.url.split(":")[2].split("/")[0])
    courier = Courier(timeout_s=5, max_in_flight=4, allow_loopback=True)
    try:
        for url in (
            receiver.url,
            f"http://localhost:{port}/hooks?x=1",
            f"http://\uff11\uff12\uff17.0.0.1:{port}/hooks",  # read as 127.0.0.1, as checked
            f"http://[::ffff:127.0.0.1]:{port}/hooks",
        ):
            outcome = await courier.post(url, ["s"], EVENT)
            assert outcome.ok and outcome.status_code == 204, (url, outcome)
    finally:
        await courier.close()
        receiver.close()
    assert [r.headers["Host"] for r in receiver.received] == [
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::ffff:7f00:1]:{port}",
    ]
    now = int(time.time())
    assert all(events.verify("s", r.headers[events.SIGNATURE_HEADER], r.body, now) for r in receiver.received)


async def test_https_to_a_name_connects_to_the_checked_address_with_the_names_tls_server_name(
    listener: Listener,
) -> None:
    courier = Courier(timeout_s=1, max_in_flight=4, allow_loopback=True)
    try:
        outcome = await courier.post(f"https://LocalHost.:{listener.port}/hook", ["s"], EVENT)
    finally:
        await courier.close()
    assert not outcome.ok  # the listener never answers the TLS handshake
    ((peer, hello),) = listener.accepted()
    assert peer == "127.0.0.1"
    assert hello[:1] == b"\x16" and b"\x00\x00\x09localhost" in hello, hello[:200]  # SNI host_name entry


def test_the_disguise_lists_cover_every_lookalike_one() -> None:
    ones = digit_lookalikes()["1"]
    assert len(ones) >= 11
    assert {c + "27.0.0.1" for c in ones} <= set(loopback_disguises())
    assert {c + "69.254.169.254" for c in ones} <= set(other_disguises())
    assert {c + "0.0.0.1" for c in ones} <= set(other_disguises())
