"""The phone's hot path (``api/hot_path.py``) answers exactly as Litestar's handlers do:
every variant of a poll and a heartbeat, plain or not, well-formed or not, sent to the
app and to the same app without hot paths (same Redis, same phone), gets the same status,
headers and body; and a plain poll or heartbeat does take the hot path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from litestar.connection import Request
from litestar.testing import TestClient

from api.app import create_app
from broker import Settings
from connecfy.redis_server import RedisServer
from tests.support import phone_variants as variants
from tests.support.backends import NEWEST_REAL, ROOMY_LIMITS
from tests.support.phone_variants import HEARTBEAT, JSON_TYPE, QUERIES, Headers, bodies

DEFAULT_LIMIT = 3  # CONNECFY_CLAIM_DEFAULT_LIMIT: a poll without ?limit= claims this many


@pytest.fixture
def clients(real_servers: dict[str, RedisServer], tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The app, and the app without hot paths, on one emptied Redis."""
    server = real_servers[NEWEST_REAL]
    with redis.Redis.from_url(server.url) as plain:
        plain.flushall()
    settings = Settings(
        redis_url=server.url,
        data_dir=str(tmp_path),
        background_in_workers=False,
        claim_default_limit=DEFAULT_LIMIT,
        **ROOMY_LIMITS,
    )
    with (
        TestClient(app=create_app(settings)) as hot,
        TestClient(app=create_app(msgspec.structs.replace(settings, hot_paths=False))) as litestar,
    ):
        yield hot, litestar


@pytest.fixture
def phones(clients: tuple[Any, Any]) -> dict[str, str]:
    """Two paired phones of one account: their ids and tokens."""
    hot, _ = clients
    reply = hot.post(
        "/api/auth/signup/",
        json={"email": "hot@example.com", "password": "correct horse battery", "account_type": "self_managed"},
    )
    assert reply.status_code == 201, reply.text
    csrf = {"X-CSRFToken": hot.cookies["csrftoken"]}
    found = {}
    for name in ("a", "b"):
        code = hot.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
        phone = hot.post("/api/devices/register/", json={"code": code, "device_name": name}).json()
        found[name], found[f"{name}_token"] = phone["device_id"], phone["device_token"]
    return found


def answer(reply: Any) -> tuple[int, list[tuple[str, str]], Any]:
    """Status, headers (in order; counters and clocks as what they are) and body."""
    headers = []
    for name, value in reply.headers.multi_items():
        if name in ("ratelimit-remaining", "content-length") and value.isdigit():
            value = "<number>"
        headers.append((name, value))
    try:
        body = reply.json()
    except ValueError:
        return reply.status_code, headers, reply.content
    if isinstance(body, dict) and "last_seen" in body:
        body["last_seen"] = "<moment>"
    return reply.status_code, headers, body


def same_answers(clients: tuple[Any, Any], method: str, path: str, **request: Any) -> tuple[int, Any]:
    hot, litestar = clients
    replies = [answer(client.request(method, path, **request)) for client in (hot, litestar)]
    assert replies[0] == replies[1], (method, path, request)
    return replies[0][0], replies[0][2]


def credentials(phones: dict[str, str]) -> list[Headers]:
    return variants.credentials(phones["a_token"], phones["b_token"])


def test_a_poll_is_answered_alike_with_and_without_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str]
) -> None:
    path = f"/api/devices/{phones['a']}/tasks/"
    seen = set()
    for query in QUERIES:
        status, _ = same_answers(clients, "GET", f"{path}?{query}" if query else path, headers=credentials(phones)[0])
        seen.add(status)
    for headers in credentials(phones):
        status, _ = same_answers(clients, "GET", path, headers=headers)
        seen.add(status)
        same_answers(clients, "GET", path.rstrip("/") + "?limit=2", headers=headers)
    assert seen == {200, 400, 401, 403}
    # A long poll that finds nothing: [] after its wait, either way.
    assert same_answers(clients, "GET", f"{path}?wait=1", headers=credentials(phones)[0]) == (200, [])


def test_a_poll_hands_over_the_same_tasks_either_way(clients: tuple[Any, Any], phones: dict[str, str]) -> None:
    hot, litestar = clients
    csrf = {"X-CSRFToken": hot.cookies["csrftoken"]}
    token = {"X-Device-Token": phones["a_token"]}
    handed = []
    for client in (hot, litestar, hot):
        sent = hot.post(
            "/api/sms/send/", json={"to": "+15551234567", "message": "hi", "device_id": phones["a"]}, headers=csrf
        )
        assert sent.status_code == 202, sent.text
        reply = client.get(f"/api/devices/{phones['a']}/tasks/?limit=3", headers=token)
        assert reply.status_code == 200
        handed.append((reply.json(), answer(reply)[1]))
    assert [tasks for tasks, _ in handed] == [
        [{"id": t[0]["id"], "to": "+15551234567", "message": "hi"}] for t, _ in handed
    ]
    assert handed[0][1] == handed[1][1] == handed[2][1]


def test_a_poll_without_a_limit_claims_the_servers_default_either_way(
    clients: tuple[Any, Any], phones: dict[str, str]
) -> None:
    hot, _ = clients
    csrf = {"X-CSRFToken": hot.cookies["csrftoken"]}
    token = {"X-Device-Token": phones["a_token"]}
    for client in clients:
        for _ in range(DEFAULT_LIMIT + 2):
            body = {"to": "+15551234567", "message": "hi", "device_id": phones["a"]}
            assert hot.post("/api/sms/send/", json=body, headers=csrf).status_code == 202
        assert len(client.get(f"/api/devices/{phones['a']}/tasks/", headers=token).json()) == DEFAULT_LIMIT
        assert len(client.get(f"/api/devices/{phones['a']}/tasks/?limit=10", headers=token).json()) == 2


def test_a_heartbeat_is_answered_alike_with_and_without_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str]
) -> None:
    path = f"/api/devices/{phones['a']}/heartbeat/"
    seen = set()
    for body, headers in bodies():
        for credential in credentials(phones)[:1] + credentials(phones)[-2:]:
            status, _ = same_answers(clients, "POST", path, content=body, headers=credential + headers)
            seen.add(status)
    for credential in credentials(phones):
        same_answers(clients, "POST", path, json=HEARTBEAT, headers=credential)
        same_answers(clients, "POST", path.rstrip("/"), headers=credential)
    # Sent in chunks (no Content-Length): Litestar's handler reads it.
    chunks = [json.dumps(HEARTBEAT).encode()[:5], json.dumps(HEARTBEAT).encode()[5:]]
    status, out = same_answers(
        clients, "POST", path, content=iter(chunks), headers=credentials(phones)[0] + [JSON_TYPE]
    )
    assert (status, out["status"]) == (200, "ok")
    assert seen == {200, 400, 401, 403, 413, 415}


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``Request`` made from now on (Litestar makes one for every request it
    handles, and for every error it answers)."""
    made: list[Any] = []
    original = Request.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Request, "__init__", counted)
    return made


def test_a_plain_poll_and_heartbeat_take_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str], made: list[Any]
) -> None:
    """No ``Request`` is made for them (Litestar makes one for every request it handles,
    and for every error it answers), unless the hot path is turned off."""
    hot, litestar = clients
    token = {"X-Device-Token": phones["a_token"]}
    assert hot.get(f"/api/devices/{phones['a']}/tasks/?limit=10&wait=0", headers=token).json() == []
    assert hot.post(f"/api/devices/{phones['a']}/heartbeat/", json=HEARTBEAT, headers=token).status_code == 200
    assert hot.post(f"/api/devices/{phones['a']}/heartbeat/", headers=token).status_code == 200
    assert made == []
    assert hot.get(f"/api/devices/{phones['a']}/tasks/?limit=010", headers=token).status_code == 400
    assert made  # handed to Litestar
    made.clear()
    assert litestar.get(f"/api/devices/{phones['a']}/tasks/?limit=10&wait=0", headers=token).json() == []
    assert made  # CONNECFY_HOT_PATHS=false: Litestar's handler


@pytest.fixture
def api_key(clients: tuple[Any, Any], phones: dict[str, str]) -> str:
    hot, _ = clients
    reply = hot.post("/api/api-keys/", json={"name": "crm"}, headers={"X-CSRFToken": hot.cookies["csrftoken"]})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["api_key"])


def sent_answer(reply: Any) -> tuple[int, list[tuple[str, str]], Any]:
    """:func:`answer`, with a new message's id as what it is."""
    status, headers, body = answer(reply)
    if isinstance(body, dict) and isinstance(body.get("id"), str) and body.get("status") in ("queued", "scheduled"):
        body["id"] = "<id>"
    return status, headers, body


def test_an_external_send_is_answered_alike_with_and_without_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str], api_key: str
) -> None:
    hot, litestar = clients
    path = "/api/external/send/"
    plain = {"api_key": api_key, "to": "+15551234567", "message": "hello", "device_id": phones["a"]}
    json_type = {"content-type": "application/json"}
    variants_sent: list[tuple[str, bytes | Any, dict[str, str]]] = [
        (path, json.dumps(plain).encode(), json_type),
        (path, json.dumps({**plain, "priority": "high", "valid_for": 600}).encode(), json_type),
        (path, json.dumps({**plain, "send_at": "2099-01-01T00:00:00Z"}).encode(), json_type),
        (path, json.dumps({k: v for k, v in plain.items() if k != "device_id"}).encode(), json_type),
        (path, json.dumps({**plain, "api_key": "not-a-key"}).encode(), json_type),
        (path, json.dumps({**plain, "api_key": ""}).encode(), json_type),
        (path, json.dumps({k: v for k, v in plain.items() if k != "api_key"}).encode(), json_type),
        (path, json.dumps({**plain, "to": 15551234567}).encode(), json_type),
        (path, json.dumps({**plain, "to": "12"}).encode(), json_type),
        (path, json.dumps({**plain, "message": ""}).encode(), json_type),
        (path, json.dumps({**plain, "device_id": "nosuchdevice"}).encode(), json_type),
        (path, json.dumps({**plain, "valid_for": 600.0}).encode(), json_type),
        (path, json.dumps({**plain, "colour": "red"}).encode(), json_type),
        (path, json.dumps({**plain, "priority": "urgent"}).encode(), json_type),
        (path, b'{"api_key": "' + api_key.encode() + b'", "to": ', json_type),
        (path, b"", json_type),
        (path, json.dumps(plain).encode(), {"content-type": "text/plain"}),
        (path, json.dumps(plain).encode(), {"content-type": "application/json; charset=utf-8"}),
        (path, json.dumps(plain).encode(), {}),
        (path + "?x=1", json.dumps(plain).encode(), json_type),
        (path, json.dumps(plain).encode(), {**json_type, "Idempotency-Key": ""}),
        (path, json.dumps(plain).encode(), {**json_type, "Idempotency-Key": "k" * 300}),
        (path.rstrip("/"), json.dumps(plain).encode(), json_type),
        (path, b"x" * (70 * 1024), json_type),
    ]
    seen = set()
    for target, content, headers in variants_sent:
        replies = [sent_answer(client.post(target, content=content, headers=headers)) for client in (hot, litestar)]
        assert replies[0] == replies[1], (target, content[:200], headers)
        seen.add(replies[0][0])
    # Sent in chunks (no Content-Length): Litestar's handler reads it.
    chunks = [json.dumps(plain).encode()[:7], json.dumps(plain).encode()[7:]]
    replies = [sent_answer(c.post(path, content=iter(chunks), headers=json_type)) for c in (hot, litestar)]
    assert replies[0] == replies[1] and replies[0][0] == 202
    # An Idempotency-Key, first and repeated (each app its own key: they share one Redis).
    for attempt in range(2):
        replies = [
            sent_answer(client.post(path, json=plain, headers={"Idempotency-Key": f"order-{name}"}))
            for name, client in (("hot", hot), ("litestar", litestar))
        ]
        assert replies[0] == replies[1]
        assert ("idempotent-replayed", "true") in replies[0][1] if attempt else replies[0][0] == 202
    assert seen == {202, 400, 401, 404, 413, 415}


def test_a_plain_external_send_takes_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str], api_key: str, made: list[Any]
) -> None:
    hot, litestar = clients
    body = {"api_key": api_key, "to": "+15551234567", "message": "hello", "device_id": phones["a"]}
    assert hot.post("/api/external/send/", json=body).status_code == 202
    assert hot.post("/api/external/send/", json=body, headers={"Idempotency-Key": "a1"}).status_code == 202
    assert made == []
    assert hot.post("/api/external/send/", json={**body, "api_key": "Wrong"}).status_code == 401
    made.clear()  # Litestar makes a Request to answer an error
    assert litestar.post("/api/external/send/", json=body).status_code == 202
    assert made  # CONNECFY_HOT_PATHS=false: Litestar's handler
