"""The sweep runs inside the server: with two workers, one sweeps at a time, and a
message nobody claims expires by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e_server import Api, ServerProcess, expect

TO = "+15551234567"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connecfy-sweep")
    process = ServerProcess(data_dir, workers=2, settings={"CONNECFY_MESSAGE_TTL_SECONDS": "2"}).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def test_an_unclaimed_message_expires_through_the_servers_own_sweep(server: ServerProcess) -> None:
    user = Api(server.base_url)
    expect(user.post("/api/auth/signup/", json={"email": "sweep@example.com", "password": "long enough",
                                                 "account_type": "api_only"}), 201)
    queued = expect(user.post("/api/sms/send/", json={"to": TO, "message": "nobody will send me"}), 202)
    deadline = time.monotonic() + 15
    status = "queued"
    while time.monotonic() < deadline and status == "queued":
        time.sleep(0.25)
        status = expect(user.get(f"/api/sms/{queued['id']}/"), 200)["status"]
    assert status == "expired"
    stats = expect(user.get("/api/stats/"), 200)
    assert (stats["expired"], stats["queued"]) == (1, 0)
    # Both workers answer; the sweeper lock is held by one of them.
    for _ in range(10):
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
    user.close()
