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


@pytest.fixture
def roomy_phone(clients: tuple[Any, Any], phones: dict[str, str]) -> None:
    """Phone a's send budget out of the way of the many messages the report tests claim."""
    hot, _ = clients
    budget = {"segments_per_minute": 10_000, "segments_per_day": 100_000}
    reply = hot.patch(f"/api/devices/{phones['a']}/", json=budget, headers={"X-CSRFToken": hot.cookies["csrftoken"]})
    assert reply.status_code == 200, reply.text


def claimed_pair(clients: tuple[Any, Any], phones: dict[str, str]) -> list[str]:
    """Two new messages claimed by phone a: one to report on through each app."""
    hot, _ = clients
    csrf = {"X-CSRFToken": hot.cookies["csrftoken"]}
    for _ in range(2):
        body = {"to": "+15551234567", "message": "hi", "device_id": phones["a"]}
        assert hot.post("/api/sms/send/", json=body, headers=csrf).status_code == 202
    tasks = hot.get(f"/api/devices/{phones['a']}/tasks/?limit=2", headers={"X-Device-Token": phones["a_token"]})
    ids = [task["id"] for task in tasks.json()]
    assert len(ids) == 2, tasks.text
    return ids


def reported(clients: tuple[Any, Any], ids: list[str], suffix: str = "/", **request: Any) -> list[Any]:
    """The same report sent through each app, each on its own message: the answers, with
    each message's id as what it is."""
    answers = []
    for client, message_id in zip(clients, ids, strict=True):
        status, headers, body = answer(client.post(f"/api/sms/{message_id}/status{suffix}", **request))
        if isinstance(body, dict):
            body = {k: v.replace(message_id, "<id>") if isinstance(v, str) else v for k, v in body.items()}
        answers.append((status, headers, body))
    return answers


@pytest.mark.usefixtures("roomy_phone")
def test_a_status_report_is_answered_alike_with_and_without_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str]
) -> None:
    json_type = [JSON_TYPE]
    sent = json.dumps({"status": "sent"}).encode()
    reports: list[tuple[bytes | list[bytes], Headers]] = [
        (sent, json_type),
        (json.dumps({"status": "delivered"}).encode(), json_type),
        (json.dumps({"status": "failed", "error": "RESULT_ERROR_NO_SERVICE"}).encode(), json_type),
        (json.dumps({"status": "failed", "error": "radio off", "retryable": True}).encode(), json_type),
        (json.dumps({"status": "sent", "retryable": True}).encode(), json_type),
        (json.dumps({"status": "sent", "sim_slot": 2, "segments": 1}).encode(), json_type),
        (json.dumps({"status": "sent", "sim_slot": "2"}).encode(), json_type),
        (json.dumps({"status": "sent", "sim_slot": 2.0}).encode(), json_type),
        (json.dumps({"status": "sent", "sim_slot": 9}).encode(), json_type),
        (json.dumps({"status": "sent", "segments": 0}).encode(), json_type),
        (json.dumps({"status": "failed", "retryable": "yes"}).encode(), json_type),
        (json.dumps({"status": "failed", "error": "x" * 10_000}).encode(), json_type),
        (json.dumps({"status": "queued"}).encode(), json_type),
        (json.dumps({"status": 1}).encode(), json_type),
        (json.dumps({"error": "no status"}).encode(), json_type),
        (json.dumps({"status": "sent", "colour": "red"}).encode(), json_type),
        (b"null", json_type),
        (b"[]", json_type),
        (b"{not json", json_type),
        (b"\xff{}", json_type),
        (b"", json_type),
        (b"[" * 5000 + b"]" * 5000, json_type),
        (sent, [("Content-Type", "text/plain")]),
        (sent, [("Content-Type", "application/json; charset=utf-8")]),
        (sent, []),
        (sent, [JSON_TYPE, ("Content-Type", "text/plain")]),
        (sent, [JSON_TYPE, ("Content-Length", str(len(sent)))]),
        (b" " * 70_000 + sent, json_type),
        ([sent[:4], sent[4:]], json_type),  # in chunks, no Content-Length: Litestar reads it
    ]
    seen = set()
    token = credentials(phones)[0]
    for content, headers in reports:
        ids = claimed_pair(clients, phones)
        replies = reported(clients, ids, content=content, headers=token + headers)
        assert replies[0] == replies[1], (content, headers)
        seen.add(replies[0][0])
    for credential in credentials(phones):
        replies = reported(clients, claimed_pair(clients, phones), json={"status": "sent"}, headers=credential)
        assert replies[0] == replies[1], credential
        seen.add(replies[0][0])
    for suffix in ("", "/?x=1"):
        replies = reported(clients, claimed_pair(clients, phones), suffix, json={"status": "sent"}, headers=token)
        assert replies[0] == replies[1], suffix
    for message_id in ("01J00000000000000000000000", "x" * 65, "a%20b"):
        replies = reported(clients, [message_id, message_id], json={"status": "sent"}, headers=token)
        assert replies[0] == replies[1], message_id
        seen.add(replies[0][0])
    assert seen == {200, 400, 401, 404, 413, 415}, seen


def test_a_removed_phones_report_is_401_either_way(clients: tuple[Any, Any], phones: dict[str, str]) -> None:
    """A token each app still remembers, of a phone removed since: a message it does not
    hold is answered with the unknown token's 401 (not the message's 404), through both."""
    hot, _ = clients
    csrf = {"X-CSRFToken": hot.cookies["csrftoken"]}
    token = {"X-Device-Token": phones["b_token"]}
    ids = []
    for _ in range(2):
        body = {"to": "+15551234567", "message": "hi", "device_id": phones["b"]}
        assert hot.post("/api/sms/send/", json=body, headers=csrf).status_code == 202
    for client in clients:  # each app remembers the token
        ids += [task["id"] for task in client.get(f"/api/devices/{phones['b']}/tasks/?limit=1", headers=token).json()]
    assert len(ids) == 2
    assert hot.delete(f"/api/devices/{phones['b']}/", headers=csrf).status_code == 204
    replies = reported(clients, ids, json={"status": "sent"}, headers=list(token.items()))
    assert replies[0] == replies[1]  # the messages it held went back with the phone: 409
    unknown = ["01J00000000000000000000000"] * 2
    replies = reported(clients, unknown, json={"status": "sent"}, headers=list(token.items()))
    assert replies[0] == replies[1]
    assert replies[0][0] == 401 and replies[0][2]["detail"] == "unknown device token", replies[0]


def test_a_plain_status_report_takes_the_hot_path(
    clients: tuple[Any, Any], phones: dict[str, str], made: list[Any]
) -> None:
    hot, litestar = clients
    token = {"X-Device-Token": phones["a_token"]}
    first, second = claimed_pair(clients, phones)
    made.clear()
    assert hot.post(f"/api/sms/{first}/status/", json={"status": "sent"}, headers=token).json() == {
        "id": first,
        "status": "sent",
    }
    assert hot.post(f"/api/sms/{first}/status/", json={"status": "delivered"}, headers=token).status_code == 200
    assert made == []
    assert hot.post(f"/api/sms/{first}/status/?x=1", json={"status": "delivered"}, headers=token).status_code == 200
    assert made  # handed to Litestar
    made.clear()
    assert litestar.post(f"/api/sms/{second}/status/", json={"status": "sent"}, headers=token).status_code == 200
    assert made  # CONNECFY_HOT_PATHS=false: Litestar's handler
