"""The HTTP walk-through of docs/api.md runs as written against the real server, on its
private Redis and on a Redis Cluster given only ``REDIS_URL`` of one node."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e_server import ServerProcess
from tests.support.serve_redis import serve_redis

__all__ = ["serve_redis"]  # the fixture, for this module's server

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def walkthrough() -> str:
    text = API_DOC.read_text()
    section = text[text.index("## Walk-through") :]
    return section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("connecfy-readme"), settings=serve_redis).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()
    if serve_redis:
        return
    # The private Redis kept its data and stopped with the server.
    assert (process.data_dir / "redis" / "appendonly.aof").exists() or (
        process.data_dir / "redis" / "appendonlydir"
    ).exists()
    assert not (process.data_dir / "redis" / "redis.sock").exists()


def test_the_walkthrough_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is needed to run the walk-through's examples"
    script = walkthrough()
    assert script.count("API=http://127.0.0.1:8000") == 1
    # Every curl must succeed (any HTTP error fails the script) and print its reply.
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; echo; }\n'
    script = prelude + script.replace("API=http://127.0.0.1:8000", f"API={server.base_url}")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    replies = [line for line in result.stdout.splitlines() if line.strip()]
    assert any('"status":"ok","device_id"' in r for r in replies)  # the heartbeat
    assert any(re.fullmatch(r'\[\{"id":"\w+","to":"\+15551234567","message":"Hello"\}\]', r) for r in replies)
    assert any('"status":"cancelled"' in r for r in replies)
    assert replies[-2:] == ['{"status":"ok"}', '{"status":"ok"}']


def test_every_documented_endpoint_is_in_the_walkthrough() -> None:
    script = walkthrough()
    for path in (
        "/api/auth/signup/",
        "/api/auth/login/",
        "/api/auth/logout/",
        "/api/devices/pairing-codes/",
        "/api/devices/register/",
        "/heartbeat/",
        "/tasks/",
        "/api/sms/send/",
        "/status/",
        "/api/external/send/",
        "/api/stats/",
        "/api/sms/",
        "/cancel/",
        "/api/devices/",
        "/api/api-keys/",
        "/healthz",
        "/readyz",
    ):
        assert path in script, path
