"""The sweep runs inside the server, in its background process (``connecfy background``,
beside the request workers): a message nobody claims expires by itself; the background
process is restarted when it dies, and dies with a killed server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.e2e_server import Api, ServerProcess, expect

TO = "+15551234567"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connecfy-sweep")
    process = ServerProcess(data_dir, workers=2, settings={"CONNECFY_MESSAGE_TTL_SECONDS": "2"}).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def background_of(server: ServerProcess, timeout: float = 15.0) -> psutil.Process:
    """The server's one ``connecfy background`` child (waiting for it after a restart)."""
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while True:
        found = [
            p
            for p in psutil.Process(server.process.pid).children()
            if "background" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE
        ]
        if len(found) == 1 or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.1)


def expires_by_itself(server: ServerProcess, email: str) -> None:
    user = Api(server.base_url)
    expect(
        user.post("/api/auth/signup/", json={"email": email, "password": "long enough", "account_type": "api_only"}),
        201,
    )
    queued = expect(user.post("/api/sms/send/", json={"to": TO, "message": "nobody will send me"}), 202)
    deadline = time.monotonic() + 15
    status = "queued"
    while time.monotonic() < deadline and status == "queued":
        time.sleep(0.25)
        status = expect(user.get(f"/api/sms/{queued['id']}/"), 200)["status"]
    assert status == "expired"
    stats = expect(user.get("/api/stats/"), 200)
    assert (stats["expired"], stats["queued"]) == (1, 0)
    user.close()


def test_an_unclaimed_message_expires_through_the_servers_own_sweep(server: ServerProcess) -> None:
    expires_by_itself(server, "sweep@example.com")
    for _ in range(10):
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200


def test_the_background_process_is_restarted_when_it_dies(server: ServerProcess) -> None:
    first = background_of(server)
    workers = [p.pid for p in psutil.Process(server.process.pid).children() if p.pid != first.pid]
    assert workers and first.pid not in workers  # not one of the request workers
    first.kill()
    first.wait(10)
    second = background_of(server)
    assert second.pid != first.pid
    expires_by_itself(server, "sweep-after-restart@example.com")  # the new one sweeps


def test_the_background_process_dies_with_a_killed_server(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path).start()
    assert process.process is not None
    others = [p for p in psutil.Process(process.process.pid).children(recursive=True)]
    try:
        background = background_of(process)
    finally:
        process.kill()  # SIGKILL: serve cannot stop its children itself
    try:
        background.wait(15)  # psutil.TimeoutExpired if it outlived its server
        assert not background.is_running()
    finally:
        for orphan in others:  # the granian worker and Redis are not this test's subject
            if orphan.is_running():
                orphan.kill()
