"""A fleet holds a connection per phone: 1,500 of them (long polls waiting and idle
keep-alive connections) on a serve with two workers, more than granian's default of
512 per worker admits, and a sender, the dashboard and /healthz are still answered at
once, and a waiting phone still gets its message."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx

from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import TO, World

WAITING_PHONES = 300
IDLE_CONNECTIONS = 1_200
ANSWERED_WITHIN = 5.0


async def _request(port: int, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> int:
    """One whole answer read off the connection (head and body): its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next((int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")), 0)
    await reader.readexactly(length)
    return int(head[0].split()[1])


def test_more_phone_connections_than_a_worker_admitted_leave_senders_and_the_dashboard_answered(
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        tmp_path,
        workers=2,
        settings={
            "CONNECFY_AUTH_BURST": "100000",
            "CONNECFY_AUTH_PER_MINUTE": "100000",
            "CONNECFY_SENDS_BURST": "1000",
        },
    ).start()
    world = World(server)
    try:
        owner = world.signup()
        phones = [world.pair(owner, f"phone {i}", online=False) for i in range(WAITING_PHONES)]

        async def scenario() -> None:
            held = []
            for phone in phones:  # each phone on its own connection, waiting
                held.append(
                    await _request(
                        server.port,
                        f"GET /api/devices/{phone.device_id}/tasks/?wait=60 HTTP/1.1\r\nHost: x\r\n"
                        f"X-Device-Token: {phone.token}\r\n\r\n",
                    )
                )
            idle = []
            for _ in range(IDLE_CONNECTIONS):  # and more that made a request and keep the connection
                reader, writer = await _request(server.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert await asyncio.wait_for(_status(reader), 10) == 200
                idle.append((reader, writer))
            await asyncio.sleep(1.0)

            async with httpx.AsyncClient(base_url=server.base_url, cookies=owner.client.cookies, timeout=30) as fresh:
                for path in ("/healthz", "/api/devices/", "/devices/"):
                    started = time.monotonic()
                    response = await fresh.get(path)
                    assert response.status_code == 200, (path, response.status_code)
                    assert time.monotonic() - started < ANSWERED_WITHIN, path
                started = time.monotonic()
                target = phones[-1]
                body = {"to": TO, "message": "through the crowd", "device_id": target.device_id}
                headers = {"X-CSRFToken": owner.client.cookies.get("csrftoken") or ""}
                sent = await fresh.post("/api/sms/send/", json=body, headers=headers)
                assert sent.status_code == 202, sent.text
                assert time.monotonic() - started < ANSWERED_WITHIN
            reader, _ = held[-1]
            assert await asyncio.wait_for(_status(reader), ANSWERED_WITHIN) == 200

            async def again(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                return await asyncio.wait_for(_status(reader), 10)

            # Every one of them was held all along: each still answers on its connection.
            assert set(await asyncio.gather(*(again(r, w) for r, w in idle))) == {200}
            for _, writer in held + idle:
                writer.close()

        asyncio.run(scenario())
        [listed] = [d for d in expect(owner.get("/api/devices/"), 200) if d["device_id"] == phones[0].device_id]
        assert listed["online"] is True  # its wait made it online, without a heartbeat
    finally:
        world.close()
        assert server.stop() == 0, server.output()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _answer_to_http2(port: int) -> bytes:
    """The first bytes serve answers a cleartext HTTP/2 client (prior knowledge) with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(H2_PREFACE + EMPTY_SETTINGS_FRAME)
        try:
            return conn.recv(64)
        except OSError:  # reset, or nothing in time
            return b""


def test_serve_speaks_http1_only_unless_cleartext_http2_is_asked_for(tmp_path: Path) -> None:
    for name, settings, speaks_http2 in (
        ("default", {}, False),
        ("h2c", {"CONNECFY_HTTP2_CLEARTEXT": "true"}, True),
    ):
        data_dir = tmp_path / name
        data_dir.mkdir()
        server = ServerProcess(data_dir, settings=settings).start()
        try:
            answer = _answer_to_http2(server.port)
            # An HTTP/2 server's first frame is its SETTINGS (type 4) on stream 0.
            settings_frame = len(answer) >= 9 and answer[3] == 0x04 and answer[5:9] == b"\x00\x00\x00\x00"
            assert settings_frame == speaks_http2, (name, answer)
            assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        finally:
            server.stop()
