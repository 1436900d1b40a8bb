"""Every endpoint × every kind of credential → the status DESIGN.md promises, per cell.

Kinds: none, the device's token, another device's token (same account), the session
(with its CSRF token), the session without the CSRF token, another account's session,
the API key, a revoked API key, and the token of a removed device. The endpoints are the
served OpenAPI document's (plus /metrics): a new endpoint without a row here fails.

Each cell runs on fresh resources where the call would use them up (a message to
cancel, a key to revoke, a session to log out), so every cell sees the same world.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.e2e_server import ServerProcess, describe, expect
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PASSWORD, TO, Phone, World

KINDS = (
    "none",
    "device",
    "other_device",
    "session",
    "session_no_csrf",
    "other_session",
    "api_key",
    "revoked_key",
    "removed_device",
)
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("connecfy-matrix"),
        settings={
            "CONNECFY_AUTH_BURST": "10000",
            "CONNECFY_TASKS_BURST": "10000",
            "CONNECFY_SENDS_BURST": "10000",
            **serve_redis,
        },
    ).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()


@dataclass
class Accounts:
    world: World
    owner: Any  # account A's session client
    phone: Phone  # A's device: the one in the paths
    other_phone: Phone  # another device of A
    removed_token: str
    api_key: str
    revoked_key: str
    stranger: Any  # account B's session client
    secrets: set[str] = field(default_factory=set)  # A's ids B must never see
    webhook: str = ""  # A's webhook endpoint for the cells that only read or act on one


@pytest.fixture(scope="module")
def accounts(server: ServerProcess) -> Iterator[Accounts]:
    world = World(server)
    owner = world.signup(prefix="matrix-a")
    phone = world.pair(owner, "A1")
    other_phone = world.pair(owner, "A2")
    removed = world.pair(owner, "A3")
    expect(owner.delete(f"/api/devices/{removed.device_id}/"), 204)
    key = world.api_key(owner)
    revoked = world.api_key(owner, "old")
    expect(owner.delete(f"/api/api-keys/{revoked['id']}/"), 204)
    stranger = world.signup(prefix="matrix-b")
    world.pair(stranger, "B1")
    yield Accounts(
        world,
        owner,
        phone,
        other_phone,
        removed.token,
        key["api_key"],
        revoked["api_key"],
        stranger,
        {phone.device_id, other_phone.device_id, key["id"]},
    )
    world.close()


@dataclass
class Call:
    path: str
    body: dict[str, Any] | None = None
    session: Any = None  # a fresh session of A for this cell (logout)
    other: Any = None  # a fresh session of B for this cell (logout)
    files: dict[str, Any] | None = None  # a multipart body: these files, ``body`` its other fields


CAMPAIGN_FILE = {"file": ("list.csv", b"phone,name\n+15551234567,Ann\n", "text/csv")}
CAMPAIGN_FORM = {"name": "matrix", "template": "Hi {name}"}


def fresh_campaign(a: Accounts) -> str:
    made = expect(a.owner.post("/api/campaigns/", files=CAMPAIGN_FILE, data=CAMPAIGN_FORM), 201)
    a.secrets.add(made["id"])
    return str(made["id"])


def fresh_message(a: Accounts, *, claimed: bool = False) -> str:
    sent = expect(
        a.owner.post("/api/sms/send/", json={"to": TO, "message": "matrix", "device_id": a.phone.device_id}), 202
    )
    a.secrets.add(sent["id"])
    if claimed:
        assert sent["id"] in [t["id"] for t in a.phone.claim(limit=100)]
    return sent["id"]


def fresh_code(a: Accounts) -> str:
    return expect(a.owner.post("/api/devices/pairing-codes/"), 201)["code"]


def fresh_device(a: Accounts) -> str:
    return a.world.pair(a.owner, "spare", online=False).device_id


def fresh_key(a: Accounts) -> str:
    return a.world.api_key(a.owner, "spare")["id"]


HOOK_URL = "https://hooks.example.com/connecfy"  # never resolves here: deliveries fail and are logged


def webhook(a: Accounts) -> str:
    if not a.webhook:
        made = expect(a.owner.post("/api/webhooks/", json={"url": HOOK_URL}), 201)
        a.webhook = made["id"]
        a.secrets |= {made["id"], made["secret"]}
    return a.webhook


def webhook_room(a: Accounts) -> None:
    """Delete A's endpoints but the shared one: an account may have ten."""
    for hook in expect(a.owner.get("/api/webhooks/"), 200):
        if hook["id"] != a.webhook:
            expect(a.owner.delete(f"/api/webhooks/{hook['id']}/"), 204)


def fresh_webhook(a: Accounts) -> str:
    webhook_room(a)
    return expect(a.owner.post("/api/webhooks/", json={"url": HOOK_URL}), 201)["id"]


def logged_event(a: Accounts) -> str:
    """A message event in the shared endpoint's delivery log (a failed attempt)."""
    hook = webhook(a)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = expect(a.owner.get(f"/api/webhooks/{hook}/deliveries/"), 200)
        found = [d["event_id"] for d in log if d["message_id"]]
        if found:
            return found[0]
        fresh_message(a)
        time.sleep(0.3)
    raise AssertionError("no delivery attempt was logged")


def fresh_session(a: Accounts, user: Any = None) -> Any:
    client = a.world.api()
    email = (user or a.owner).account["email"]
    expect(client.post("/api/auth/login/", json={"email": email, "password": PASSWORD}), 200)
    return client


@dataclass
class Row:
    """An endpoint: who may call it, what success is, and what a call looks like."""

    auth: str  # public | device | session | operator | api_key
    ok: int
    make: Callable[[Accounts], Call]
    other_session: int | None = None  # for session endpoints: B's session on A's resource
    other_device: int | None = None  # for device endpoints: A2's token on A1's path


def fresh_number() -> str:
    """A number nobody sends to (TO is +15551234567)."""
    return f"+1555{9_000_000 + uuid.uuid4().int % 1_000_000}"


def fresh_suppressed(a: Accounts) -> str:
    """A number on A's suppression list, URL-encoded for a path."""
    number = fresh_number()
    expect(a.owner.post("/api/suppressions/", json={"phone": number}), 201)
    return number.replace("+", "%2B")


def item(a: Accounts) -> dict[str, Any]:
    return {"to": TO, "message": "matrix", "device_id": a.phone.device_id}


ROWS: dict[tuple[str, str], Row] = {
    ("POST", "/api/auth/signup/"): Row(
        "public",
        201,
        lambda a: Call(
            "/api/auth/signup/",
            {"email": f"m-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD, "account_type": "api_only"},
        ),
    ),
    ("POST", "/api/auth/login/"): Row(
        "public", 200, lambda a: Call("/api/auth/login/", {"email": a.owner.account["email"], "password": PASSWORD})
    ),
    ("POST", "/api/auth/logout/"): Row(
        "session",
        204,
        lambda a: Call("/api/auth/logout/", session=fresh_session(a), other=fresh_session(a, a.stranger)),
        other_session=204,
    ),
    ("POST", "/api/devices/register/"): Row(
        "public", 201, lambda a: Call("/api/devices/register/", {"code": fresh_code(a), "device_name": "matrix"})
    ),
    ("GET", "/api/devices/{device_id}/tasks/"): Row(
        "device", 200, lambda a: Call(f"/api/devices/{a.phone.device_id}/tasks/"), other_device=403
    ),
    ("POST", "/api/devices/{device_id}/heartbeat/"): Row(
        "device", 200, lambda a: Call(f"/api/devices/{a.phone.device_id}/heartbeat/", {"battery": 80}), other_device=403
    ),
    ("POST", "/api/devices/{device_id}/inbound/"): Row(
        "device",
        201,
        lambda a: Call(
            f"/api/devices/{a.phone.device_id}/inbound/",
            {"from": TO, "message": "hello", "received_at": "2026-12-05T12:00:00Z", "ref": uuid.uuid4().hex},
        ),
        other_device=403,
    ),
    ("GET", "/api/suppressions/"): Row("session", 200, lambda a: Call("/api/suppressions/"), other_session=200),
    ("GET", "/api/inbox/"): Row("session", 200, lambda a: Call("/api/inbox/"), other_session=200),
    ("POST", "/api/suppressions/"): Row(
        "session", 201, lambda a: Call("/api/suppressions/", {"phone": fresh_number()}), other_session=201
    ),
    ("DELETE", "/api/suppressions/{phone}/"): Row(
        "session", 204, lambda a: Call(f"/api/suppressions/{fresh_suppressed(a)}/"), other_session=404
    ),
    ("POST", "/api/sms/{message_id}/status/"): Row(
        "device",
        200,
        lambda a: Call(f"/api/sms/{fresh_message(a, claimed=True)}/status/", {"status": "sent"}),
        other_device=404,
    ),
    ("POST", "/api/devices/pairing-codes/"): Row(
        "session", 201, lambda a: Call("/api/devices/pairing-codes/"), other_session=201
    ),
    ("GET", "/api/devices/"): Row("session", 200, lambda a: Call("/api/devices/"), other_session=200),
    ("PATCH", "/api/devices/{device_id}/"): Row(
        "session", 200, lambda a: Call(f"/api/devices/{a.phone.device_id}/", {"device_name": "A1"}), other_session=404
    ),
    ("DELETE", "/api/devices/{device_id}/"): Row(
        "session", 204, lambda a: Call(f"/api/devices/{fresh_device(a)}/"), other_session=404
    ),
    ("POST", "/api/sms/send/"): Row("session", 202, lambda a: Call("/api/sms/send/", item(a)), other_session=404),
    ("GET", "/api/sms/"): Row("session", 200, lambda a: Call("/api/sms/"), other_session=200),
    ("GET", "/api/sms/{message_id}/"): Row(
        "session", 200, lambda a: Call(f"/api/sms/{fresh_message(a)}/"), other_session=404
    ),
    ("POST", "/api/sms/{message_id}/cancel/"): Row(
        "session", 200, lambda a: Call(f"/api/sms/{fresh_message(a)}/cancel/"), other_session=404
    ),
    ("POST", "/api/api-keys/"): Row("session", 201, lambda a: Call("/api/api-keys/", {"name": "k"}), other_session=201),
    ("GET", "/api/api-keys/"): Row("session", 200, lambda a: Call("/api/api-keys/"), other_session=200),
    ("DELETE", "/api/api-keys/{key_id}/"): Row(
        "session", 204, lambda a: Call(f"/api/api-keys/{fresh_key(a)}/"), other_session=404
    ),
    ("GET", "/api/stats/"): Row("session", 200, lambda a: Call("/api/stats/"), other_session=200),
    ("POST", "/api/webhooks/"): Row(
        "session", 201, lambda a: webhook_room(a) or Call("/api/webhooks/", {"url": HOOK_URL}), other_session=201
    ),
    ("GET", "/api/webhooks/"): Row("session", 200, lambda a: Call("/api/webhooks/"), other_session=200),
    ("GET", "/api/webhooks/{webhook_id}/"): Row(
        "session", 200, lambda a: Call(f"/api/webhooks/{webhook(a)}/"), other_session=404
    ),
    ("DELETE", "/api/webhooks/{webhook_id}/"): Row(
        "session", 204, lambda a: Call(f"/api/webhooks/{fresh_webhook(a)}/"), other_session=404
    ),
    ("POST", "/api/webhooks/{webhook_id}/rotate-secret/"): Row(
        "session", 200, lambda a: Call(f"/api/webhooks/{fresh_webhook(a)}/rotate-secret/"), other_session=404
    ),
    ("POST", "/api/webhooks/{webhook_id}/enable/"): Row(
        "session", 200, lambda a: Call(f"/api/webhooks/{webhook(a)}/enable/"), other_session=404
    ),
    ("POST", "/api/webhooks/{webhook_id}/test/"): Row(
        "session", 200, lambda a: Call(f"/api/webhooks/{webhook(a)}/test/"), other_session=404
    ),
    ("GET", "/api/webhooks/{webhook_id}/deliveries/"): Row(
        "session", 200, lambda a: Call(f"/api/webhooks/{webhook(a)}/deliveries/"), other_session=404
    ),
    ("POST", "/api/webhooks/{webhook_id}/deliveries/{event_id}/redeliver/"): Row(
        "session",
        202,
        lambda a: Call(f"/api/webhooks/{webhook(a)}/deliveries/{logged_event(a)}/redeliver/"),
        other_session=404,
    ),
    ("GET", "/api/campaigns/"): Row("session", 200, lambda a: Call("/api/campaigns/"), other_session=200),
    ("POST", "/api/campaigns/"): Row(
        "session", 201, lambda a: Call("/api/campaigns/", CAMPAIGN_FORM, files=CAMPAIGN_FILE), other_session=201
    ),
    ("GET", "/api/campaigns/{campaign_id}/"): Row(
        "session", 200, lambda a: Call(f"/api/campaigns/{fresh_campaign(a)}/"), other_session=404
    ),
    ("POST", "/api/campaigns/{campaign_id}/start/"): Row(
        "session", 202, lambda a: Call(f"/api/campaigns/{fresh_campaign(a)}/start/"), other_session=404
    ),
    ("POST", "/api/campaigns/{campaign_id}/cancel/"): Row(
        "session", 200, lambda a: Call(f"/api/campaigns/{fresh_campaign(a)}/cancel/"), other_session=404
    ),
    ("GET", "/api/account/settings/"): Row("session", 200, lambda a: Call("/api/account/settings/"), other_session=200),
    ("PATCH", "/api/account/settings/"): Row(
        "session", 200, lambda a: Call("/api/account/settings/", {"default_country": "US"}), other_session=200
    ),
    ("GET", "/api/account/limits/"): Row("session", 200, lambda a: Call("/api/account/limits/"), other_session=200),
    ("GET", "/api/account/limit-requests/"): Row(
        "session", 200, lambda a: Call("/api/account/limit-requests/"), other_session=200
    ),
    ("POST", "/api/account/limit-requests/"): Row(
        "session",
        201,
        lambda a: Call("/api/account/limit-requests/", {"reason": "matrix", "daily_quota": 1}),
        other_session=201,
    ),
    ("GET", "/api/operator/limit-requests/"): Row("operator", 200, lambda a: Call("/api/operator/limit-requests/")),
    ("POST", "/api/operator/limit-requests/{request_id}/approve/"): Row(
        "operator", 200, lambda a: Call("/api/operator/limit-requests/nosuchrequest/approve/")
    ),
    ("POST", "/api/operator/limit-requests/{request_id}/reject/"): Row(
        "operator", 200, lambda a: Call("/api/operator/limit-requests/nosuchrequest/reject/")
    ),
    ("PATCH", "/api/operator/accounts/{account_id}/limits/"): Row(
        "operator", 200, lambda a: Call(f"/api/operator/accounts/{a.owner.account['id']}/limits/", {"tasks_burst": 10})
    ),
    ("POST", "/api/external/send/"): Row("api_key", 202, lambda a: Call("/api/external/send/", item(a))),
    ("POST", "/api/external/send-batch/"): Row(
        "api_key", 202, lambda a: Call("/api/external/send-batch/", {"messages": [item(a), item(a)]})
    ),
    ("GET", "/healthz"): Row("public", 200, lambda a: Call("/healthz")),
    ("GET", "/readyz"): Row("public", 200, lambda a: Call("/readyz")),
    ("GET", "/metrics"): Row("public", 200, lambda a: Call("/metrics")),
}


def expected(row: Row, method: str, kind: str) -> int:
    """The status a cell must get, by the rules of DESIGN.md (Credentials)."""
    if row.auth == "public":
        # The key travels in the body, where these endpoints allow no such field.
        return 400 if kind in ("api_key", "revoked_key") and method in UNSAFE else row.ok
    if row.auth == "device":
        return {"device": row.ok, "other_device": row.other_device}.get(kind, 401)  # type: ignore[return-value]
    if row.auth == "api_key":
        return row.ok if kind == "api_key" else 401
    session_kinds = {"session", "session_no_csrf", "other_session"}
    if kind not in session_kinds:
        return 401
    if kind == "session_no_csrf" and method in UNSAFE:
        return 403
    if row.auth == "operator":
        return 403  # a session, but not the operator's
    if kind == "other_session":
        return row.other_session  # type: ignore[return-value]
    return row.ok


def send(a: Accounts, base_url: str, method: str, call: Call, kind: str) -> httpx.Response:
    headers: dict[str, str] = {}
    body = dict(call.body) if call.body is not None else None
    session = {
        "session": call.session or a.owner,
        "session_no_csrf": call.session or a.owner,
        "other_session": call.other or a.stranger,
    }.get(kind)
    if session is not None:
        cookies = session.client.cookies
        headers["Cookie"] = f"sessionid={cookies['sessionid']}; csrftoken={cookies['csrftoken']}"
        if kind != "session_no_csrf":
            headers["X-CSRFToken"] = cookies["csrftoken"]
    token = {"device": a.phone.token, "other_device": a.other_phone.token, "removed_device": a.removed_token}.get(kind)
    if token:
        headers["X-Device-Token"] = token
    key = {"api_key": a.api_key, "revoked_key": a.revoked_key}.get(kind)
    if key and method in UNSAFE:
        body = {**(body or {}), "api_key": key}
    with httpx.Client(base_url=base_url, timeout=15) as client:
        if call.files is not None:
            return client.request(method, call.path, headers=headers, files=call.files, data=body)
        return client.request(method, call.path, headers=headers, json=body)


def test_the_matrix_covers_every_served_endpoint(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/schema/openapi.json")
    assert response.status_code == 200, describe(response)
    schema = response.json()
    served = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    served.add(("GET", "/metrics"))
    assert served == set(ROWS), f"missing rows: {served - set(ROWS)}; stale rows: {set(ROWS) - served}"


@pytest.mark.parametrize("endpoint", list(ROWS), ids=[f"{m} {p}" for m, p in ROWS])
def test_every_credential_on_every_endpoint(
    server: ServerProcess, accounts: Accounts, endpoint: tuple[str, str]
) -> None:
    method, _ = endpoint
    row = ROWS[endpoint]
    wrong: list[str] = []
    for kind in KINDS:
        call = row.make(accounts)
        response = send(accounts, server.base_url, method, call, kind)
        want = expected(row, method, kind)
        if response.status_code != want:
            wrong.append(f"{kind}: want {want}, got {describe(response)}")
            continue
        if response.status_code >= 400:
            body = response.json()
            assert body["status_code"] == want and body["code"] and body["detail"], describe(response)
        if kind == "other_session" and response.status_code < 300:
            leaked = [s for s in accounts.secrets if s in response.text]
            assert not leaked, f"another account saw {leaked}: {describe(response)}"
        if kind == "api_key" and row.auth == "api_key":
            assert set(response.json()) <= {"id", "status", "count", "messages"}, "a key reads nothing back"
    assert not wrong, "\n".join(wrong)


def test_the_operator_passes_the_operator_guard(server: ServerProcess, accounts: Accounts) -> None:
    operator = accounts.world.api()
    expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    for (method, _), row in ROWS.items():
        if row.auth != "operator":
            continue
        call = row.make(accounts)
        response = operator.request(method, call.path, json=call.body)
        # The made-up request ids are 404 for the operator; the rest succeed.
        assert response.status_code == (404 if "nosuchrequest" in call.path else row.ok), describe(response)
