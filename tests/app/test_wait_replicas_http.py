"""``CONNECFY_REDIS_WAIT_REPLICAS`` as the API answers it, in-process on each real Redis
with a replica of its own: a send that no replica acknowledged in time is 503
``store_not_replicated`` with ``Retry-After``, like the other refusals, and its retry
with the same ``Idempotency-Key`` once the replica is back gets the same id, replayed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from broker import Settings
from tests.support.backends import REAL_REDIS, ROOMY_LIMITS
from tests.support.replicas import PrimaryWithReplica, stopped

TO = "+15551234567"
VERSIONS = sorted(REAL_REDIS)


def settings_on(servers: PrimaryWithReplica, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=servers.primary.url,
        redis_wait_replicas=1,
        redis_timeout_ms=500,
        data_dir=str(tmp_path),
        background_in_workers=False,
        **ROOMY_LIMITS,  # type: ignore[arg-type]
    )


def signed_up_with_a_phone(client: TestClient[Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """A self-managed account (logged in on ``client``) with one phone: the CSRF header
    and the registered phone."""
    reply = client.post(
        "/api/auth/signup/",
        json={"email": "owner@example.com", "password": "correct horse battery", "account_type": "self_managed"},
    )
    assert reply.status_code == 201, reply.text
    csrf = {"X-CSRFToken": client.cookies["csrftoken"]}
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    phone = client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"})
    assert phone.status_code == 201, phone.text
    return csrf, phone.json()


@pytest.fixture(params=VERSIONS, ids=[f"redis-{v}" for v in VERSIONS])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrimaryWithReplica]:
    with PrimaryWithReplica(REAL_REDIS[request.param], tmp_path / "redis") as started:
        yield started


def test_a_send_no_replica_holds_in_time_is_503_store_not_replicated_and_its_retry_the_same_id(
    servers: PrimaryWithReplica, tmp_path: Path
) -> None:
    assert servers.replica is not None
    with TestClient(app=create_app(settings_on(servers, tmp_path))) as client:
        csrf, phone = signed_up_with_a_phone(client)
        send: dict[str, Any] = {
            "json": {"to": TO, "message": "hello", "device_id": phone["device_id"]},
            "headers": {**csrf, "Idempotency-Key": "first-try"},
        }

        with stopped(servers.replica):
            started = time.monotonic()
            refused = client.post("/api/sms/send/", **send)
            took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        body = refused.json()
        assert body["code"] == "store_not_replicated" and body["status_code"] == 503, body
        assert "Redis" not in body["detail"] and "WAIT" not in body["detail"]
        assert took < 0.6  # the command's time limit (0.5 s) and the request's own work

        sent = client.post("/api/sms/send/", **send)
        assert sent.status_code == 202, sent.text
        assert sent.headers.get("Idempotent-Replayed") == "true"
        # The message queued by the refused send is the one answered now: one, not two.
        assert client.get("/api/stats/").json()["total_messages"] == 1
        assert client.get(f"/api/sms/{sent.json()['id']}/").json()["status"] == "queued"


def test_a_received_sms_no_replica_holds_in_time_is_503_and_its_retry_is_stored_once(
    servers: PrimaryWithReplica, tmp_path: Path
) -> None:
    assert servers.replica is not None
    with TestClient(app=create_app(settings_on(servers, tmp_path))) as client:
        _, phone = signed_up_with_a_phone(client)
        report: dict[str, Any] = {
            "json": {"from": TO, "message": "Is it open today?", "received_at": "2026-12-05T12:00:00Z", "ref": "r1"},
            "headers": {"X-Device-Token": phone["device_token"]},
        }
        path = f"/api/devices/{phone['device_id']}/inbound/"
        with stopped(servers.replica):
            refused = client.post(path, **report)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "store_not_replicated"
        assert client.get("/api/sms/?direction=inbound").json()["items"] == []

        stored = client.post(path, **report)
        assert stored.status_code == 201, stored.text
        again = client.post(path, **report)
        assert again.status_code == 200 and again.json()["id"] == stored.json()["id"]
        assert [m["id"] for m in client.get("/api/sms/?direction=inbound").json()["items"]] == [stored.json()["id"]]
