"""``device.offline`` and ``device.online`` end to end: a real ``connecfy serve`` (its
background process looks for changes of presence after each sweep, every second), a
phone over HTTP and a real local HTTP receiver, with a presence TTL of 3 s so a phone
goes silent quickly.

- a phone that stops heartbeating is announced offline once, at its last sighting plus
  the TTL, however many sweeps pass; its next heartbeat is announced online once; each
  delivery signed, and read by the receiver example of docs/webhooks.md;
- a platform pool phone's changes go to the operator's endpoint, and to no sender's.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from broker.webhooks.events import verify
from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, Phone, World
from tests.support.webhook_receiver import Receiver, docs_receiver

TTL_S = 3
SETTINGS = {
    "CONNECFY_PRESENCE_TTL_SECONDS": str(TTL_S),
    "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
    "CONNECFY_WEBHOOK_POLL_MS": "50",
    "CONNECFY_AUTH_BURST": "1000",
    "CONNECFY_TASKS_BURST": "10000",
}
SWEEPS_S = 2.5  # a few more sweeps (one a second): a second event would have come by then


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = ServerProcess(tmp_path_factory.mktemp("device-events"), settings=SETTINGS).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()[-3000:]


@pytest.fixture
def world(server: ServerProcess) -> Any:
    w = World(server)
    yield w
    w.close()


@pytest.fixture
def receiver() -> Any:
    made = Receiver()
    yield made
    made.close()


def moment(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def keep_online(phone: Phone, seconds: float) -> str:
    """Heartbeat every half second for ``seconds``; the last sighting (ISO)."""
    deadline = time.monotonic() + seconds
    last = expect(phone.heartbeat(), 200)["last_seen"]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        last = expect(phone.heartbeat(), 200)["last_seen"]
    return str(last)


def check_signed(received: Any, secret: str) -> None:
    assert verify(secret, received.headers["Connecfy-Signature"], received.body, int(time.time())), received.headers
    assert received.headers["Connecfy-Event-Id"] == received.event["id"]
    assert received.headers["Connecfy-Event-Type"] == received.event["type"]


def test_a_silent_phone_is_announced_offline_once_and_its_next_heartbeat_online_once(
    world: World, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    user = world.signup()
    secret = expect(user.post("/api/webhooks/", json={"url": receiver.url}), 201)["secret"]  # every event type
    phone = world.pair(user, "Kitchen phone")
    seen = keep_online(phone, 1.0)  # then silent

    receiver.wait_for(lambda: len(receiver.received) >= 1, timeout=TTL_S + 10)
    time.sleep(SWEEPS_S)
    [offline] = receiver.received
    assert offline.event == {
        "id": offline.event["id"],
        "type": "device.offline",
        "created_at": offline.event["at"],
        "device_id": phone.device_id,
        "device_name": "Kitchen phone",
        "at": offline.event["at"],
    }
    assert moment(offline.event["at"]) == moment(seen) + timedelta(seconds=TTL_S)
    check_signed(offline, secret)

    back = expect(phone.heartbeat(), 200)["last_seen"]
    receiver.wait_for(lambda: len(receiver.received) >= 2, timeout=10)
    keep_online(phone, SWEEPS_S)
    assert len(receiver.received) == 2, [r.event for r in receiver.received]
    online = receiver.received[1]
    assert (online.event["type"], online.event["device_id"], online.event["device_name"]) == (
        "device.online",
        phone.device_id,
        "Kitchen phone",
    )
    assert moment(back) <= moment(online.event["at"]) < moment(back) + timedelta(seconds=1.5)
    check_signed(online, secret)

    example = docs_receiver(secret)
    assert [example["handle"](r.headers["Connecfy-Signature"], r.body) for r in receiver.received] == [204, 204]
    assert capsys.readouterr().out.split() == [
        "device.offline",
        phone.device_id,
        offline.event["at"],
        "device.online",
        phone.device_id,
        online.event["at"],
    ]
    [endpoint] = expect(user.get("/api/webhooks/"), 200)
    log = expect(user.get(f"/api/webhooks/{endpoint['id']}/deliveries/"), 200)  # newest first
    assert [(d["event_type"], d["device_id"], d["device_name"], d["message_id"]) for d in log[-2:]] == [
        ("device.online", phone.device_id, "Kitchen phone", None),
        ("device.offline", phone.device_id, "Kitchen phone", None),
    ]


def test_a_pool_phones_changes_go_to_the_operator(world: World, receiver: Receiver) -> None:
    operator = world.api()
    expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    hook = expect(
        operator.post("/api/webhooks/", json={"url": receiver.url, "events": ["device.offline", "device.online"]}),
        201,
    )
    sender = world.signup("api_only")
    sender_receiver = Receiver()
    try:
        expect(sender.post("/api/webhooks/", json={"url": sender_receiver.url}), 201)
        phone = world.pair(operator, "Pool phone 1", pool=True)
        receiver.wait_for(lambda: len(receiver.received) >= 1, timeout=TTL_S + 10)
        expect(phone.heartbeat(), 200)
        receiver.wait_for(lambda: len(receiver.received) >= 2, timeout=10)
        events = [(r.event["type"], r.event["device_id"], r.event["device_name"]) for r in receiver.received[:2]]
        assert events == [
            ("device.offline", phone.device_id, "Pool phone 1"),
            ("device.online", phone.device_id, "Pool phone 1"),
        ]
        for r in receiver.received:
            check_signed(r, hook["secret"])
        assert sender_receiver.received == []
    finally:
        sender_receiver.close()
