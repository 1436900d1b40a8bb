"""Long polls around a server's life: SIGTERM answers every waiting phone at once and
serve exits cleanly; a Redis restart during waits loses no message and the waits go on;
a worker at its most waits answers one more at once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from connecfy.redis_server import RedisServer
from tests.support.e2e_server import ServerProcess, describe, expect
from tests.support.http_world import TO, Phone, World

ROOMY = {
    "CONNECFY_SENDS_PER_SECOND": "100000",
    "CONNECFY_SENDS_BURST": "100000",
    "CONNECFY_AUTH_BURST": "1000",
}


def wait_for_tasks(phone: Phone, wait: int) -> httpx.Response:
    return phone.api.get(f"/api/devices/{phone.device_id}/tasks/", params={"wait": wait}, timeout=wait + 15)


def waiting(threads: ThreadPoolExecutor, phone: Phone, wait: int = 30) -> Future[tuple[httpx.Response, float]]:
    def call() -> tuple[httpx.Response, float]:
        response = wait_for_tasks(phone, wait)
        return response, time.monotonic()

    return threads.submit(call)


def test_sigterm_answers_every_waiting_phone_at_once_and_serve_exits_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, workers=2, settings=ROOMY).start()
    world = World(server)
    try:
        owner = world.signup()
        phones = [world.pair(owner, f"phone {i}") for i in range(6)]
        with ThreadPoolExecutor(max_workers=len(phones)) as threads:
            waits = [waiting(threads, phone) for phone in phones]
            time.sleep(1.0)
            assert not any(w.done() for w in waits)
            assert server.process is not None
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            for w in waits:
                response, answered = w.result(timeout=20)
                assert expect(response, 200) == [], describe(response)
                assert answered - signalled < 2.0
            assert server.process.wait(timeout=10) == 0, server.output()
            assert time.monotonic() - signalled < 10
    finally:
        world.close()
        server.kill()
    assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=True) as started:
        yield started


def test_a_redis_restart_during_waits_loses_no_message_and_the_waits_go_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", settings={"REDIS_URL": redis_server.url, **ROOMY}).start()
    world = World(server)
    try:
        owner = world.signup()
        listener, sleeper = world.pair(owner, "listener"), world.pair(owner, "sleeper")
        body = {"to": TO, "message": "queued before the restart", "device_id": sleeper.device_id}
        before = expect(owner.post("/api/sms/send/", json=body), 202)["id"]
        with ThreadPoolExecutor(max_workers=1) as threads:
            listening = waiting(threads, listener, wait=40)
            time.sleep(1.0)
            redis_server.stop()
            time.sleep(1.0)
            redis_server.start()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and httpx.get(f"{server.base_url}/readyz").status_code != 200:
                time.sleep(0.2)
            time.sleep(3.0)  # the wait's subscriber connects again within 2 s
            assert not listening.done(), describe(listening.result()[0])
            body = {"to": TO, "message": "after the restart", "device_id": listener.device_id}
            after = expect(owner.post("/api/sms/send/", json=body), 202)["id"]
            sent = time.monotonic()
            response, answered = listening.result(timeout=60)
            assert [t["id"] for t in expect(response, 200)] == [after]
            assert answered - sent < 5.0  # woken, not the wait's end 40 s after it began
        assert [t["id"] for t in sleeper.claim()] == [before]
    finally:
        world.close()
        assert server.stop() == 0, server.output()


def test_a_worker_holding_its_most_waits_answers_one_more_at_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, settings={**ROOMY, "CONNECFY_LONG_POLL_MAX_WAITS": "2"}).start()
    world = World(server)
    try:
        owner = world.signup()
        phones = [world.pair(owner, f"phone {i}") for i in range(3)]
        with ThreadPoolExecutor(max_workers=2) as threads:
            held = [waiting(threads, phone, wait=5) for phone in phones[:2]]
            time.sleep(1.0)
            started = time.monotonic()
            assert expect(wait_for_tasks(phones[2], 5), 200) == []
            assert time.monotonic() - started < 2.0
            assert not any(h.done() for h in held)
            for h in held:
                response, _ = h.result(timeout=20)
                assert expect(response, 200) == []
    finally:
        world.close()
        assert server.stop() == 0, server.output()
