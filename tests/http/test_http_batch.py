"""The batch send and idempotent retries over real HTTP.

The batch is all or nothing: 1,000 valid messages are queued with an id each, in order;
any bad item is a 400 naming every bad index and nothing is queued; 1,001 items or a
body over 2 MiB is refused. ``Idempotency-Key`` on each of the three send endpoints
returns the first answer to a repeat, refuses the key with another body, and under
concurrent repeats queues exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.e2e_server import ServerProcess, describe, expect, expect_error
from tests.support.http_world import TO, World


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("connecfy-batch"),
        settings={
            "CONNECFY_SENDS_PER_SECOND": "100000",
            "CONNECFY_SENDS_BURST": "100000",
            "CONNECFY_AUTH_BURST": "1000",
            **serve_redis,
        },
    ).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


def footprint(user: Any) -> tuple[int, int]:
    stats = expect(user.get("/api/stats/"), 200)
    return stats["total_messages"], stats["queued"]


def batch_error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, describe(response)
    body = response.json()
    assert body["status_code"] == status and body["code"] and body["detail"], body
    return body


def test_a_thousand_valid_messages_are_queued_in_order(world: World) -> None:
    owner = world.signup()
    phones = [world.pair(owner, f"phone {i}") for i in range(2)]
    key = world.api_key(owner)["api_key"]
    messages = [
        {"to": f"+1555123{i:04d}", "message": f"message {i}", "device_id": phones[i % 2].device_id} for i in range(1000)
    ]
    body = expect(world.batch(key, messages), 202)
    assert body["count"] == 1000 and len(body["messages"]) == 1000
    ids = [m["id"] for m in body["messages"]]
    assert len(set(ids)) == 1000 and ids == sorted(ids), "one id per message, time-ordered as sent"
    assert all(m["status"] == "queued" for m in body["messages"])
    assert footprint(owner) == (1000, 1000)
    # Each message is the one sent at its index, in its device's queue.
    for index in (0, 1, 567, 999):
        stored = expect(owner.get(f"/api/sms/{ids[index]}/"), 200)
        assert (stored["to"], stored["message"], stored["device_id"]) == (
            messages[index]["to"],
            messages[index]["message"],
            messages[index]["device_id"],
        )
    # The phone gets its own messages in the order sent, up to its 30-segment minute budget.
    first = phones[0].claim(limit=100)
    assert [t["id"] for t in first] == ids[0:60:2]


def test_any_bad_item_refuses_the_whole_batch(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    good = {"to": TO, "message": "fine", "device_id": phone.device_id}
    messages = [good] * 600
    messages[7] = {**good, "to": "5551234567"}
    messages[100] = {**good, "message": ""}
    messages[599] = {**good, "message": "x" * 1601}
    body = batch_error(world.batch(key, messages))
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(7, "to"), (100, "message"), (599, "message")]
    assert all(e["detail"] for e in body["errors"])
    assert "nothing was queued" in body["detail"]
    # Unknown devices are named the same way, every one of them.
    messages = [good] * 10
    messages[3] = {**good, "device_id": "nosuchdevice0001"}
    messages[8] = {**good, "device_id": "nosuchdevice0002"}
    body = batch_error(world.batch(key, messages), 404)  # only unknown devices: 404, as for one send
    assert body["code"] == "device_not_found"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(3, "device_id"), (8, "device_id")]
    # Bad numbers and unknown devices in one batch: every one of them is named.
    messages = [good] * 6
    messages[1] = {**good, "to": "+1"}
    messages[4] = {**good, "device_id": "nosuchdevice0003"}
    body = batch_error(world.batch(key, messages))
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "to"), (4, "device_id")]
    # One bad item alone is named too.
    body = batch_error(world.batch(key, [good, {**good, "to": "+1"}]))
    assert [e["index"] for e in body["errors"]] == [1]
    # Wrong types fail the strict decode before anything else, naming the path.
    body = batch_error(world.batch(key, [good, {**good, "to": 15551234567}]))
    assert "$.messages[1].to" in body["detail"], body
    assert footprint(owner) == (0, 0)


def test_an_api_only_batch_goes_to_the_pool_and_may_not_name_devices(world: World) -> None:
    sender = world.signup("api_only")
    key = world.api_key(sender)["api_key"]
    body = batch_error(
        world.batch(key, [{"to": TO, "message": "a"}, {"to": TO, "message": "b", "device_id": "somedevice000001"}])
    )
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "device_id")]
    assert expect(world.batch(key, [{"to": TO, "message": "a"}] * 3), 202)["count"] == 3
    assert footprint(sender) == (3, 3)


def test_too_many_or_too_large_or_empty(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    item = {"to": TO, "message": "x", "device_id": phone.device_id}
    body = batch_error(world.batch(key, [item] * 1001))
    assert "1000" in body["detail"], body
    batch_error(world.batch(key, []))
    # Over 2 MiB: 1,000 messages of 1,600 characters of 2-byte text (about 3.3 MB).
    huge = [{**item, "message": "é" * 1600}] * 1000
    raw = json.dumps({"api_key": key, "messages": huge}, ensure_ascii=False).encode()
    assert len(raw) > 2 * 1024 * 1024
    response = world.api().post("/api/external/send-batch/", content=raw, headers={"Content-Type": "application/json"})
    expect_error(response, 413)
    # Just under the cap is fine: 600 such messages are about 2 MB.
    assert expect(world.batch(key, huge[:600]), 202)["count"] == 600
    assert footprint(owner) == (600, 600)
    # The single send keeps its 64 KiB cap.
    expect_error(world.external({"api_key": key, **item, "message": "x" * 70_000}), 413)


def test_a_bad_key_is_401_before_the_body_is_looked_at(world: World) -> None:
    expect_error(world.batch("not-a-key", [{"to": "bad"}]), 401)
    expect_error(world.api().post("/api/external/send-batch/", json={"messages": []}), 401)


# Idempotency -------------------------------------------------------------------------------


def _senders(world: World) -> tuple[Any, Any, str]:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    return owner, phone, key


SENDS = {
    "session": lambda world, owner, key, body, headers: owner.post("/api/sms/send/", json=body, headers=headers),
    "external": lambda world, owner, key, body, headers: world.api().post(
        "/api/external/send/", json={"api_key": key, **body}, headers=headers
    ),
    "batch": lambda world, owner, key, body, headers: world.api().post(
        "/api/external/send-batch/", json={"api_key": key, "messages": [body, body]}, headers=headers
    ),
}


@pytest.mark.parametrize("endpoint", list(SENDS))
def test_a_repeat_returns_the_first_answer_and_queues_nothing(world: World, endpoint: str) -> None:
    owner, phone, key = _senders(world)
    send = SENDS[endpoint]
    body = {"to": TO, "message": "once", "device_id": phone.device_id}
    headers = {"Idempotency-Key": "order-1234"}
    first = send(world, owner, key, body, headers)
    answer = expect(first, 202)
    assert "Idempotent-Replayed" not in first.headers
    queued = footprint(owner)
    repeat = send(world, owner, key, body, headers)
    assert expect(repeat, 202) == answer
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert footprint(owner) == queued
    # The same key with another body is refused, and changes nothing.
    expect_error(send(world, owner, key, {**body, "message": "twice"}, headers), 409, "idempotency_key_reused")
    assert footprint(owner) == queued
    # Another key, or no key, queues again.
    expect(send(world, owner, key, body, {"Idempotency-Key": "order-1235"}), 202)
    expect(send(world, owner, key, body, {}), 202)
    per_request = 2 if endpoint == "batch" else 1
    assert footprint(owner)[0] == queued[0] + 2 * per_request
    # Keys are per account: another account's same key is its own.
    other, other_phone, other_key = _senders(world)
    mine = expect(send(world, other, other_key, {**body, "device_id": other_phone.device_id}, headers), 202)
    assert mine != answer


@pytest.mark.parametrize("endpoint", list(SENDS))
def test_concurrent_repeats_queue_exactly_once(world: World, endpoint: str) -> None:
    owner, phone, key = _senders(world)
    send = SENDS[endpoint]
    body = {"to": TO, "message": "race", "device_id": phone.device_id}
    headers = {"Idempotency-Key": f"race-{endpoint}"}
    clients = [World(world.server) for _ in range(16)]
    try:
        # Each thread its own client and connection, so the requests really overlap.
        def attempt(w: World) -> httpx.Response:
            actor = owner if endpoint == "session" else None
            return send(w, actor, key, body, headers)

        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(attempt, clients))
    finally:
        for w in clients:
            w.close()
    answers = [expect(r, 202) for r in responses]
    assert all(a == answers[0] for a in answers), answers
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 15
    assert footprint(owner)[0] == (2 if endpoint == "batch" else 1)


def test_a_bad_idempotency_key_is_400(world: World) -> None:
    owner, phone, _key = _senders(world)
    body = {"to": TO, "message": "x", "device_id": phone.device_id}
    expect_error(owner.post("/api/sms/send/", json=body, headers={"Idempotency-Key": "k" * 256}), 400)
    assert footprint(owner) == (0, 0)


def test_a_refused_body_leaves_the_kept_alive_connection_usable(world: World) -> None:
    """A 413 (or a 401 before the body) is answered without reading the whole body; the
    rest is drained, so the next request on the same connection is not mistaken for it."""
    owner, phone, _key = _senders(world)
    for size in (70_000, 300_000, 1_500_000) * 4:
        expect_error(owner.post("/api/sms/send/", json={"to": TO, "message": "x" * size}), 413)
        expect_error(owner.post(f"/api/devices/{phone.device_id}/heartbeat/", json={"app_version": "x" * size}), 401)
        expect(owner.post("/api/sms/send/", json={"to": TO, "message": "ok", "device_id": phone.device_id}), 202)
    assert footprint(owner) == (12, 12)


def test_a_body_nested_thousands_deep_is_refused_cleanly(world: World) -> None:
    owner, _phone, key = _senders(world)
    deep = b"[" * 20_000 + b"]" * 20_000
    for path, client, prefix, status in (
        ("/api/external/send-batch/", world.api(), b'{"api_key":"%s","messages":' % key.encode(), 401),
        ("/api/external/send/", world.api(), b'{"api_key":"%s","extra":' % key.encode(), 401),
        ("/api/sms/send/", owner, b'{"to":"+15551234567","message":"x","extra":', 400),
    ):
        response = client.post(path, content=prefix + deep + b"}", headers={"Content-Type": "application/json"})
        expect_error(response, status)
    assert footprint(owner) == (0, 0)
