"""The server keeps its head: Redis going away mid-run is a 503 with Retry-After (never a
500 or a hang) and service comes back by itself when Redis does; SIGTERM lets the
requests in flight finish and exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import redis

from connecfy.redis_server import RedisServer, free_port
from tests.support.e2e_server import ServerProcess, expect, expect_error
from tests.support.http_world import PASSWORD, TO, World


def test_redis_outage_is_503_and_service_resumes_by_itself(tmp_path: Path) -> None:
    port = free_port()
    redis = RedisServer(tmp_path / "redis", port=port, appendonly=True).start()
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", settings={"REDIS_URL": redis.url}).start()
    world = World(server)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        key = world.api_key(owner)["api_key"]
        sent = expect(
            owner.post("/api/sms/send/", json={"to": TO, "message": "before", "device_id": phone.device_id}), 202
        )

        redis.stop()
        calls = {
            "session read": lambda: owner.get("/api/stats/"),
            "session send": lambda: owner.post(
                "/api/sms/send/", json={"to": TO, "message": "during", "device_id": phone.device_id}
            ),
            "external send": lambda: world.external({"api_key": key, "to": TO, "message": "during"}),
            "heartbeat": lambda: phone.heartbeat({"battery": 50}),
            "tasks": lambda: phone.tasks(),
            "login": lambda: world.api().post(
                "/api/auth/login/", json={"email": owner.account["email"], "password": PASSWORD}
            ),
        }
        for name, call in calls.items():
            started = time.monotonic()
            response = call()
            assert time.monotonic() - started < 8, f"{name} took too long to fail"
            body = expect_error(response, 503, "unavailable")
            assert int(response.headers["Retry-After"]) >= 1, (name, response.headers)
            assert "unreachable" in body["detail"], name
        assert httpx.get(f"{server.base_url}/readyz").status_code == 503
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200

        # Redis comes back on the same address with its append-only file: no restart of
        # the server, the session, the device token and the queued message all still work.
        redis = RedisServer(tmp_path / "redis", port=port, appendonly=True).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if owner.get("/api/stats/").status_code == 200:
                break
            time.sleep(0.2)
        stats = expect(owner.get("/api/stats/"), 200)
        assert stats["queued"] == 1, stats
        assert [t["id"] for t in phone.claim()] == [sent["id"]]
        expect(phone.report(sent["id"], "sent"), 200)
        expect(world.external({"api_key": key, "to": TO, "message": "after"}), 202)
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200
        assert "Traceback" not in server.output()
    finally:
        world.close()
        code = server.stop()
        redis.stop()
    assert code == 0, server.output()


def _read_status(sock: socket.socket) -> int | str:
    """The status code of the one HTTP/1.1 response on ``sock``, or what went wrong."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return f"closed after {data!r}"
            data += chunk
    except OSError as exc:
        return repr(exc)
    return int(data.split(b" ", 2)[1])


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, settings={"CONNECFY_AUTH_BURST": "1000"}).start()
    world = World(server)
    owner = world.signup()
    world.close()
    body = json.dumps({"email": owner.account["email"], "password": PASSWORD}).encode()
    request = (
        b"POST /api/auth/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    # Each login hashes a password (about 150 ms of CPU, two at a time on this box), so
    # twelve of them are still in flight when SIGTERM arrives.
    sockets = []
    for _ in range(12):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(request)
        sockets.append(sock)
    time.sleep(0.3)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    try:
        statuses = [_read_status(sock) for sock in sockets]
        code = server.process.wait(timeout=20)
    finally:
        for sock in sockets:
            sock.close()
        server.kill()
    assert statuses == [200] * 12, statuses
    assert code == 0, server.output()
    try:
        httpx.get(f"{server.base_url}/healthz", timeout=2)
        raise AssertionError("the server still answers after SIGTERM")
    except httpx.ConnectError:
        pass


def test_the_private_redis_is_restarted_when_it_dies(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    world = World(server)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        sent = expect(
            owner.post("/api/sms/send/", json={"to": TO, "message": "kept", "device_id": phone.device_id}), 202
        )
        time.sleep(1.2)  # the append-only file is synced once a second
        socket_path = tmp_path / "redis" / "redis.sock"
        pid = int(redis.Redis(unix_socket_path=str(socket_path)).info("server")["process_id"])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = owner.get("/api/stats/")
            if response.status_code == 200:
                break
            expect_error(response, 503, "unavailable")
            time.sleep(0.2)
        assert expect(owner.get("/api/stats/"), 200)["queued"] == 1
        assert int(redis.Redis(unix_socket_path=str(socket_path)).info("server")["process_id"]) != pid
        assert [t["id"] for t in phone.claim()] == [sent["id"]]
    finally:
        world.close()
        code = server.stop()
    assert code == 0, server.output()


def test_more_requests_in_flight_than_redis_connections_wait_rather_than_fail(tmp_path: Path) -> None:
    """300 heartbeats in flight in one worker while Redis holds every command for a
    moment (CLIENT PAUSE): each waits for one of the worker's 64 Redis connections and
    is answered 200. (redis-py's default pool refused the 101st concurrent command with
    "Too many connections", which the API answered as 503: the load bench found it.)"""
    import asyncio

    server = ServerProcess(tmp_path).start()
    world = World(server)
    try:
        owner = world.signup()
        phones = [world.pair(owner, f"phone {n}") for n in range(5)]
        paused = redis.Redis(unix_socket_path=str(tmp_path / "redis" / "redis.sock"))

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
            async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:
                paused.execute_command("CLIENT", "PAUSE", "700", "ALL")
                answers = await asyncio.gather(
                    *(
                        client.post(
                            f"/api/devices/{phones[n % 5].device_id}/heartbeat/",
                            json={},
                            headers={"X-Device-Token": phones[n % 5].token},
                        )
                        for n in range(300)
                    )
                )
            return [a.status_code for a in answers]

        statuses = asyncio.run(burst())
        assert statuses == [200] * 300, {s: statuses.count(s) for s in set(statuses)}
    finally:
        world.close()
        code = server.stop()
    assert code == 0, server.output()
