"""An API key each worker of ``connecfy serve --workers 2`` has admitted and remembers
(``ApiKeys.admit``: a send then costs one Redis round trip) stops working at once when it
is revoked, in every worker, and nothing more is queued with it; a key's last use is still
shown."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.e2e_server import ServerProcess

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("admission"), workers=2).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def test_a_revoked_key_is_refused_at_once_by_every_worker_that_remembered_it(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as dashboard:
        signup = {"email": "sender@example.com", "password": PASSWORD, "account_type": "self_managed"}
        assert dashboard.post("/api/auth/signup/", json=signup).status_code == 201
        csrf = {"X-CSRFToken": dashboard.cookies["csrftoken"]}
        made = dashboard.post("/api/api-keys/", json={"name": "crm"}, headers=csrf).json()
        body = {"api_key": made["api_key"], "to": "+15551234567", "message": "hello"}

        def send() -> int:
            # A connection of its own each time: the two workers take turns accepting.
            with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
                return client.post("/api/external/send/", json=body).status_code

        assert [send() for _ in range(30)] == [202] * 30
        [listed] = dashboard.get("/api/api-keys/").json()
        assert listed["last_used_at"] is not None
        assert dashboard.delete(f"/api/api-keys/{made['id']}/", headers=csrf).status_code == 204
        assert [send() for _ in range(30)] == [401] * 30
        assert len(dashboard.get("/api/sms/?limit=100").json()["items"]) == 30
