"""Rate limits and quotas over real HTTP: 429 with its headers and JSON body, nothing
changed by a refused request, recovery once the window passes, and an account's limits
raised by the operator (directly or by approving the account's request).

One server with small limits. It trusts X-Forwarded-For, so each test signs up from an
address of its own and the per-address signup limit of one test does not reach another.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from api.limits import client_key
from tests.support.e2e_server import ServerProcess, describe, expect, expect_error
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, TO, World

LIMITS = {
    "CONNECFY_TASKS_PER_MINUTE": "60",  # one poll a second
    "CONNECFY_TASKS_BURST": "2",
    "CONNECFY_SENDS_PER_SECOND": "2",
    "CONNECFY_SENDS_BURST": "3",
    "CONNECFY_AUTH_PER_MINUTE": "60",
    "CONNECFY_AUTH_BURST": "4",
    "CONNECFY_QUOTA_API_ONLY": "5",
    "CONNECFY_TRUST_FORWARDED_FOR": "true",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("connecfy-limits"), settings={**LIMITS, **serve_redis}).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.fixture
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose login, signup and register limiters give a token back every 10 s:
    none comes back while a test of them runs, however slow the box. On its private
    Redis only (a second serve on the module's Cluster would share its background work;
    the limiter script's single slot is shown on the Cluster by tests/broker)."""
    settings = {**LIMITS, "CONNECFY_AUTH_PER_MINUTE": "6"}
    process = ServerProcess(tmp_path_factory.mktemp("connecfy-auth-limits"), settings=settings).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.fixture
def auth_world(auth_server: ServerProcess) -> Iterator[World]:
    w = World(auth_server)
    yield w
    w.close()


def address() -> dict[str, str]:
    """A client address of its own, as a trusted proxy would pass it."""
    return {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}, 10.9.{uuid.uuid4().int % 250}.7"}


def limited(response: httpx.Response, code: str = "rate_limited") -> dict[str, Any]:
    """A 429 with the JSON error body, Retry-After and the RateLimit headers."""
    body = expect_error(response, 429, code)
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1, describe(response)
    if code == "rate_limited":
        assert int(response.headers["RateLimit-Remaining"]) == 0, response.headers
        assert int(response.headers["RateLimit-Limit"]) >= 1, response.headers
        assert int(response.headers["RateLimit-Reset"]) >= retry_after, response.headers
    return body


def rate(response: httpx.Response) -> tuple[int, int, int]:
    """(limit, remaining, reset seconds) from a successful response's headers."""
    h = response.headers
    return int(h["RateLimit-Limit"]), int(h["RateLimit-Remaining"]), int(h["RateLimit-Reset"])


def in_two_waves(first: list[Callable[[], httpx.Response]], then: list[Callable[[], httpx.Response]]) -> list[int]:
    """The statuses of ``first`` sent all at once, then, once all of them are answered,
    of ``then`` one by one: the login limiter (a token back every 10 s here) meets them
    in that order on a box of any load."""
    with ThreadPoolExecutor(max_workers=len(first)) as pool:
        early = [f.result().status_code for f in [pool.submit(call) for call in first]]
    return early + [call().status_code for call in then]


def wait_out(response: httpx.Response) -> None:
    time.sleep(int(response.headers["Retry-After"]) + 0.05)


def total(user: Any) -> int:
    return expect(user.get("/api/stats/"), 200)["total_messages"]


def operator(world: World) -> Any:
    op = world.api(**address())
    expect(op.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    return op


def test_polling_faster_than_the_tasks_limit(world: World) -> None:
    owner = world.signup(**address())
    phone = world.pair(owner)
    first = phone.tasks()
    assert expect(first, 200) == [] and rate(first)[:2] == (2, 1), first.headers
    second = phone.tasks()
    assert expect(second, 200) == [] and rate(second)[1] == 0, second.headers
    # A message waits; the refused poll must not hand it out.
    waiting = expect(owner.post("/api/sms/send/", json={"to": TO, "message": "hi", "device_id": phone.device_id}), 202)
    refused = phone.tasks()
    body = limited(refused)
    assert "try again in 1 s" in body["detail"], body
    assert expect(owner.get(f"/api/sms/{waiting['id']}/"), 200)["status"] == "queued"
    wait_out(refused)
    assert [t["id"] for t in phone.claim()] == [waiting["id"]]
    # The limiter is per device: a second phone of the account polls freely meanwhile.
    other = world.pair(owner, "second phone")
    assert expect(other.tasks(), 200) == []


def test_sends_count_every_message_of_a_batch(world: World) -> None:
    owner = world.signup(**address())
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    item = {"to": TO, "message": "batch", "device_id": phone.device_id}
    full = world.batch(key, [item] * 3)
    assert expect(full, 202)["count"] == 3 and rate(full)[:2] == (3, 0), full.headers
    for refused in (
        world.external({"api_key": key, **item}),
        owner.post("/api/sms/send/", json=item),
        world.batch(key, [item]),
    ):
        limited(refused)
    assert total(owner) == 3
    wait_out(refused)
    assert expect(world.external({"api_key": key, **item}), 202)["status"] == "queued"
    # A batch larger than the whole burst passes on a full bucket only and leaves it
    # overdrawn: 4 messages against a burst of 3 at 2/s, so the next one waits 1 s and
    # the bucket is whole again after 2 s.
    time.sleep(1.6)
    big = world.batch(key, [item] * 4)
    assert expect(big, 202)["count"] == 4, describe(big)
    after = world.external({"api_key": key, **item})
    limited(after)
    assert (after.headers["Retry-After"], after.headers["RateLimit-Reset"]) == ("1", "2"), after.headers
    assert total(owner) == 8


def test_login_signup_and_register_are_limited_per_address(auth_world: World) -> None:
    world = auth_world
    here = address()
    wrong = {"email": "nobody@example.com", "password": "x" * 9}

    def login(body: dict[str, Any]) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(f"{world.server.base_url}/api/auth/login/", json=body, headers=here, timeout=30)

    # The limit comes before the body is read: a malformed body is refused as well.
    statuses = in_two_waves([login(wrong)] * 4, [login(wrong), login({"nonsense": 1})])
    assert statuses == [401, 401, 401, 401, 429, 429], statuses
    # Other endpoints have limiters of their own; other addresses are not affected.
    assert world.signup(**here).account["id"]
    expect_error(
        world.api(**address()).post("/api/auth/login/", json={"email": "nobody@example.com", "password": "x" * 9}),
        401,
        "bad_credentials",
    )
    owner = world.signup(**address())
    pairing = world.api(**here)
    codes = [expect(owner.post("/api/devices/pairing-codes/"), 201)["code"] for _ in range(5)]
    for code in codes[:4]:
        expect(pairing.post("/api/devices/register/", json={"code": code, "device_name": "p"}), 201)
    limited(pairing.post("/api/devices/register/", json={"code": codes[4], "device_name": "p"}))
    assert len(expect(owner.get("/api/devices/"), 200)) == 4


def test_quota_exceeded_is_429_until_the_next_utc_day(world: World) -> None:
    sender = world.signup("api_only", **address())
    key = world.api_key(sender)["api_key"]
    expect(world.batch(key, [{"to": TO, "message": "m"}] * 3), 202)
    time.sleep(1.6)  # the send limit (3 at once, 2/s) is whole again
    refused = world.batch(key, [{"to": TO, "message": "m"}] * 3)
    body = limited(refused, "quota_exceeded")
    seconds_to_midnight = 86_400 - int(time.time()) % 86_400
    assert abs(int(refused.headers["Retry-After"]) - seconds_to_midnight) <= 5, refused.headers
    assert "quota" in body["detail"]
    assert total(sender) == 3
    limits = expect(sender.get("/api/account/limits/"), 200)
    assert (limits["daily_quota"], limits["quota_used_today"]) == (5, 3), limits
    # A batch larger than the whole quota can never pass: 400, not "try again tomorrow".
    too_big = expect_error(world.batch(key, [{"to": TO, "message": "m"}] * 6), 400)
    assert "whole daily quota of 5" in too_big["detail"], too_big
    assert total(sender) == 3


def test_an_account_asks_for_higher_limits_and_the_operator_approves(world: World) -> None:
    owner = world.signup(**address())
    phone = world.pair(owner)
    limits = expect(owner.get("/api/account/limits/"), 200)
    assert limits == {
        "sends_per_second": 2,
        "sends_burst": 3,
        "tasks_per_minute": 60,
        "tasks_burst": 2,
        "daily_quota": 10_000,
        "quota_used_today": 0,
        "pending_request": None,
    }
    expect_error(owner.post("/api/account/limit-requests/", json={"reason": "more"}), 400)
    expect_error(owner.post("/api/account/limit-requests/", json={"reason": "x", "sends_per_second": 0}), 400)
    asked = expect(
        owner.post(
            "/api/account/limit-requests/",
            json={"reason": "Monthly newsletter", "sends_per_second": 50, "daily_quota": 20_000},
        ),
        201,
    )
    assert asked["status"] == "pending" and asked["requested"] == {"sends_per_second": 50, "daily_quota": 20_000}
    expect_error(
        owner.post("/api/account/limit-requests/", json={"reason": "again", "daily_quota": 5}),
        409,
        "limit_request_pending",
    )
    assert expect(owner.get("/api/account/limits/"), 200)["pending_request"]["id"] == asked["id"]

    # Only the operator sees and answers requests.
    expect_error(owner.get("/api/operator/limit-requests/"), 403)
    expect_error(owner.post(f"/api/operator/limit-requests/{asked['id']}/approve/"), 403)
    op = operator(world)
    pending = expect(op.get("/api/operator/limit-requests/", params={"status": "pending"}), 200)
    assert asked["id"] in [r["id"] for r in pending]
    approved = expect(op.post(f"/api/operator/limit-requests/{asked['id']}/approve/", json={"note": "enjoy"}), 200)
    assert approved["status"] == "approved" and approved["note"] == "enjoy"
    # The burst grows with the rate, as the default one: 50/s with 3 per 2/s -> 75.
    assert approved["granted"] == {"sends_per_second": 50, "sends_burst": 75, "daily_quota": 20_000}
    expect_error(op.post(f"/api/operator/limit-requests/{asked['id']}/reject/"), 409, "limit_request_decided")
    expect_error(op.post("/api/operator/limit-requests/nosuchrequest0/approve/"), 404)

    limits = expect(owner.get("/api/account/limits/"), 200)
    assert (limits["sends_per_second"], limits["sends_burst"], limits["daily_quota"]) == (50, 75, 20_000)
    assert limits["pending_request"] is None
    key = world.api_key(owner)["api_key"]
    item = {"to": TO, "message": "raised", "device_id": phone.device_id}
    assert rate(expect_ok := world.batch(key, [item] * 70))[:2] == (75, 5), expect_ok.headers
    assert total(owner) == 70
    [mine] = expect(owner.get("/api/account/limit-requests/"), 200)
    assert mine["status"] == "approved"

    # A second request may be rejected, with a note; the limits stay.
    again = expect(owner.post("/api/account/limit-requests/", json={"reason": "more", "tasks_per_minute": 600}), 201)
    rejected = expect(op.post(f"/api/operator/limit-requests/{again['id']}/reject/", json={"note": "not now"}), 200)
    assert (rejected["status"], rejected["granted"], rejected["note"]) == ("rejected", None, "not now")
    assert expect(owner.get("/api/account/limits/"), 200)["tasks_per_minute"] == 60


def test_the_operator_sets_an_accounts_poll_limit(world: World) -> None:
    owner = world.signup(**address())
    phone = world.pair(owner)
    for _ in range(2):
        expect(phone.tasks(), 200)
    limited(phone.tasks())
    op = operator(world)
    account_id = owner.account["id"]
    changed = expect(
        op.patch(f"/api/operator/accounts/{account_id}/limits/", json={"tasks_per_minute": 6000, "tasks_burst": 20}),
        200,
    )
    assert (changed["tasks_per_minute"], changed["tasks_burst"]) == (6000, 20)
    # The claim script reads the new limit at once (one poll per 10 ms now).
    time.sleep(0.05)
    ok = phone.tasks()
    assert expect(ok, 200) == [] and rate(ok)[0] == 20, ok.headers
    expect_error(op.patch(f"/api/operator/accounts/{account_id}/limits/", json={"tasks_burst": -1}), 400)
    expect_error(op.patch(f"/api/operator/accounts/{account_id}/limits/", json={"tasks_burst": "9"}), 400)
    expect_error(op.patch("/api/operator/accounts/nosuchaccount1/limits/", json={"tasks_burst": 9}), 404)
    expect_error(owner.patch(f"/api/operator/accounts/{account_id}/limits/", json={"tasks_burst": 99}), 403)
    assert expect(owner.get("/api/account/limits/"), 200)["tasks_burst"] == 20


def test_a_client_cannot_pick_its_address_with_a_header_line_of_its_own(auth_server: ServerProcess) -> None:
    server = auth_server
    """A proxy may add its own X-Forwarded-For line instead of appending to the client's:
    the address is the last entry over every line, never one the client wrote."""
    proxy_saw = f"198.51.100.{uuid.uuid4().int % 250 + 1}"

    def login(i: int) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(
            f"{server.base_url}/api/auth/login/",
            json={"email": "nobody@example.com", "password": "x" * 9},
            headers=[("X-Forwarded-For", f"10.0.0.{i}"), ("X-Forwarded-For", proxy_saw)],
            timeout=30,
        )

    statuses = in_two_waves([login(i) for i in range(4)], [login(4)])
    assert statuses == [401, 401, 401, 401, 429], statuses


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("[2001:db8:1:3::1]", "2001:db8:1:3::/64"),
        ("not an address", "not an address"),
    ],
)
def test_client_keys(address: str, key: str) -> None:
    assert client_key(address) == key


def test_an_ipv6_host_cannot_rotate_through_its_own_prefix(auth_server: ServerProcess) -> None:
    server = auth_server
    prefix = f"2001:db8:{uuid.uuid4().int % 65000:x}:1"

    def login(i: int) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(
            f"{server.base_url}/api/auth/login/",
            json={"email": "nobody@example.com", "password": "x" * 9},
            headers={"X-Forwarded-For": f"{prefix}::{i + 1:x}"},
            timeout=30,
        )

    statuses = in_two_waves([login(i) for i in range(4)], [login(4)])
    assert statuses == [401, 401, 401, 401, 429], statuses
