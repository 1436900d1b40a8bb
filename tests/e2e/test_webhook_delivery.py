"""Status webhooks end to end: a real ``connecfy serve``, real phones and senders over
HTTP, and a real local HTTP receiver (``webhook_receiver.Receiver``).

- every status change arrives exactly once when the receiver answers 2xx, signed, in
  each message's order, and is what the message's timeline says;
- a receiver failing the first attempts gets the same event (id and bytes) again later;
- a receiver that hangs holds neither the API (sends, claims, reports) nor another
  account's deliveries;
- a server restarted while events wait for their next try delivers every one of them;
- an endpoint failing for the whole retry window is disabled with the reason shown,
  gets nothing more, and gets new events again once enabled;
- the test event, secret rotation and manual redelivery; SSRF targets refused.
"""

from __future__ import annotations

import re
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from broker import Settings
from broker.webhooks.events import verify
from tests.support.e2e_server import Api, ServerProcess, expect, expect_error
from tests.support.http_world import TO, World
from tests.support.webhook_receiver import Receiver, docs_receiver

LOOPBACK = {
    "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
    "CONNECFY_WEBHOOK_BACKOFF_FIRST_MS": "50",
    "CONNECFY_WEBHOOK_BACKOFF_MAX_MS": "200",
    "CONNECFY_WEBHOOK_POLL_MS": "50",
    # Long enough that a hung POST is still hung when the test looks.
    "CONNECFY_WEBHOOK_TIMEOUT_SECONDS": "30",
    "CONNECFY_SENDS_BURST": "10000",
    "CONNECFY_SENDS_PER_SECOND": "10000",
    "CONNECFY_TASKS_BURST": "10000",
    "CONNECFY_TASKS_PER_MINUTE": "100000",
    "CONNECFY_AUTH_BURST": "1000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = ServerProcess(tmp_path_factory.mktemp("webhooks"), settings=LOOPBACK).start()
    yield process
    assert process.stop() == 0, process.output()[-3000:]


@pytest.fixture
def world(server: ServerProcess) -> Any:
    w = World(server)
    yield w
    w.close()


@pytest.fixture
def receivers() -> Any:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def register(user: Api, url: str, **body: Any) -> dict[str, Any]:
    return expect(user.post("/api/webhooks/", json={"url": url, **body}), 201)


def timelines(user: Api, ids: list[str]) -> dict[str, list[str]]:
    """Each message's statuses, oldest first, as the API shows them."""
    return {i: [t["status"] for t in expect(user.get(f"/api/sms/{i}/"), 200)["timeline"]] for i in ids}


def by_message(received: list[Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for r in received:
        seen[r.event["data"]["message_id"]].append(r.event["data"]["status"])
    return dict(seen)


def traffic(world: World, user: Api, sends: int = 12) -> list[str]:
    """Messages through every path to a status: sent, delivered, failed, cancelled."""
    phone = world.pair(user)
    key = world.api_key(user)["api_key"]
    ids = [
        expect(world.external({"api_key": key, "to": TO, "message": f"one {i}"}), 202)["id"] for i in range(sends // 2)
    ]
    batch = expect(world.batch(key, [{"to": TO, "message": f"batch {i}"} for i in range(sends - sends // 2)]), 202)
    ids += [m["id"] for m in batch["messages"]]
    cancelled = ids[-2:]
    for message_id in cancelled:
        expect(user.post(f"/api/sms/{message_id}/cancel/"), 200)
    claimed = [t["id"] for t in phone.claim(limit=100)]
    assert sorted(claimed) == sorted(ids[:-2])
    for n, message_id in enumerate(claimed):
        if n % 4 == 3:
            expect(phone.report(message_id, "failed", error="generic_failure"), 200)
        else:
            expect(phone.report(message_id, "sent"), 200)
            if n % 2 == 0:
                expect(phone.report(message_id, "delivered"), 200)
    return ids


def test_every_status_change_arrives_exactly_once_signed_and_in_order(world: World, receivers: Any) -> None:
    receiver = receivers()
    user = world.signup()
    secret = register(user, receiver.url)["secret"]
    ids = traffic(world, user)
    expected = timelines(user, ids)
    total = sum(len(statuses) for statuses in expected.values())
    assert {s for statuses in expected.values() for s in statuses} == {
        "queued",
        "claimed",
        "sent",
        "delivered",
        "failed",
        "cancelled",
    }
    receiver.wait_for(lambda: len(receiver.received) >= total)
    time.sleep(0.5)  # anything extra (a duplicate) would arrive by now
    received = receiver.received
    assert len(received) == total, by_message(received)
    assert len({r.event["id"] for r in received}) == total
    assert by_message(received) == expected  # every change, in each message's own order
    now = int(time.time())
    for r in received:
        assert verify(secret, r.headers["Connecfy-Signature"], r.body, now), r.headers
        assert r.headers["Connecfy-Event-Id"] == r.event["id"]
        assert r.headers["Connecfy-Event-Type"] == r.event["type"] == f"message.{r.event['data']['status']}"
        assert r.headers["Content-Type"] == "application/json"
    failed = [r.event for r in received if r.event["type"] == "message.failed"]
    assert failed and all(e["data"]["error"] == "generic_failure" and e["data"]["device_id"] for e in failed)
    endpoint = expect(user.get("/api/webhooks/"), 200)[0]
    assert endpoint["queued"] == 0 and endpoint["last_success_at"] and endpoint["failing_since"] is None
    # The background process's counters reach /metrics.
    metrics = world.api().get("/metrics").text
    delivered = re.search(r'^connecfy_webhook_attempts_total\{outcome="delivered"\} (\S+)$', metrics, re.M)
    assert delivered and float(delivered.group(1)) >= total, metrics[-2000:]
    assert re.search(r"^connecfy_webhook_delay_seconds_count (\S+)$", metrics, re.M)


def test_event_types_filter_what_is_delivered(world: World, receivers: Any) -> None:
    receiver = receivers()
    user = world.signup()
    register(user, receiver.url, events=["message.delivered", "message.failed"])
    ids = traffic(world, user)
    expected = {
        i: [s for s in statuses if s in ("delivered", "failed")] for i, statuses in timelines(user, ids).items()
    }
    expected = {i: s for i, s in expected.items() if s}
    receiver.wait_for(lambda: len(receiver.received) >= sum(map(len, expected.values())))
    time.sleep(0.3)
    assert by_message(receiver.received) == expected


def test_a_failing_receiver_gets_the_same_event_again_until_it_answers(world: World, receivers: Any) -> None:
    receiver = receivers(fail_first=2)
    user = world.signup()
    hook = register(user, receiver.url)
    ids = traffic(world, user, sends=4)
    total = sum(map(len, timelines(user, ids).values()))
    receiver.wait_for(lambda: len(receiver.delivered()) >= total)
    attempts: dict[str, list[Any]] = defaultdict(list)
    for r in receiver.received:
        attempts[r.event["id"]].append(r)
    assert len(attempts) == total
    for tries in attempts.values():
        assert [t.answered for t in tries] == [500, 500, 204]
        assert len({t.body for t in tries}) == 1  # the same bytes every time
    log = expect(user.get(f"/api/webhooks/{hook['id']}/deliveries/"), 200)
    failed = [d for d in log if d["outcome"] == "failed"]
    assert failed and all(
        d["status_code"] == 500 and d["next_retry_at"] and d["error"].startswith("HTTP 500") for d in failed
    )
    assert {d["attempt"] for d in log if d["outcome"] == "delivered"} == {3}
    assert by_message(receiver.delivered()) == timelines(user, ids)


def test_a_hanging_receiver_holds_neither_the_api_nor_other_accounts(world: World, receivers: Any) -> None:
    hanging, healthy = receivers(hang=True), receivers()
    slow_user, other_user = world.signup(), world.signup()
    register(other_user, healthy.url)
    # The hanging receiver gets events first and holds every request it is sent: one per
    # lane that has events (a message's events share a lane, crc32(id) % lanes).
    register(slow_user, hanging.url)
    ids = traffic(world, slow_user, sends=24)
    busy = {zlib.crc32(i.encode()) % Settings().webhook_lanes for i in ids}  # the server's default
    hanging.wait_for(lambda: hanging.hung >= len(busy))
    # While it holds them, the API and another account's deliveries go on.
    more = traffic(world, slow_user, sends=24)
    other = traffic(world, other_user, sends=8)
    expected_other = timelines(other_user, other)
    healthy.wait_for(lambda: len(healthy.received) >= sum(map(len, expected_other.values())))
    assert by_message(healthy.received) == expected_other
    assert hanging.received == []  # none of the held requests has been answered yet
    assert len(ids) == len(more) == 24
    hanging.release()


def test_the_test_event_rotation_and_redelivery(world: World, receivers: Any) -> None:
    receiver = receivers()
    user = world.signup()
    hook = register(user, receiver.url)
    result = expect(user.post(f"/api/webhooks/{hook['id']}/test/"), 200)
    assert result["outcome"] == "test" and result["status_code"] == 204 and result["message_id"] is None
    test_event = receiver.received[-1]
    assert test_event.event["type"] == "webhook.test" and test_event.event["id"] == result["event_id"]
    assert verify(hook["secret"], test_event.headers["Connecfy-Signature"], test_event.body, int(time.time()))

    rotated = expect(user.post(f"/api/webhooks/{hook['id']}/rotate-secret/"), 200)
    assert rotated["secret"] != hook["secret"] and rotated["previous_secret_valid_until"]
    assert "secret" not in expect(user.get(f"/api/webhooks/{hook['id']}/"), 200)
    ids = traffic(world, user, sends=2)
    total = sum(map(len, timelines(user, ids).values()))
    receiver.wait_for(lambda: len(receiver.received) >= total + 1)
    last = receiver.received[-1]
    header = last.headers["Connecfy-Signature"]
    assert header.count("v1=") == 2  # the new secret's signature and, for a day, the old one's
    assert verify(rotated["secret"], header, last.body, int(time.time()))
    assert verify(hook["secret"], header, last.body, int(time.time()))
    assert not verify(hook["secret"], header, last.body.replace(b"message.", b"message!"), int(time.time()))

    log = expect(user.get(f"/api/webhooks/{hook['id']}/deliveries/"), 200)
    chosen = next(d for d in log if d["outcome"] == "delivered")
    again = expect(user.post(f"/api/webhooks/{hook['id']}/deliveries/{chosen['event_id']}/redeliver/"), 202)
    assert again["event_id"] == chosen["event_id"]
    receiver.wait_for(lambda: sum(r.event["id"] == chosen["event_id"] for r in receiver.received) == 2)
    copies = [r for r in receiver.received if r.event["id"] == chosen["event_id"]]
    assert copies[0].body == copies[1].body
    log = expect(user.get(f"/api/webhooks/{hook['id']}/deliveries/"), 200)
    assert log[0]["event_id"] == chosen["event_id"] and log[0]["manual"] is True
    expect_error(
        user.post(f"/api/webhooks/{hook['id']}/deliveries/evt_unknown/redeliver/"), 404, "webhook_event_not_found"
    )
    expect_error(
        user.post(f"/api/webhooks/{hook['id']}/deliveries/{result['event_id']}/redeliver/"),
        404,
        "webhook_event_not_found",
    )  # a test event is not redelivered


def test_endpoints_belong_to_their_account(world: World, receivers: Any) -> None:
    receiver = receivers()
    owner, stranger = world.signup(), world.signup()
    hook = register(owner, receiver.url)
    for method, path in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "rotate-secret/"),
        ("POST", "enable/"),
        ("POST", "test/"),
        ("GET", "deliveries/"),
    ]:
        expect_error(stranger.request(method, f"/api/webhooks/{hook['id']}/{path}"), 404, "webhook_not_found")
    assert expect(stranger.get("/api/webhooks/"), 200) == []
    assert receiver.received == []
    expect(owner.delete(f"/api/webhooks/{hook['id']}/"), 204)
    expect_error(owner.get(f"/api/webhooks/{hook['id']}/"), 404, "webhook_not_found")
    traffic(world, owner, sends=2)
    time.sleep(0.5)
    assert receiver.received == []  # a deleted endpoint gets nothing


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://192.168.0.10:8443/",
        "https://[::ffff:172.16.0.1]/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "http://example.com/hook",
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "javascript:alert(1)",
        "https://exa mple.com/",
        "",
    ],
)
def test_server_side_request_forgery_targets_are_refused(world: World, url: str) -> None:
    user = world.signup()
    error = expect_error(user.post("/api/webhooks/", json={"url": url}), 400, "webhook_url_refused")
    assert error["field"] == "url"
    assert expect(user.get("/api/webhooks/"), 200) == []


def test_bad_bodies_change_nothing(world: World, receivers: Any) -> None:
    user = world.signup()
    url = receivers().url
    for body, code in [
        ({"url": url, "events": ["message.sent", "message.bogus"]}, "invalid_input"),
        ({"url": url, "events": []}, "invalid_input"),
        ({"url": url, "extra": 1}, "invalid_request"),
        ({"url": 5}, "invalid_request"),
    ]:
        expect_error(user.post("/api/webhooks/", json=body), 400, code)
    assert expect(user.get("/api/webhooks/"), 200) == []
    for _ in range(10):
        register(user, url)
    expect_error(user.post("/api/webhooks/", json={"url": url}), 409, "webhook_limit_reached")
    assert len(expect(user.get("/api/webhooks/"), 200)) == 10


def test_a_restart_while_events_wait_for_their_next_try_loses_none(tmp_path: Path, receivers: Any) -> None:
    receiver = receivers(status=500)
    settings = {**LOOPBACK, "CONNECFY_WEBHOOK_BACKOFF_FIRST_MS": "1500", "CONNECFY_WEBHOOK_BACKOFF_MAX_MS": "3000"}
    first = ServerProcess(tmp_path, settings=settings).start()
    world = World(first)
    try:
        user = world.signup()
        hook = register(user, receiver.url)
        ids = traffic(world, user, sends=6)
        expected = timelines(user, ids)
        total = sum(map(len, expected.values()))
        # Every lane has failed at least once and is waiting for its next try.
        receiver.wait_for(lambda: len(receiver.received) >= 4)
        log = expect(user.get(f"/api/webhooks/{hook['id']}/deliveries/"), 200)
        assert log and all(d["outcome"] == "failed" and d["next_retry_at"] for d in log)
        cookies = dict(user.client.cookies)
    finally:
        world.close()
        assert first.stop() == 0, first.output()[-3000:]
    receiver.status = 204
    second = ServerProcess(tmp_path, settings=settings).start()
    try:
        user = Api(second.base_url)
        user.client.cookies.update(cookies)
        receiver.wait_for(lambda: len(receiver.delivered()) >= total)
        time.sleep(0.5)
        delivered = receiver.delivered()
        assert len(delivered) == total and len({r.event["id"] for r in delivered}) == total
        assert by_message(delivered) == expected
        assert expect(user.get(f"/api/webhooks/{hook['id']}/"), 200)["queued"] == 0
        user.close()
    finally:
        assert second.stop() == 0, second.output()[-3000:]


def test_an_endpoint_failing_for_the_whole_window_is_disabled_with_the_reason(tmp_path: Path, receivers: Any) -> None:
    receiver = receivers(status=500)
    server = ServerProcess(tmp_path, settings={**LOOPBACK, "CONNECFY_WEBHOOK_RETRY_SECONDS": "2"}).start()
    world = World(server)
    try:
        user = world.signup()
        hook = register(user, receiver.url)
        traffic(world, user, sends=2)
        deadline = time.monotonic() + 20
        while expect(user.get(f"/api/webhooks/{hook['id']}/"), 200)["enabled"]:
            assert time.monotonic() < deadline, "the endpoint was never disabled"
            time.sleep(0.1)
        endpoint = expect(user.get(f"/api/webhooks/{hook['id']}/"), 200)
        assert endpoint["disabled_at"] and endpoint["queued"] == 0
        assert "HTTP 500" in endpoint["disabled_reason"] and "failing since" in endpoint["disabled_reason"]
        log = expect(user.get(f"/api/webhooks/{hook['id']}/deliveries/"), 200)
        assert log[0]["outcome"] == "disabled"
        expect_error(
            user.post(f"/api/webhooks/{hook['id']}/deliveries/{log[0]['event_id']}/redeliver/"), 409, "webhook_disabled"
        )
        seen = len(receiver.received)
        traffic(world, user, sends=2)
        time.sleep(1.0)
        assert len(receiver.received) == seen  # a disabled endpoint is sent nothing
        receiver.status = 204
        enabled = expect(user.post(f"/api/webhooks/{hook['id']}/enable/"), 200)
        assert enabled["enabled"] and enabled["disabled_reason"] is None
        ids = traffic(world, user, sends=2)
        total = sum(map(len, timelines(user, ids).values()))
        receiver.wait_for(lambda: len(receiver.delivered()) >= total)
        assert by_message(receiver.delivered()) == timelines(user, ids)
    finally:
        world.close()
        assert server.stop() == 0, server.output()[-3000:]


def test_the_docs_receiver_verifies_and_deduplicates(
    world: World, receivers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = receivers(fail_first=1)  # every event arrives twice: once failed, once answered
    user = world.signup()
    hook = register(user, receiver.url)
    ids = traffic(world, user, sends=2)
    total = sum(map(len, timelines(user, ids).values()))
    receiver.wait_for(lambda: len(receiver.delivered()) >= total)
    example = docs_receiver(hook["secret"])
    answers = [example["handle"](r.headers["Connecfy-Signature"], r.body) for r in receiver.received]
    assert answers == [204] * len(receiver.received) == [204] * (2 * total)
    assert len(example["seen"]) == total  # each event handled once
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == total and all(line.split()[1] in ids for line in printed)
    first = receiver.received[0]
    assert example["handle"](first.headers["Connecfy-Signature"], first.body + b" ") == 400
    assert example["handle"](first.headers["Connecfy-Signature"].replace("v1=", "v1=0"), first.body) == 400
    stale = f"t={int(time.time()) - 600},v1=" + first.headers["Connecfy-Signature"].split("v1=")[1]
    assert example["handle"](stale, first.body) == 400
    assert docs_receiver("whsec_other")["handle"](first.headers["Connecfy-Signature"], first.body) == 400


def test_a_received_sms_is_delivered_once_as_message_received_with_its_sender_and_text(
    world: World, receivers: Any
) -> None:
    user = world.signup()
    receiver = receivers()
    register(user, receiver.url, events=["message.received"])
    phone = world.pair(user)
    body = {"from": "+15557654321", "message": "Yes, see you at 5", "received_at": "2026-12-05T12:00:00Z", "ref": "r1"}
    first = expect(phone.api.post(f"/api/devices/{phone.device_id}/inbound/", json=body), 201)
    expect(phone.api.post(f"/api/devices/{phone.device_id}/inbound/", json=body), 200)  # the phone's retry
    receiver.wait_for(lambda: len(receiver.received) >= 1)
    time.sleep(1.0)  # time for a second delivery, which must not come
    [delivered] = receiver.received
    event = delivered.event
    assert event["type"] == "message.received"
    assert event["data"] == {
        "message_id": first["id"],
        "status": "received",
        "device_id": phone.device_id,
        "from": "+15557654321",
        "message": "Yes, see you at 5",
    }
