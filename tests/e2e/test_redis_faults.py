"""Redis faults are fast, clear 503s from a real ``connecfy serve --workers 2``.

A frozen Redis (SIGSTOP): the claim, both sends, the stats and ``/readyz`` each answer
503 with the JSON error and ``Retry-After`` within 3 s, and all work again soon after
SIGCONT. A full Redis (``maxmemory`` reached, ``noeviction``): sends answer 503
``store_full``, never 500, ``/readyz`` says so, and sends work again once there is room.

Each test keeps a ledger: every message answered 202 ends final (claimed, reported
sent) and none is claimed twice. A send answered 503 because Redis did not answer in
time may still have been queued (Redis runs the command it received when it wakes), so
such a message may be claimed too, once; a phone's claim that timed out may likewise
have leased messages it never got, which come back when the (short) lease runs out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from connecfy.redis_server import RedisServer
from tests.support.e2e_server import ServerProcess, describe, expect, expect_error
from tests.support.http_world import TO, Phone, World

CONTRACT_S = 3.0  # the promise: a 503 within this long, whatever Redis does
FINAL = {"sent", "delivered", "failed", "expired", "cancelled"}
ROOMY = {
    "CONNECFY_SENDS_PER_SECOND": "1000000",
    "CONNECFY_SENDS_BURST": "1000000",
    "CONNECFY_TASKS_PER_MINUTE": "1000000",
    "CONNECFY_TASKS_BURST": "1000000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "1000000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "1000000",
    # A claim that timed out may have leased messages the phone never got: they are
    # offered again once this runs out.
    "CONNECFY_LEASE_SECONDS": "2",
    # Few connections, so that a crowd of requests waits for one (the wait counts
    # towards the 3 s too).
    "CONNECFY_REDIS_MAX_CONNECTIONS": "4",
}
CROWD = 40  # stats requests at once: five times both workers' connections


class Ledger:
    """What the server accepted (202), and what the phone was given."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()
        self.maybe: set[str] = set()  # bodies of sends answered 503 for a timeout
        self.claimed: Counter[str] = Counter()
        self.bodies: dict[str, str] = {}
        self.count = 0

    def body(self) -> str:
        self.count += 1
        return f"ledger {self.count} " + "x" * 400

    def took(self, response: httpx.Response) -> None:
        """Record a send's 202 (one message, or a batch)."""
        answer = expect(response, 202)
        for item in answer.get("messages", [answer]):
            self.accepted.add(item["id"])

    def drain(self, owner: Any, phone: Phone, deadline_s: float = 15.0) -> None:
        """Claim and report until every accepted message is final and nothing is queued
        or claimed."""
        deadline = time.monotonic() + deadline_s
        expect(phone.heartbeat({"battery": 80}), 200)
        while True:
            tasks = phone.claim(limit=100)
            for task in tasks:
                self.claimed[task["id"]] += 1
                self.bodies[task["id"]] = task["message"]
                expect(phone.report(task["id"], "sent"), 200)
            if not tasks:
                stats = expect(owner.get("/api/stats/"), 200)
                if stats["queued"] == 0 and stats["claimed"] == 0:
                    break
                time.sleep(0.2)  # leased by a claim that timed out: back after the lease
            assert time.monotonic() < deadline, f"messages left: {expect(owner.get('/api/stats/'), 200)}"

    def check(self, owner: Any) -> None:
        twice = {message_id: n for message_id, n in self.claimed.items() if n > 1}
        assert twice == {}, f"claimed more than once: {twice}"
        assert self.accepted <= set(self.claimed), f"accepted, never claimed: {self.accepted - set(self.claimed)}"
        unknown = {i for i in self.claimed if i not in self.accepted and self.bodies[i] not in self.maybe}
        assert unknown == set(), f"claimed, never sent: {unknown}"
        for message_id in sorted(self.accepted):
            status = expect(owner.get(f"/api/sms/{message_id}/"), 200)["status"]
            assert status in FINAL, (message_id, status)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=False) as started:
        yield started  # stopped afterwards even when a test left it stopped (SIGSTOP)


@pytest.fixture
def server(tmp_path: Path, redis_server: RedisServer) -> Iterator[ServerProcess]:
    (tmp_path / "server").mkdir()
    process = ServerProcess(tmp_path / "server", workers=2, settings={"REDIS_URL": redis_server.url, **ROOMY}).start()
    try:
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.output()
        assert "Traceback" not in process.output(), process.output()


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def burst(base_url: str, cookies: httpx.Cookies, n: int) -> list[tuple[int, float]]:
    """``n`` stats requests at once (more than the workers' Redis connections, so most
    wait for one): each one's status and how long it took."""

    async def one(client: httpx.AsyncClient) -> tuple[int, float]:
        started = time.monotonic()
        response = await client.get("/api/stats/")
        return response.status_code, time.monotonic() - started

    async def all_of_them() -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base_url, cookies=cookies, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(n)))

    return asyncio.run(all_of_them())


def test_a_frozen_redis_is_a_503_within_three_seconds_and_service_resumes(
    server: ServerProcess, redis_server: RedisServer
) -> None:
    world = World(server)
    ledger = Ledger()
    try:
        owner = world.signup()
        phone = world.pair(owner)
        key = world.api_key(owner)["api_key"]
        ledger.took(
            owner.post("/api/sms/send/", json={"to": TO, "message": ledger.body(), "device_id": phone.device_id})
        )
        ledger.took(world.external({"api_key": key, "to": TO, "message": ledger.body()}))
        session_body, external_body = ledger.body(), ledger.body()
        calls: dict[str, Callable[[], httpx.Response]] = {
            "claim": lambda: phone.tasks(),
            "session send": lambda: owner.post(
                "/api/sms/send/", json={"to": TO, "message": session_body, "device_id": phone.device_id}
            ),
            "external send": lambda: world.external({"api_key": key, "to": TO, "message": external_body}),
            "stats": lambda: owner.get("/api/stats/"),
            "readyz": lambda: httpx.get(f"{server.base_url}/readyz", timeout=10),
        }

        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(len(calls) + 1) as pool:
                crowd = pool.submit(burst, server.base_url, owner.client.cookies, CROWD)
                answers = dict(zip(calls, pool.map(timed, calls.values()), strict=True))
                crowded = crowd.result()
            assert httpx.get(f"{server.base_url}/healthz").status_code == 200
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        ledger.maybe |= {session_body, external_body}
        timings = {name: round(took, 2) for name, (_, took) in answers.items()}
        print("SIGSTOP -> 503, seconds:", timings)
        for name, (response, took) in answers.items():
            assert took <= CONTRACT_S, f"{name}: 503 after {took:.2f} s ({timings})"
            body = expect_error(response, 503, "not_ready" if name == "readyz" else "unavailable")
            assert int(response.headers["Retry-After"]) >= 1, (name, response.headers)
            assert body["detail"], name
        slowest = max(took for _, took in crowded)
        print(f"{CROWD} stats at once: all 503 within {slowest:.2f} s")
        assert {status for status, _ in crowded} == {503} and slowest <= CONTRACT_S, slowest

        # Awake again: each of the same requests succeeds within a few seconds.
        woke = time.monotonic()
        for name, call in calls.items():
            while not (response := call()).is_success:
                assert time.monotonic() - woke < 5, f"{name} still failing: {describe(response)}"
                time.sleep(0.1)
            if name.endswith("send"):
                ledger.took(response)
            elif name == "claim":
                for task in response.json():
                    ledger.claimed[task["id"]] += 1
                    ledger.bodies[task["id"]] = task["message"]
                    expect(phone.report(task["id"], "sent"), 200)
        print("SIGCONT -> all 2xx in", round(time.monotonic() - woke, 2), "s")

        ledger.drain(owner, phone)
        ledger.check(owner)
    finally:
        world.close()


def test_a_full_redis_is_a_503_store_full_never_a_500_and_sends_resume(
    server: ServerProcess, redis_server: RedisServer
) -> None:
    world = World(server)
    ledger = Ledger()
    admin = redis.Redis.from_url(redis_server.url)
    try:
        owner = world.signup()
        phone = world.pair(owner)
        key = world.api_key(owner)["api_key"]

        def session_send() -> httpx.Response:
            body = {"to": TO, "message": ledger.body(), "device_id": phone.device_id}
            return owner.post("/api/sms/send/", json=body)

        def external_send() -> httpx.Response:
            return world.external({"api_key": key, "to": TO, "message": ledger.body()})

        def batch_send() -> httpx.Response:
            return world.batch(key, [{"to": TO, "message": ledger.body()} for _ in range(25)])

        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 512 * 1024)
        refusals = 0
        for attempt in range(400):
            response = (batch_send, session_send, external_send)[attempt % 3]()
            if response.status_code == 202:
                ledger.took(response)
                continue
            body = expect_error(response, 503, "store_full")
            assert int(response.headers["Retry-After"]) >= 1, describe(response)
            assert "full" in body["detail"], body
            refusals += 1
            if refusals == 3:
                break
        assert refusals == 3, f"Redis never filled up ({len(ledger.accepted)} messages taken)"
        print("messages taken before Redis was full:", len(ledger.accepted))

        # Held full (maxmemory below what Redis holds now, as a Redis that kept filling
        # would be; right at the limit, memory freed by a finished command can let a
        # small write through): every send is refused, readiness says why, reads work.
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
        for send in (session_send, external_send, batch_send):
            response = send()
            expect_error(response, 503, "store_full")
            assert int(response.headers["Retry-After"]) >= 1, describe(response)
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
        body = expect_error(ready, 503, "store_full")
        assert "full" in body["detail"] and int(ready.headers["Retry-After"]) >= 1, describe(ready)
        expect(owner.get("/api/stats/"), 200)

        # Room again: the next sends are taken, and readiness is back.
        admin.config_set("maxmemory", 0)
        roomy = time.monotonic()
        for send in (session_send, external_send, batch_send):
            ledger.took(send())
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        assert time.monotonic() - roomy < 3

        ledger.drain(owner, phone, deadline_s=30)
        ledger.check(owner)
    finally:
        admin.close()
        world.close()
