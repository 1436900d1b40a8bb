"""The Litestar app in-process (Litestar's test client, no HTTP server) on each real
Redis: the phone's and the sender's round trip, credentials checked before bodies (the
API key's body too), the JSON error shape, and the served OpenAPI document. Fast enough to run on every change; tests/http and
tests/e2e do the same and more against a real ``connecfy serve``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from broker import Settings
from connecfy.redis_server import RedisServer
from tests.support.backends import REAL_REDIS, ROOMY_LIMITS

TO = "+15551234567"


@pytest.fixture(params=sorted(REAL_REDIS))
def client(request: pytest.FixtureRequest, real_servers: dict[str, RedisServer], tmp_path: Path) -> Iterator[Any]:
    server = real_servers[f"redis-{request.param}"]
    settings = Settings(redis_url=server.url, data_dir=str(tmp_path), background_in_workers=False, **ROOMY_LIMITS)
    with TestClient(app=create_app(settings)) as test_client:
        assert test_client.app.state.broker is not None  # the lifespan ran
        yield test_client


def signed_up(client: Any, email: str) -> dict[str, str]:
    """Sign up; the CSRF header the session's unsafe requests must carry."""
    reply = client.post(
        "/api/auth/signup/",
        json={"email": email, "password": "correct horse battery", "account_type": "self_managed"},
    )
    assert reply.status_code == 201, reply.text
    return {"X-CSRFToken": client.cookies["csrftoken"]}


def test_a_message_goes_from_the_dashboard_to_a_phone_and_back(client: Any) -> None:
    csrf = signed_up(client, "owner@example.com")
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    phone = client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"}).json()
    device, token = phone["device_id"], {"X-Device-Token": phone["device_token"]}
    assert client.post(f"/api/devices/{device}/heartbeat/", json={"battery": 80}, headers=token).status_code == 200

    sent = client.post("/api/sms/send/", json={"to": TO, "message": "hello", "device_id": device}, headers=csrf)
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]
    tasks = client.get(f"/api/devices/{device}/tasks/", headers=token)
    assert tasks.status_code == 200 and [t["id"] for t in tasks.json()] == [message_id]
    assert tasks.json()[0]["message"] == "hello"
    reported = client.post(f"/api/sms/{message_id}/status/", json={"status": "delivered"}, headers=token)
    assert reported.json() == {"id": message_id, "status": "delivered"}

    stats = client.get("/api/stats/").json()
    assert (stats["total_messages"], stats["sent"], stats["delivered"]) == (1, 1, 1)
    timeline = [step["status"] for step in client.get(f"/api/sms/{message_id}/").json()["timeline"]]
    assert timeline == ["queued", "claimed", "delivered"]


def test_a_bad_credential_is_401_whatever_the_body(client: Any) -> None:
    # (The API key travels in the body: see the test after this one.)
    for path, headers in (
        ("/api/devices/someone/heartbeat/", {"X-Device-Token": "not-a-token"}),
        ("/api/sms/send/", {}),
    ):
        reply = client.post(path, content=b"{not json", headers={"Content-Type": "application/json", **headers})
        assert reply.status_code == 401, (path, reply.text)
        assert reply.json()["code"] == "not_authenticated"


def test_errors_are_json_with_a_code_and_change_nothing(client: Any) -> None:
    csrf = signed_up(client, "careful@example.com")
    bad = client.post("/api/sms/send/", json={"to": "555", "message": "x"}, headers=csrf)
    assert bad.status_code == 400
    assert set(bad.json()) >= {"status_code", "code", "detail"} and bad.json()["status_code"] == 400
    assert client.get("/api/stats/").json()["total_messages"] == 0
    no_csrf = client.post("/api/sms/send/", json={"to": TO, "message": "x"})
    assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "forbidden"


def test_the_served_document_declares_every_route_with_its_errors(client: Any) -> None:
    document = client.get("/schema/openapi.json").json()
    claim = document["paths"]["/api/devices/{device_id}/tasks/"]["get"]
    assert {"401", "403", "429", "503"} <= set(claim["responses"])
    assert claim["security"] and set(document["components"]["securitySchemes"]) >= {"deviceToken", "session"}
    limit = next(p for p in claim["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100


# The API key's body: JSON or not --------------------------------------------------------------

JSON_TYPE = {"Content-Type": "application/json"}


def test_on_the_api_key_endpoints_a_body_that_is_not_json_is_400_and_json_without_a_key_401(client: Any) -> None:
    """The key travels in the body: a body that does not parse hides it (400
    ``invalid_json``, 415 when it is not even sent as JSON), while JSON that holds no
    key, or no body at all, is a missing credential (401)."""
    csrf = signed_up(client, "keyed@example.com")
    key = client.post("/api/api-keys/", json={"name": "k"}, headers=csrf).json()["api_key"]
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"})
    bodies = {
        "/api/external/send/": {"api_key": key, "to": TO, "message": "hi"},
        "/api/external/send-batch/": {"api_key": key, "messages": [{"to": TO, "message": "hi"}]},
    }
    for path, body in bodies.items():
        whole = json.dumps(body).encode()
        for content, headers, status, code in (
            (whole[:-1], JSON_TYPE, 400, "invalid_json"),  # truncated, the real key inside
            (whole + b"}", JSON_TYPE, 400, "invalid_json"),
            (json.dumps([body]).encode() + b"]", JSON_TYPE, 400, "invalid_json"),  # not an object, nor JSON
            (f"api_key={key}&to=%2B15551234567&message=hi".encode(), JSON_TYPE, 400, "invalid_json"),
            (b"\xff" + whole, JSON_TYPE, 400, "invalid_json"),  # not UTF-8
            (whole[:-1], {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
            (f"api_key={key}".encode(), {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
            (json.dumps([body]).encode(), JSON_TYPE, 401, "not_authenticated"),  # JSON, not an object
            (json.dumps(key).encode(), JSON_TYPE, 401, "not_authenticated"),
            (b"null", JSON_TYPE, 401, "not_authenticated"),
            (b"42", JSON_TYPE, 401, "not_authenticated"),
            (b"", JSON_TYPE, 401, "not_authenticated"),  # no body
            (b" \r\n", JSON_TYPE, 401, "not_authenticated"),
            (json.dumps({**body, "api_key": 42}).encode(), JSON_TYPE, 401, "not_authenticated"),
            (json.dumps({**body, "api_key": key + "x"}).encode(), JSON_TYPE, 401, "not_authenticated"),
            (whole, {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),  # a good key, not sent as JSON
        ):
            reply = client.post(path, content=content, headers=headers)
            assert reply.status_code == status, (path, content[:30], reply.text)
            assert reply.json()["status_code"] == status and reply.json()["code"] == (code or reply.json()["code"])
        missing = client.post(path)  # no body, no Content-Type
        assert (missing.status_code, missing.json()["code"]) == (401, "not_authenticated"), missing.text
        assert client.post(path, content=whole, headers=JSON_TYPE).status_code == 202
    assert client.get("/api/stats/").json()["total_messages"] == 2


def test_a_body_that_does_not_parse_is_400_invalid_json_on_every_route(client: Any) -> None:
    csrf = signed_up(client, "parsing@example.com")
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    phone = client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"}).json()
    token = {"X-Device-Token": phone["device_token"]}
    for path, headers in (
        ("/api/sms/send/", csrf),
        ("/api/api-keys/", csrf),
        (f"/api/devices/{phone['device_id']}/heartbeat/", token),
        ("/api/auth/login/", {}),
        ("/api/auth/logout/", csrf),  # a route that takes no body takes none but JSON
    ):
        for content in (b'{"to": ', b"hello", b"{}}", b'{"to": 5}}', b"[1]]"):
            reply = client.post(path, content=content, headers={**JSON_TYPE, **headers})
            assert (reply.status_code, reply.json()["code"]) == (400, "invalid_json"), (path, content, reply.text)
    assert client.get("/api/stats/").status_code == 200  # the refused logout ended nothing


# OPTIONS -----------------------------------------------------------------------------------------


def test_options_lists_every_method_of_the_path_and_needs_no_credential(client: Any) -> None:
    document = client.get("/schema/openapi.json").json()
    for path, item in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "abc", path)
        reply = client.options(concrete)  # no cookie, no token
        assert reply.status_code == 204, (path, reply.text)
        allowed = {method.strip() for method in reply.headers["Allow"].split(",")}
        documented = {method.upper() for method in item if method in {"get", "post", "patch", "put", "delete"}}
        assert allowed == documented | {"OPTIONS"}, (path, reply.headers["Allow"])
