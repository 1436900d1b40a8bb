"""The Litestar app in-process (Litestar's test client, no HTTP server) on each real
Redis: the phone's and the sender's round trip, credentials checked before bodies, the
JSON error shape, and the served OpenAPI document. Fast enough to run on every change;
tests/http and tests/e2e do the same and more against a real ``connecfy serve``."""

from __future__ import annotations

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
    for path, headers in (
        ("/api/devices/someone/heartbeat/", {"X-Device-Token": "not-a-token"}),
        ("/api/external/send/", {}),
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
