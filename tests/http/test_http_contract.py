"""End-to-end HTTP tests against the real ``connecfy serve`` process.

One server for the whole module (its private Redis, no REDIS_URL), several accounts in
it. The flows are the seed API doc's, replayed with real HTTP on 127.0.0.1, asserting the
status codes and body shapes that doc and DESIGN.md promise.

Tests that touch the shared platform pool (the pool flow, API-only isolation, the quota)
leave it empty behind them: the pool flow asserts that its pool phone claims exactly its
own two messages.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.e2e_server import REQUESTS_MADE, Api, ServerProcess, describe, expect, expect_error
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PASSWORD, TO, Phone, World

MAX_BODY = 64 * 1024
COUNTER_FIELDS = ("total_messages", "sent", "failed", "success_rate", "delivered", "queued", "expired", "cancelled")
DEVICE_FIELDS = {
    "device_id",
    "device_name",
    "phone_number",
    "online",
    "last_seen",
    "battery",
    "android_version",
    "app_version",
}


# Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connecfy-e2e")
    # Many signups from one address: the per-address auth limit is tested in test_http_limits.
    process = ServerProcess(data_dir, settings={"CONNECFY_AUTH_BURST": "1000", **serve_redis}).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        code = process.stop()
    assert code == 0, f"connecfy serve exited with {code} after SIGTERM:\n{process.output()}"


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


# Helpers ---------------------------------------------------------------------------------


def parse_utc(value: str) -> datetime:
    """An ISO-8601 timestamp in UTC (``Z`` or ``+00:00``)."""
    assert isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", value), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def assert_recent(value: str, seconds: float = 30) -> None:
    assert abs((datetime.now(UTC) - parse_utc(value)).total_seconds()) < seconds, value


def counters(user: Api) -> dict[str, Any]:
    stats = expect(user.get("/api/stats/"), 200)
    return {field: stats[field] for field in COUNTER_FIELDS}


def footprint(user: Api) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """What a user can see of their messages: the counters and every message's status."""
    page = expect(user.get("/api/sms/", params={"limit": 500}), 200)
    return counters(user), [(m["id"], m["status"]) for m in page["items"]]


def send(user: Api, **body: Any) -> dict[str, Any]:
    queued = expect(user.post("/api/sms/send/", json={"to": TO, "message": "Hello", **body}), 202)
    assert queued["status"] == "queued" and isinstance(queued["id"], str) and queued["id"], queued
    return queued


def message(user: Api, message_id: str) -> dict[str, Any]:
    return expect(user.get(f"/api/sms/{message_id}/"), 200)


def cookie_headers(response: httpx.Response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0].strip()
        found[name] = header
    return found


# Health ----------------------------------------------------------------------------------


def test_health_and_readiness(server: ServerProcess) -> None:
    assert expect(httpx.get(f"{server.base_url}/healthz"), 200) == {"status": "ok"}
    assert expect(httpx.get(f"{server.base_url}/readyz"), 200) == {"status": "ok"}
    REQUESTS_MADE.update({("GET", "/healthz"), ("GET", "/readyz")})


# The self-managed account: the seed doc's flow end to end ---------------------------------


def test_self_managed_flow(world: World) -> None:
    owner = world.api()
    email = f"owner-{uuid.uuid4().hex[:10]}@example.com"
    response = owner.post(
        "/api/auth/signup/", json={"email": email, "password": PASSWORD, "account_type": "self_managed"}
    )
    account = expect(response, 201)
    assert account["account_type"] == "self_managed" and account["email"] == email
    cookies = cookie_headers(response)
    assert {"sessionid", "csrftoken"} <= set(cookies), response.headers
    assert "httponly" in cookies["sessionid"].lower(), cookies["sessionid"]
    assert "httponly" not in cookies["csrftoken"].lower(), "the dashboard must read csrftoken to echo it"
    assert owner.client.cookies.get("sessionid") and owner.client.cookies.get("csrftoken")

    # Pairing code -> register.
    code = expect(owner.post("/api/devices/pairing-codes/"), 201)
    assert set(code) == {"code", "expires_at"}, code
    assert isinstance(code["code"], str) and code["code"]
    minutes = (parse_utc(code["expires_at"]) - datetime.now(UTC)).total_seconds() / 60
    assert 9 <= minutes <= 10.5, code
    unauthenticated = world.api()
    registered = expect(
        unauthenticated.post(
            "/api/devices/register/",
            json={"code": code["code"], "device_name": "Pixel 7", "phone_number": "+15551234567"},
        ),
        201,
    )
    assert set(registered) == {"device_id", "device_token", "device_name"}, registered
    assert registered["device_name"] == "Pixel 7"
    assert len(registered["device_token"]) >= 40, "a 256-bit token"
    device_id, token = registered["device_id"], registered["device_token"]
    # The code is single use.
    expect_error(
        unauthenticated.post("/api/devices/register/", json={"code": code["code"], "device_name": "Second phone"}), 404
    )

    # Heartbeat, with X-Device-Token and with Authorization: Bearer.
    phone = Phone(device_id, token, "Pixel 7", world.api(**{"X-Device-Token": token}))
    beat = expect(phone.heartbeat({"battery": 81, "android_version": "14", "app_version": "1.0.0"}), 200)
    assert set(beat) == {"status", "device_id", "last_seen"}, beat
    assert beat["status"] == "ok" and beat["device_id"] == device_id
    assert_recent(beat["last_seen"])
    bearer = world.api(Authorization=f"Bearer {token}")
    beat2 = expect(
        bearer.post(
            f"/api/devices/{device_id}/heartbeat/",
            json={"battery": 80, "android_version": "14", "app_version": "1.0.0"},
        ),
        200,
    )
    assert beat2["status"] == "ok" and beat2["device_id"] == device_id
    assert parse_utc(beat2["last_seen"]) >= parse_utc(beat["last_seen"])

    [listed] = expect(owner.get("/api/devices/"), 200)
    assert set(listed) >= DEVICE_FIELDS, listed
    assert listed["device_id"] == device_id and listed["device_name"] == "Pixel 7"
    assert listed["phone_number"] == "+15551234567" and listed["online"] is True
    assert listed["battery"] == 80 and listed["android_version"] == "14" and listed["app_version"] == "1.0.0"
    assert listed["last_seen"] == beat2["last_seen"]

    # Send -> claim; a re-poll does not hand the same message again.
    m1 = send(owner, device_id=device_id, message="Hello")
    assert m1["device_id"] == device_id and m1["to"] == TO
    assert phone.claim() == [{"id": m1["id"], "to": TO, "message": "Hello"}]
    assert phone.claim() == []
    assert message(owner, m1["id"])["status"] == "claimed"

    # Status reports: sent then delivered (and repeating one is a no-op 200).
    for status in ("sent", "sent", "delivered"):
        assert expect(phone.report(m1["id"], status), 200) == {"id": m1["id"], "status": status}
    expect_error(phone.report(m1["id"], "sent"), 409)  # backwards

    # Two more: one sent, one failed; the queue hands them out oldest first.
    m2 = send(owner, device_id=device_id, message="second")
    m3 = send(owner, device_id=device_id, message="third")
    assert [t["id"] for t in phone.claim()] == [m2["id"], m3["id"]]
    assert expect(phone.report(m2["id"], "sent"), 200) == {"id": m2["id"], "status": "sent"}
    assert expect(phone.report(m3["id"], "failed", error="RESULT_ERROR_GENERIC_FAILURE"), 200) == {
        "id": m3["id"],
        "status": "failed",
    }

    # One claimed, one still queued: cancel works only on the queued one.
    m4 = send(owner, device_id=device_id, message="fourth")
    assert [t["id"] for t in phone.claim()] == [m4["id"]]
    m5 = send(owner, device_id=device_id, message="fifth")
    assert expect(owner.post(f"/api/sms/{m5['id']}/cancel/"), 200) == {"id": m5["id"], "status": "cancelled"}
    expect_error(owner.post(f"/api/sms/{m4['id']}/cancel/"), 409)
    assert phone.claim() == [], "a cancelled message is never handed out"

    # Stats.
    stats = expect(owner.get("/api/stats/"), 200)
    assert set(COUNTER_FIELDS) | {"devices"} <= set(stats), stats
    assert isinstance(stats["success_rate"], (int, float)) and not isinstance(stats["success_rate"], bool)
    assert {f: stats[f] for f in COUNTER_FIELDS} == {
        "total_messages": 5,
        "sent": 2,
        "failed": 1,
        "success_rate": 66.7,
        "delivered": 1,
        "queued": 0,
        "expired": 0,
        "cancelled": 1,
    }, stats
    [stat_device] = stats["devices"]
    assert set(stat_device) >= DEVICE_FIELDS, stat_device
    assert stat_device["device_id"] == device_id and stat_device["online"] is True
    assert_recent(stat_device["last_seen"])

    # History, newest first, paged and filtered.
    page = expect(owner.get("/api/sms/"), 200)
    assert set(page) == {"items", "next_cursor"}, page
    assert [(m["id"], m["status"]) for m in page["items"]] == [
        (m5["id"], "cancelled"),
        (m4["id"], "claimed"),
        (m3["id"], "failed"),
        (m2["id"], "sent"),
        (m1["id"], "delivered"),
    ]
    assert page["next_cursor"] is None
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        chunk = expect(owner.get("/api/sms/", params=params), 200)
        assert len(chunk["items"]) <= 2
        seen += [m["id"] for m in chunk["items"]]
        cursor, pages = chunk["next_cursor"], pages + 1
        if cursor is None:
            break
        assert pages < 5
    assert seen == [m["id"] for m in page["items"]]
    failed = expect(owner.get("/api/sms/", params={"status": "failed"}), 200)
    assert [m["id"] for m in failed["items"]] == [m3["id"]]
    by_device = expect(owner.get("/api/sms/", params={"device_id": device_id}), 200)
    assert len(by_device["items"]) == 5

    detail = message(owner, m1["id"])
    assert detail["id"] == m1["id"] and detail["to"] == TO and detail["message"] == "Hello"
    assert detail["status"] == "delivered" and detail["device_id"] == device_id
    assert [step["status"] for step in detail["timeline"]] == ["queued", "claimed", "sent", "delivered"]
    for step in detail["timeline"]:
        assert_recent(step["at"])
    failed_detail = message(owner, m3["id"])
    assert failed_detail["status"] == "failed" and failed_detail["error"] == "RESULT_ERROR_GENERIC_FAILURE"
    assert [step["status"] for step in message(owner, m5["id"])["timeline"]] == ["queued", "cancelled"]

    # Logout ends the session.
    assert owner.post("/api/auth/logout/").status_code == 204
    expect_error(owner.get("/api/stats/"), 401)


# API-only account, served by the operator's platform pool ---------------------------------


def test_api_only_account_is_served_by_the_platform_pool(world: World) -> None:
    wrong_password = expect_error(
        world.api().post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": "wrong-password"}), 401
    )
    unknown_email = expect_error(
        world.api().post("/api/auth/login/", json={"email": "nobody@example.com", "password": PASSWORD}), 401
    )
    assert wrong_password == unknown_email, "one message for any bad email/password pair"
    operator = world.api()
    response = operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD})
    assert expect(response, 200)["operator"] is True
    assert {"sessionid", "csrftoken"} <= set(cookie_headers(response))

    pool_phone = world.pair(operator, "pool phone 1", pool=True, online=False)
    beat = expect(pool_phone.heartbeat({"battery": 55}), 200)
    assert beat["status"] == "ok" and beat["device_id"] == pool_phone.device_id
    pool_devices = expect(operator.get("/api/devices/", params={"pool": "true"}), 200)
    assert [(d["device_id"], d["online"]) for d in pool_devices] == [(pool_phone.device_id, True)]

    user = world.signup("api_only", "apionly")
    assert user.account["daily_quota"] == 100
    expect_error(user.post("/api/devices/pairing-codes/", json={"pool": True}), 403)
    response = user.post("/api/devices/pairing-codes/")
    assert response.status_code in (400, 403), describe(response)  # API-only accounts pair no phones
    expect_error(response, response.status_code)
    expect_error(user.get("/api/devices/", params={"pool": "true"}), 403)
    # Session send: without device_id 202, with one 400 (and that one queues nothing).
    m1 = expect(user.post("/api/sms/send/", json={"to": TO, "message": "from the dashboard"}), 202)
    assert m1["status"] == "queued" and m1["id"]
    before = footprint(user)
    expect_error(user.post("/api/sms/send/", json={"to": TO, "message": "x", "device_id": pool_phone.device_id}), 400)
    assert footprint(user) == before

    key = world.api_key(user, "backend")
    assert set(key) == {"id", "name", "api_key", "created_at"}, key
    assert key["name"] == "backend"
    assert_recent(key["created_at"])
    listed = expect(user.get("/api/api-keys/"), 200)
    assert [k["id"] for k in listed] == [key["id"]]
    assert all("api_key" not in k for k in listed) and key["api_key"] not in user.get("/api/api-keys/").text

    external = expect(world.external({"api_key": key["api_key"], "to": TO, "message": "from the backend"}), 202)
    assert set(external) == {"id", "status"} and external["status"] == "queued", external

    tasks = pool_phone.claim(limit=100)
    assert sorted((t["id"], t["message"]) for t in tasks) == sorted(
        [(m1["id"], "from the dashboard"), (external["id"], "from the backend")]
    )
    assert all(t["to"] == TO for t in tasks)
    assert pool_phone.claim() == []
    assert expect(pool_phone.report(m1["id"], "sent"), 200) == {"id": m1["id"], "status": "sent"}
    assert expect(pool_phone.report(m1["id"], "delivered"), 200) == {"id": m1["id"], "status": "delivered"}
    assert expect(pool_phone.report(external["id"], "sent"), 200) == {"id": external["id"], "status": "sent"}

    assert message(user, m1["id"])["status"] == "delivered"
    assert message(user, external["id"])["status"] == "sent"
    stats = expect(user.get("/api/stats/"), 200)
    assert {f: stats[f] for f in COUNTER_FIELDS} == {
        "total_messages": 2,
        "sent": 2,
        "failed": 0,
        "success_rate": 100.0,
        "delivered": 1,
        "queued": 0,
        "expired": 0,
        "cancelled": 0,
    }, stats
    assert stats["devices"] == []

    # A revoked key stops working at once.
    assert user.delete(f"/api/api-keys/{key['id']}/").status_code == 204
    expect_error(world.external({"api_key": key["api_key"], "to": TO, "message": "after revoke"}), 401)
    assert expect(user.get("/api/api-keys/"), 200) == []
    expect_error(user.delete(f"/api/api-keys/{key['id']}/"), 404)
    assert counters(user)["total_messages"] == 2

    # A self-managed dashboard send must name its device; pool pairing is the operator's.
    self_managed = world.signup("self_managed", "selfmanaged")
    expect_error(self_managed.post("/api/devices/pairing-codes/", json={"pool": True}), 403)
    before = footprint(self_managed)
    expect_error(self_managed.post("/api/sms/send/", json={"to": TO, "message": "no device"}), 400)
    assert footprint(self_managed) == before
    assert pool_phone.claim() == []


def test_self_managed_external_send_without_device_goes_to_own_pool(world: World) -> None:
    owner = world.signup("self_managed", "ownpool")
    phone = world.pair(owner, "own phone", online=False)
    stranger = world.signup("self_managed", "stranger")
    stranger_phone = world.pair(stranger, "stranger phone")
    key = world.api_key(owner)

    queued = expect(world.external({"api_key": key["api_key"], "to": TO, "message": "to my pool"}), 202)
    assert set(queued) == {"id", "status"} and queued["status"] == "queued"
    assert message(owner, queued["id"])["device_id"] is None
    # Only the account's own devices claim from its pool; a claim is presence, so a phone
    # that never sent a heartbeat is online as it claims.
    assert stranger_phone.claim() == []
    assert phone.claim() == [{"id": queued["id"], "to": TO, "message": "to my pool"}]
    assert message(owner, queued["id"])["status"] == "claimed"
    assert message(owner, queued["id"])["device_id"] == phone.device_id
    assert expect(phone.report(queued["id"], "delivered"), 200) == {"id": queued["id"], "status": "delivered"}

    # With device_id: straight to that device; another account's device is refused.
    targeted = expect(
        world.external({"api_key": key["api_key"], "to": TO, "message": "targeted", "device_id": phone.device_id}), 202
    )
    assert phone.claim() == [{"id": targeted["id"], "to": TO, "message": "targeted"}]
    before, stranger_before = footprint(owner), footprint(stranger)
    response = world.external(
        {"api_key": key["api_key"], "to": TO, "message": "x", "device_id": stranger_phone.device_id}
    )
    assert response.status_code in (400, 404), describe(response)
    expect_error(response, response.status_code)
    assert footprint(owner) == before and footprint(stranger) == stranger_before
    assert stranger_phone.claim() == []


# Isolation between accounts and credentials -----------------------------------------------


def test_accounts_and_credentials_are_isolated(world: World) -> None:
    alice = world.signup("self_managed", "alice")
    alice_phone = world.pair(alice, "alice phone")
    alice_phone2 = world.pair(alice, "alice phone 2")
    held = send(alice, device_id=alice_phone.device_id, message="held by phone 1")
    assert [t["id"] for t in alice_phone.claim()] == [held["id"]]
    waiting = send(alice, device_id=alice_phone.device_id, message="still queued")
    alice_key = world.api_key(alice)

    bob = world.signup("self_managed", "bob")
    bob_phone = world.pair(bob, "bob phone")
    bob_message = send(bob, device_id=bob_phone.device_id, message="bob's")
    alice_before = footprint(alice)

    # Bob's session reaches none of Alice's things.
    for response in (
        bob.patch(f"/api/devices/{alice_phone.device_id}/", json={"device_name": "mine now"}),
        bob.delete(f"/api/devices/{alice_phone.device_id}/"),
        bob.get(f"/api/sms/{held['id']}/"),
        bob.get(f"/api/sms/{waiting['id']}/"),
        bob.post(f"/api/sms/{waiting['id']}/cancel/"),
        bob.delete(f"/api/api-keys/{alice_key['id']}/"),
    ):
        assert response.status_code in (403, 404), describe(response)
        expect_error(response, response.status_code)
    response = bob.post("/api/sms/send/", json={"to": TO, "message": "via alice", "device_id": alice_phone.device_id})
    assert response.status_code in (400, 403, 404), describe(response)
    expect_error(response, response.status_code)
    assert [d["device_id"] for d in expect(bob.get("/api/devices/"), 200)] == [bob_phone.device_id]
    assert [m["id"] for m in expect(bob.get("/api/sms/"), 200)["items"]] == [bob_message["id"]]
    assert expect(bob.get("/api/sms/", params={"device_id": alice_phone.device_id}), 200)["items"] == []
    assert expect(bob.get("/api/api-keys/"), 200) == []
    expect_error(bob.get("/api/devices/", params={"pool": "true"}), 403)
    bob_stats = expect(bob.get("/api/stats/"), 200)
    assert bob_stats["total_messages"] == 1
    assert [d["device_id"] for d in bob_stats["devices"]] == [bob_phone.device_id]
    # ... and Alice's are untouched.
    assert footprint(alice) == alice_before
    [alice_listed, _] = expect(alice.get("/api/devices/"), 200)
    assert alice_listed["device_name"] == "alice phone"
    assert [k["id"] for k in expect(alice.get("/api/api-keys/"), 200)] == [alice_key["id"]]

    # A device token acts only as its own device, and only on messages it holds.
    expect_error(alice_phone.api.get(f"/api/devices/{bob_phone.device_id}/tasks/"), 403)
    expect_error(alice_phone.api.post(f"/api/devices/{bob_phone.device_id}/heartbeat/", json={}), 403)
    expect_error(alice_phone.api.get(f"/api/devices/{alice_phone2.device_id}/tasks/"), 403)
    assert bob_phone.claim() == [{"id": bob_message["id"], "to": TO, "message": "bob's"}]
    for response in (
        bob_phone.report(held["id"], "sent"),  # another account's message
        alice_phone2.report(held["id"], "sent"),  # same account, held by another phone
        alice_phone.report(bob_message["id"], "sent"),
        alice_phone.report(waiting["id"] + "x", "sent"),
    ):
        assert response.status_code in (403, 404), describe(response)
        expect_error(response, response.status_code)
    # Its own device's message that no phone holds yet: not reportable either.
    response = alice_phone.report(waiting["id"], "sent")
    assert response.status_code in (404, 409), describe(response)
    expect_error(response, response.status_code)
    assert message(alice, held["id"])["status"] == "claimed"
    assert message(alice, waiting["id"])["status"] == "queued"
    assert message(bob, bob_message["id"])["status"] == "claimed"

    # A device token is no session.
    for response in (
        alice_phone.api.get("/api/stats/"),
        alice_phone.api.get("/api/sms/"),
        alice_phone.api.get(f"/api/sms/{held['id']}/"),
        alice_phone.api.get("/api/devices/"),
        alice_phone.api.get("/api/api-keys/"),
        alice_phone.api.post("/api/sms/send/", json={"to": TO, "message": "x", "device_id": alice_phone.device_id}),
        alice_phone.api.post("/api/api-keys/", json={"name": "x"}),
        alice_phone.api.post("/api/devices/pairing-codes/"),
        alice_phone.api.post(f"/api/sms/{waiting['id']}/cancel/"),
        alice_phone.api.post("/api/external/send/", json={"to": TO, "message": "x"}),
    ):
        expect_error(response, 401)
    # A session is no device token.
    expect_error(alice.get(f"/api/devices/{alice_phone.device_id}/tasks/"), 401)
    expect_error(alice.post(f"/api/devices/{alice_phone.device_id}/heartbeat/", json={}), 401)
    expect_error(alice.post(f"/api/sms/{held['id']}/status/", json={"status": "sent"}), 401)

    # An API key reads nothing, however it is presented.
    secret = alice_key["api_key"]
    presented = [
        world.api(),
        world.api(Authorization=f"Bearer {secret}"),
        world.api(**{"X-Api-Key": secret}),
        world.api(**{"X-Device-Token": secret}),
    ]
    for client in presented:
        for path in (
            "/api/stats/",
            "/api/sms/",
            f"/api/sms/{held['id']}/",
            "/api/devices/",
            "/api/api-keys/",
            f"/api/devices/{alice_phone.device_id}/tasks/",
        ):
            expect_error(client.get(path, params={"api_key": secret}), 401)
            expect_error(
                client.request(
                    "GET",
                    path,
                    content=f'{{"api_key": "{secret}"}}'.encode(),
                    headers={"Content-Type": "application/json"},
                ),
                401,
            )
    for path, body in (
        (f"/api/sms/{waiting['id']}/cancel/", {}),
        (f"/api/devices/{alice_phone.device_id}/heartbeat/", {}),
        (f"/api/sms/{held['id']}/status/", {"status": "sent"}),
        ("/api/api-keys/", {"name": "escalate"}),
        ("/api/devices/pairing-codes/", {}),
        ("/api/sms/send/", {"to": TO, "message": "x", "device_id": alice_phone.device_id}),
    ):
        expect_error(world.api().post(path, json={"api_key": secret, **body}), 401)
    assert footprint(alice) == alice_before
    assert message(alice, held["id"])["status"] == "claimed"


def test_api_only_accounts_share_the_pool_but_not_their_messages(world: World) -> None:
    carol = world.signup("api_only", "carol")
    dave = world.signup("api_only", "dave")
    mine = send(carol, message="carol's")
    dave_before = footprint(dave)
    expect_error(dave.get(f"/api/sms/{mine['id']}/"), 404)
    response = dave.post(f"/api/sms/{mine['id']}/cancel/")
    assert response.status_code in (403, 404), describe(response)
    expect_error(response, response.status_code)
    assert footprint(dave) == dave_before and dave_before[1] == []
    assert message(carol, mine["id"])["status"] == "queued"
    # Leave the platform pool empty.
    assert expect(carol.post(f"/api/sms/{mine['id']}/cancel/"), 200) == {"id": mine["id"], "status": "cancelled"}
    assert counters(carol)["cancelled"] == 1


def test_removed_device_token_stops_at_once(world: World) -> None:
    owner = world.signup("self_managed", "remover")
    phone = world.pair(owner, "to remove")
    keep = world.pair(owner, "to keep")
    held = send(owner, device_id=phone.device_id, message="claimed, never reported")
    # The token is used first, so the server has it remembered (a token names its device
    # for life, and the server keeps that mapping in memory): removal must still win.
    assert [t["id"] for t in phone.claim()] == [held["id"]]
    assert expect(phone.heartbeat({}), 200)["device_id"] == phone.device_id
    queued = send(owner, device_id=phone.device_id, message="never sent")
    bearer = world.api(Authorization=f"Bearer {phone.token}")

    response = owner.delete(f"/api/devices/{phone.device_id}/")
    assert response.status_code == 204 and response.content == b"", describe(response)
    expect_error(phone.tasks(), 401)
    expect_error(phone.heartbeat({}), 401)
    expect_error(bearer.get(f"/api/devices/{phone.device_id}/tasks/"), 401)
    expect_error(phone.report(queued["id"], "sent"), 401)
    expect_error(phone.report(held["id"], "sent"), 401)
    assert [d["device_id"] for d in expect(owner.get("/api/devices/"), 200)] == [keep.device_id]
    assert [d["device_id"] for d in expect(owner.get("/api/stats/"), 200)["devices"]] == [keep.device_id]
    expect_error(owner.delete(f"/api/devices/{phone.device_id}/"), 404)
    expect_error(owner.patch(f"/api/devices/{phone.device_id}/", json={"device_name": "back"}), 404)
    response = owner.post("/api/sms/send/", json={"to": TO, "message": "x", "device_id": phone.device_id})
    assert response.status_code in (400, 404), describe(response)
    expect_error(response, response.status_code)
    # Its queued message does not wait forever for a phone that is gone.
    assert message(owner, queued["id"])["status"] == "failed"
    assert keep.claim() == []
    # The other device still works.
    assert expect(keep.heartbeat({}), 200)["device_id"] == keep.device_id


# Bad input: refused with the error shape, and nothing queued ------------------------------


@dataclass
class Sender:
    user: Api
    phone: Phone
    key: str


@pytest.fixture(scope="module")
def sender(world: World) -> Sender:
    user = world.signup("self_managed", "badinput")
    phone = world.pair(user, "bad input phone")
    return Sender(user, phone, world.api_key(user)["api_key"])


JSON = {"Content-Type": "application/json"}
BIG = "x" * (MAX_BODY + 1024)

# (case id, body as JSON-able value or raw bytes, extra headers, expected status)
SESSION_SEND_CASES = [
    ("malformed-json", b'{"to": "+15551234567", "message": ', JSON, 400),
    ("not-json-at-all", b"to=+15551234567&message=hi", JSON, 400),
    ("json-array", [], None, 400),
    ("json-string", "hello", None, 400),
    ("json-null", None, None, 400),
    ("missing-message", {"to": TO}, None, 400),
    ("missing-to", {"message": "hi"}, None, 400),
    ("to-is-number", {"to": 15551234567, "message": "hi"}, None, 400),
    ("message-is-number", {"to": TO, "message": 42}, None, 400),
    ("message-is-list", {"to": TO, "message": ["hi"]}, None, 400),
    ("device-id-is-number", {"to": TO, "message": "hi", "device_id": 7}, None, 400),
    ("to-without-plus", {"to": "15551234567", "message": "hi"}, None, 400),
    ("to-national", {"to": "(555) 123-4567", "message": "hi"}, None, 400),
    ("to-too-short", {"to": "+1", "message": "hi"}, None, 400),
    ("to-letters", {"to": "+1555abc4567", "message": "hi"}, None, 400),
    ("to-vanity-word", {"to": "+1555CALLNOW", "message": "hi"}, None, 400),
    ("to-with-extension", {"to": "+15551234567;ext=2", "message": "hi"}, None, 400),
    ("to-empty", {"to": "", "message": "hi"}, None, 400),
    ("to-no-country", {"to": "+0123456789", "message": "hi"}, None, 400),
    ("message-empty", {"to": TO, "message": ""}, None, 400),
    ("message-1601", {"to": TO, "message": "a" * 1601}, None, 400),
    ("message-lone-surrogate", b'{"to": "+15551234567", "message": "\\ud800"}', JSON, 400),
    ("body-over-64k", {"to": TO, "message": BIG}, None, 413),
    ("text-plain", b'{"to": "+15551234567", "message": "hi"}', {"Content-Type": "text/plain"}, 415),
    ("form-encoded", b"to=%2B15551234567&message=hi", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
]


def _send_raw(client: Api, path: str, body: Any, headers: dict[str, str] | None, **extra: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers=dict(headers or {}), **extra)
    return client.post(path, json=body, headers=dict(headers or {}), **extra)


@pytest.mark.parametrize(
    ("case", "body", "headers", "status"), SESSION_SEND_CASES, ids=[c[0] for c in SESSION_SEND_CASES]
)
def test_session_send_refuses_bad_input(
    sender: Sender, case: str, body: Any, headers: dict[str, str] | None, status: int
) -> None:
    if isinstance(body, dict) and case not in ("device-id-is-number",):
        body = {"device_id": sender.phone.device_id, **body}
    before = footprint(sender.user)
    response = _send_raw(sender.user, "/api/sms/send/", body, headers)
    if response.status_code == 202:  # a bug: do not leave it for the other tests' phone
        expect(sender.user.post(f"/api/sms/{response.json()['id']}/cancel/"), 200)
    expect_error(response, status)
    assert footprint(sender.user) == before


def test_message_length_boundaries(sender: Sender) -> None:
    """1 and 1,600 characters are accepted, with the segment count computed at enqueue."""
    device_id = sender.phone.device_id
    cases = [("a", 1), ("a" * 160, 1), ("a" * 161, 2), ("a" * 1600, 11), ("ж" * 70, 1), ("ж" * 71, 2), ("ж" * 1600, 24)]
    try:
        for text, segments in cases:
            queued = send(sender.user, device_id=device_id, message=text)
            assert queued["segments"] == segments, (len(text), text[0], queued)
            assert message(sender.user, queued["id"])["message"] == text
    finally:  # leave nothing queued for the shared phone
        for item in expect(sender.user.get("/api/sms/", params={"status": "queued"}), 200)["items"]:
            expect(sender.user.post(f"/api/sms/{item['id']}/cancel/"), 200)


EXTERNAL_CASES = [
    ("to-is-number", {"to": 15551234567, "message": "hi"}, None, 400),
    ("to-not-e164", {"to": "5551234567", "message": "hi"}, None, 400),
    ("message-empty", {"to": TO, "message": ""}, None, 400),
    ("message-1601", {"to": TO, "message": "é" * 1601}, None, 400),
    ("missing-message", {"to": TO}, None, 400),
    ("body-over-64k", {"to": TO, "message": BIG}, None, 413),
    ("text-plain", None, {"Content-Type": "text/plain"}, 415),
]


@pytest.mark.parametrize(("case", "body", "headers", "status"), EXTERNAL_CASES, ids=[c[0] for c in EXTERNAL_CASES])
def test_external_send_refuses_bad_input(
    world: World, sender: Sender, case: str, body: Any, headers: dict[str, str] | None, status: int
) -> None:
    if body is None:
        body = f'{{"api_key": "{sender.key}", "to": "{TO}", "message": "hi"}}'.encode()
    else:
        body = {"api_key": sender.key, **body}
    before = footprint(sender.user)
    expect_error(_send_raw(world.api(), "/api/external/send/", body, headers), status)
    assert footprint(sender.user) == before


def test_bad_credentials_are_401_whatever_the_body(world: World, sender: Sender) -> None:
    before = footprint(sender.user)
    device_id = sender.phone.device_id
    anonymous = world.api()
    bad_token = world.api(**{"X-Device-Token": "not-a-token"})
    bad_bearer = world.api(Authorization="Bearer not-a-token")
    malformed = b'{"status": '
    for response in (
        # Device endpoints: no token, a wrong one, with good and malformed bodies.
        anonymous.get(f"/api/devices/{device_id}/tasks/"),
        bad_token.get(f"/api/devices/{device_id}/tasks/"),
        bad_bearer.get(f"/api/devices/{device_id}/tasks/"),
        bad_token.get(f"/api/devices/{device_id}/tasks/", params={"limit": "nonsense"}),
        anonymous.post(f"/api/devices/{device_id}/heartbeat/", json={"battery": 50}),
        bad_token.post(f"/api/devices/{device_id}/heartbeat/", content=malformed, headers=JSON),
        bad_token.post(
            f"/api/devices/{device_id}/heartbeat/", content=malformed, headers={"Content-Type": "text/plain"}
        ),
        bad_token.post(f"/api/devices/{device_id}/heartbeat/", json={"battery": "full"}),
        bad_bearer.post("/api/sms/abc/status/", content=malformed, headers=JSON),
        anonymous.post("/api/sms/abc/status/", json={"status": "sent"}),
        # Session endpoints without a session.
        anonymous.post("/api/sms/send/", json={"to": TO, "message": "hi", "device_id": device_id}),
        anonymous.post("/api/sms/send/", content=malformed, headers=JSON),
        anonymous.post("/api/sms/send/", content=b"hello", headers={"Content-Type": "text/plain"}),
        # A large (not oversized) body: the 401 comes before the body is read, and a
        # client still writing an oversized one may see the connection close first.
        anonymous.post("/api/sms/send/", json={"to": TO, "message": "x" * (MAX_BODY - 1024)}),
        anonymous.get("/api/stats/"),
        anonymous.get("/api/sms/"),
        anonymous.get("/api/devices/"),
        anonymous.get("/api/api-keys/"),
        anonymous.post("/api/api-keys/", json={"name": "x"}),
        anonymous.post("/api/devices/pairing-codes/"),
        world.api(Cookie="sessionid=forged; csrftoken=forged").get("/api/stats/"),
        # External send without a usable key.
        anonymous.post("/api/external/send/", json={"to": TO, "message": "hi"}),
        anonymous.post("/api/external/send/", json={"api_key": "wrong", "to": TO, "message": "hi"}),
        anonymous.post("/api/external/send/", json={"api_key": 12345, "to": TO, "message": "hi"}),
        anonymous.post("/api/external/send/", json={"api_key": "wrong", "to": 5, "message": ""}),
        anonymous.post("/api/external/send/", json=[sender.key, TO, "hi"]),
        anonymous.post("/api/external/send/", content=b"", headers=JSON),
        anonymous.post("/api/external/send/", json={"api_key": sender.key[:-2], "to": TO, "message": "hi"}),
        world.api(Authorization=f"Bearer {sender.key}").post("/api/external/send/", json={"to": TO, "message": "hi"}),
    ):
        expect_error(response, 401)
    # A session without the CSRF echo is refused too (and changes nothing).
    key_id = expect(sender.user.get("/api/api-keys/"), 200)[0]["id"]
    expect_error(sender.user.delete(f"/api/api-keys/{key_id}/", csrf=False), 403)
    expect_error(sender.user.delete(f"/api/devices/{device_id}/", csrf=False), 403)
    expect_error(sender.user.patch(f"/api/devices/{device_id}/", csrf=False, json={"device_name": "csrf"}), 403)
    assert [k["id"] for k in expect(sender.user.get("/api/api-keys/"), 200)] == [key_id]
    assert [d["device_name"] for d in expect(sender.user.get("/api/devices/"), 200)] == [sender.phone.name]
    expect_error(
        sender.user.post("/api/sms/send/", csrf=False, json={"to": TO, "message": "hi", "device_id": device_id}), 403
    )
    expect_error(
        sender.user.post(
            "/api/sms/send/", headers={"X-CSRFToken": "wrong"}, json={"to": TO, "message": "hi", "device_id": device_id}
        ),
        403,
    )
    assert footprint(sender.user) == before
    assert sender.phone.claim() == []


# (case id, body, Content-Type, expected status and code): the key travels in the body, so
# a body that does not parse hides it (400 invalid_json; 415 if not even sent as JSON),
# and JSON without a key, or no body, is a missing credential (401).
KEY_BODY_CASES = [
    ("truncated-json-with-a-real-key", lambda whole: whole[:-1], JSON, 400, "invalid_json"),
    ("json-then-garbage", lambda whole: whole + b"]", JSON, 400, "invalid_json"),
    ("not-json-at-all", lambda whole: b"api_key=" + whole, JSON, 400, "invalid_json"),
    ("not-json-sent-as-text", lambda whole: whole[:-1], {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("json-array", lambda whole: b"[" + whole + b"]", JSON, 401, "not_authenticated"),
    ("json-string", lambda whole: json.dumps(whole.decode()).encode(), JSON, 401, "not_authenticated"),
    ("json-null", lambda whole: b"null", JSON, 401, "not_authenticated"),
    ("empty-body", lambda whole: b"", JSON, 401, "not_authenticated"),
]


@pytest.mark.parametrize("path", ["/api/external/send/", "/api/external/send-batch/"])
@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "code"), KEY_BODY_CASES, ids=[c[0] for c in KEY_BODY_CASES]
)
def test_the_api_key_endpoints_refuse_a_body_that_is_not_json_as_400(
    world: World, sender: Sender, path: str, case: str, body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    message = {"to": TO, "message": "hi", "device_id": sender.phone.device_id}
    valid = (
        {"api_key": sender.key, **message}
        if path.endswith("/send/")
        else {"api_key": sender.key, "messages": [message]}
    )
    before = footprint(sender.user)
    response = world.api().post(path, content=body(json.dumps(valid).encode()), headers=headers)
    expect_error(response, status, code)
    assert footprint(sender.user) == before


def test_an_id_written_with_angle_brackets(server: ServerProcess, world: World, sender: Sender) -> None:
    """``curl .../api/devices/<id>/tasks/`` sends the ``<`` and ``>`` raw, which HTTP/1.1
    does not allow in a request line: the HTTP server (granian) answers 400 with an empty
    body before any of the app runs (no access log line). Written percent-encoded, the
    id reaches the app and gets the JSON error any unknown id gets."""
    raw = "GET /api/devices/<id>/tasks/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(raw.encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert body == b"" and b"content-length: 0" in head.lower(), answer
    time.sleep(0.5)  # the access log is written after the answer
    assert "/<id>/" not in server.output(), "the app saw the request after all: answer it with the JSON error"

    phone = sender.phone
    expect_error(world.api().get("/api/devices/%3Cid%3E/tasks/"), 401)
    expect_error(phone.api.get("/api/devices/%3Cid%3E/tasks/"), 403)  # another device's id
    expect_error(sender.user.get("/api/sms/%3Cid%3E/"), 404)
    expect_error(sender.user.patch("/api/devices/%3Cid%3E/", json={"device_name": "x"}), 404)


def test_options_and_405_list_the_methods_without_a_credential(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        for path, allow in (
            ("/api/webhooks/", "GET, OPTIONS, POST"),
            ("/api/devices/abc/", "DELETE, OPTIONS, PATCH"),
            ("/api/external/send/", "OPTIONS, POST"),
        ):
            response = anonymous.options(path)
            assert response.status_code == 204 and response.headers["Allow"] == allow, describe(response)
            # A method the path does not take: 405 lists them in the same order (Litestar's
            # own order differs from one worker process to the next).
            refused = anonymous.put(path)
            expect_error(refused, 405)
            assert refused.headers["Allow"] == allow, describe(refused)


def test_phone_endpoints_refuse_bad_input(world: World, sender: Sender) -> None:
    phone = sender.phone
    before = footprint(sender.user)
    for body in (
        {"battery": 101},
        {"battery": -1},
        {"battery": 50.5},
        {"battery": True},
        {"android_version": "x" * 33},
        {"app_version": 14},
    ):
        expect_error(phone.heartbeat(body), 400)
    expect_error(phone.heartbeat(content=b'{"battery": ', headers=JSON), 400)
    expect_error(phone.heartbeat(content=b'{"battery": 50}', headers={"Content-Type": "text/plain"}), 415)
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}):
        expect_error(phone.tasks(**params), 400)
    # Status reports: unknown message 404, bad status 400, malformed 400.
    expect_error(phone.report("0000000000000000", "sent"), 404)
    expect_error(phone.report("nosuchmessage", "delivered"), 404)
    queued = send(sender.user, device_id=phone.device_id, message="to report")
    [task] = phone.claim()
    assert task["id"] == queued["id"]
    for status in ("queued", "claimed", "cancelled", "bogus", 1):
        expect_error(phone.report(queued["id"], status), 400)
    expect_error(phone.api.post(f"/api/sms/{queued['id']}/status/", content=b"{", headers=JSON), 400)
    expect_error(
        phone.api.post(
            f"/api/sms/{queued['id']}/status/", content=b'{"status":"sent"}', headers={"Content-Type": "text/plain"}
        ),
        415,
    )
    assert message(sender.user, queued["id"])["status"] == "claimed"
    assert expect(phone.report(queued["id"], "failed", error="no signal"), 200)["status"] == "failed"
    expect_error(phone.report(queued["id"], "sent"), 409)
    expect_error(phone.report(queued["id"], "delivered"), 409)
    after = footprint(sender.user)
    assert after[0]["total_messages"] == before[0]["total_messages"] + 1
    assert after[0]["failed"] == before[0]["failed"] + 1

    # Register: a bad code, missing or wrong fields.
    anonymous = world.api()
    expect_error(anonymous.post("/api/devices/register/", json={"code": "NOSUCHCODE", "device_name": "x"}), 404)
    expect_error(anonymous.post("/api/devices/register/", json={"device_name": "x"}), 400)
    expect_error(anonymous.post("/api/devices/register/", content=b'{"code": ', headers=JSON), 400)
    expect_error(
        anonymous.post(
            "/api/devices/register/", content=b'{"code":"A","device_name":"x"}', headers={"Content-Type": "text/plain"}
        ),
        415,
    )
    code = expect(sender.user.post("/api/devices/pairing-codes/"), 201)["code"]
    expect_error(anonymous.post("/api/devices/register/", json={"code": code, "device_name": ""}), 400)
    expect_error(
        anonymous.post("/api/devices/register/", json={"code": code, "device_name": "x", "phone_number": "12"}), 400
    )
    # A refused registration did not spend the code... or if it did, no device appeared.
    assert [d["device_id"] for d in expect(sender.user.get("/api/devices/"), 200)] == [phone.device_id]


def test_dashboard_endpoints_refuse_bad_input(world: World, sender: Sender) -> None:
    user = sender.user
    before = footprint(user)
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"status": "bogus"}, {"cursor": "!!"}):
        expect_error(user.get("/api/sms/", params=params), 400)
    # Unknown ids: 404.
    expect_error(user.get("/api/sms/0000000000000000/"), 404)
    expect_error(user.post("/api/sms/0000000000000000/cancel/"), 404)
    expect_error(user.patch("/api/devices/nosuchdevice/", json={"device_name": "x"}), 404)
    expect_error(user.delete("/api/devices/nosuchdevice/"), 404)
    expect_error(user.delete("/api/api-keys/nosuchkey/"), 404)
    # Device settings: wrong types and ranges.
    device = f"/api/devices/{sender.phone.device_id}/"
    for body in (
        {"segments_per_minute": "thirty"},
        {"segments_per_minute": 0},
        {"segments_per_day": -5},
        {"device_name": ""},
        {"device_name": 7},
    ):
        expect_error(user.patch(device, json=body), 400)
    expect_error(user.patch(device, content=b"{", headers=JSON), 400)
    expect_error(user.patch(device, content=b'{"device_name":"x"}', headers={"Content-Type": "text/plain"}), 415)
    updated = expect(user.patch(device, json={"device_name": "renamed", "segments_per_minute": 20}), 200)
    assert updated["device_name"] == "renamed" and updated["segments_per_minute"] == 20
    # API keys.
    for body in ({}, {"name": 5}):
        expect_error(user.post("/api/api-keys/", json=body), 400)
    # Signup and login.
    anonymous = world.api()
    for body in (
        {"email": "short@example.com", "password": "short", "account_type": "self_managed"},
        {"email": "not-an-email", "password": PASSWORD, "account_type": "self_managed"},
        {"email": "kind@example.com", "password": PASSWORD, "account_type": "superuser"},
        {"email": "kind@example.com", "password": PASSWORD},
    ):
        expect_error(anonymous.post("/api/auth/signup/", json=body), 400)
    taken = {"email": user.account["email"], "password": PASSWORD, "account_type": "self_managed"}
    expect_error(anonymous.post("/api/auth/signup/", json=taken), 409)
    expect_error(anonymous.post("/api/auth/login/", content=b"{", headers=JSON), 400)
    assert "sessionid" not in anonymous.client.cookies
    assert footprint(user) == before


def test_numbers_sent_as_strings_are_wrong_types(sender: Sender) -> None:
    """A JSON string where the contract has a number is a wrong type (400), not coerced."""
    phone = sender.phone
    before = expect(sender.user.get("/api/devices/"), 200)
    expect_error(phone.heartbeat({"battery": "81"}), 400)
    expect_error(sender.user.patch(f"/api/devices/{phone.device_id}/", json={"segments_per_minute": "30"}), 400)
    after = expect(sender.user.get("/api/devices/"), 200)
    assert [(d["battery"], d["segments_per_minute"]) for d in after] == [
        (d["battery"], d["segments_per_minute"]) for d in before
    ]


def test_unknown_routes_and_methods_are_json_errors(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as raw:
        expect_error(raw.get("/api/nowhere/"), 404)
        expect_error(raw.get("/api/sms/send/"), 405)
        expect_error(raw.delete("/api/stats/"), 405)


def test_quota_exhausted_is_429(world: World) -> None:
    user = world.signup("api_only", "quota")
    key = world.api_key(user)["api_key"]
    accepted: list[str] = []
    refused: httpx.Response | None = None
    for i in range(150):
        response = (
            user.post("/api/sms/send/", json={"to": TO, "message": f"m{i}"})
            if i % 2
            else world.external({"api_key": key, "to": TO, "message": f"m{i}"})
        )
        if response.status_code != 202:
            refused = response
            break
        accepted.append(response.json()["id"])
    assert refused is not None, "the daily quota never ran out"
    body = expect_error(refused, 429, "quota_exceeded")
    assert body["detail"]
    assert len(accepted) == 100, f"{len(accepted)} accepted before {describe(refused)}"
    expect_error(user.post("/api/sms/send/", json={"to": TO, "message": "one more"}), 429, "quota_exceeded")
    expect_error(world.external({"api_key": key, "to": TO, "message": "one more"}), 429, "quota_exceeded")
    assert counters(user)["total_messages"] == 100
    # Leave the platform pool empty (a cancel gives no quota back).
    for message_id in accepted:
        assert expect(user.post(f"/api/sms/{message_id}/cancel/"), 200)["status"] == "cancelled"
    assert counters(user)["cancelled"] == 100
    expect_error(user.post("/api/sms/send/", json={"to": TO, "message": "after cancel"}), 429, "quota_exceeded")


# Documented but not yet seen in api/: idempotency and rate limits -------------------------


def test_idempotency_key_repeats_the_first_response(world: World, sender: Sender) -> None:
    user = sender.user
    body = {"to": TO, "message": "exactly once", "device_id": sender.phone.device_id}
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    before = counters(user)["total_messages"]
    try:
        first = expect(user.post("/api/sms/send/", json=body, headers=key), 202)
        again = expect(user.post("/api/sms/send/", json=body, headers=key), 202)
        assert again["id"] == first["id"], "a repeat with the same Idempotency-Key and body queued a second message"
        expect_error(
            user.post("/api/sms/send/", json={**body, "message": "different"}, headers=key),
            409,
            "idempotency_key_reused",
        )
        assert counters(user)["total_messages"] == before + 1
    finally:  # leave nothing queued for the shared phone
        for item in expect(user.get("/api/sms/", params={"status": "queued"}), 200)["items"]:
            expect(user.post(f"/api/sms/{item['id']}/cancel/"), 200)


# OpenAPI: every path used above, as the server serves it -----------------------------------


# Served but left out of the API document on purpose: Prometheus's text exposition for
# scrapers, not part of the JSON API (docs/operations.md describes it).
OUT_OF_THE_DOCUMENT = {("GET", "/metrics")}


def test_openapi_lists_every_path_used(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/schema/openapi.json")
    assert response.status_code == 200 and "json" in response.headers.get("content-type", ""), describe(response)
    document = response.json()
    assert isinstance(document, dict) and document.get("openapi", "").startswith("3.")
    paths: dict[str, dict[str, Any]] = document["paths"]
    templates = [(re.compile(re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path) for path in paths]

    # The seed doc's and DESIGN.md's paths, whether or not an earlier test ran.
    documented = {
        ("POST", "/api/devices/register/"),
        ("GET", "/api/devices/{device_id}/tasks/"),
        ("POST", "/api/devices/{device_id}/heartbeat/"),
        ("POST", "/api/sms/send/"),
        ("POST", "/api/sms/{message_id}/status/"),
        ("POST", "/api/external/send/"),
        ("GET", "/api/stats/"),
        ("POST", "/api/auth/signup/"),
        ("POST", "/api/auth/login/"),
        ("POST", "/api/auth/logout/"),
        ("POST", "/api/devices/pairing-codes/"),
        ("GET", "/api/devices/"),
        ("PATCH", "/api/devices/{device_id}/"),
        ("DELETE", "/api/devices/{device_id}/"),
        ("POST", "/api/api-keys/"),
        ("GET", "/api/api-keys/"),
        ("DELETE", "/api/api-keys/{key_id}/"),
        ("GET", "/api/sms/"),
        ("GET", "/api/sms/{message_id}/"),
        ("POST", "/api/sms/{message_id}/cancel/"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }
    missing = sorted(f"{method} {path}" for method, path in documented if method.lower() not in paths.get(path, {}))
    # Every other path an earlier test sent, as the server served it.
    shapes = [(method, re.compile(re.sub(r"\{[^/]+\}", "[^/]+", path) + "$")) for method, path in documented]
    for method, path in sorted(REQUESTS_MADE - OUT_OF_THE_DOCUMENT):
        if not path.startswith("/api/") and (method, path) not in documented:
            continue  # the dashboard's HTML pages, which a test may read too: not the JSON API
        if any(m == method and pattern.match(path) for m, pattern in shapes):
            continue  # one of the documented paths, checked above
        matches = [template for pattern, template in templates if pattern.match(path)]
        if not any(method.lower() in paths[t] for t in matches):
            missing.append(f"{method} {path} (used)")
    assert not missing, f"not in /schema/openapi.json (which lists {sorted(paths)}): {missing}"
