"""Long polls over real HTTP (``GET .../tasks/?wait=N``), on serve's private Redis and on
a Redis Cluster: a waiting phone is handed a message as soon as it is queued (its own
queue, its account's pool, the platform pool), an empty wait answers ``[]`` at its end,
a waiting phone is online without heartbeats, a phone that polls again after every
answer is never limited, a phone that hung up gets nothing claimed for it, and 50
waiting pool phones share 1,000 pool messages exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.e2e_server import ServerProcess, describe, expect, expect_error
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, TO, Api, Phone, World

# The poll limit of the defaults (6 a minute, 10 at once), so a test can show what it charges.
LIMITS = {
    "CONNECFY_SENDS_PER_SECOND": "100000",
    "CONNECFY_SENDS_BURST": "100000",
    "CONNECFY_QUOTA_API_ONLY": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "1000000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "1000000",
    "CONNECFY_AUTH_BURST": "1000",
}
WOKEN_WITHIN = 5.0
"""A wake-up answers far sooner than this (the bench measures how soon); a wait that
missed its wake-up answers only at its end, 30 s after it began."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("connecfy-long-poll"), workers=2, settings={**LIMITS, **serve_redis}
    ).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()
        assert "Traceback" not in process.output(), process.output()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


@pytest.fixture(scope="module")
def operator(world: World) -> Api:
    user = world.api()
    expect(user.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    return user


def wait_for_tasks(phone: Phone, wait: int, **params: Any) -> httpx.Response:
    return phone.api.get(f"/api/devices/{phone.device_id}/tasks/", params={"wait": wait, **params}, timeout=wait + 15)


def in_background(call: Callable[[], httpx.Response]) -> Future[httpx.Response]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def settle() -> None:
    """Long enough for a request to reach its wait (its first claim found nothing)."""
    time.sleep(0.5)


def woken_by(send: Callable[[], dict[str, Any]], waiting: Future[httpx.Response]) -> tuple[dict[str, Any], list[Any]]:
    """Send while a phone waits: the 202's body, and the waiting request's tasks, which
    must come well before the wait's end."""
    settle()
    assert not waiting.done(), describe(waiting.result())
    sent = send()
    answered = time.monotonic()
    tasks = expect(waiting.result(timeout=30), 200)
    assert time.monotonic() - answered < WOKEN_WITHIN
    return sent, tasks


def test_a_waiting_phone_is_handed_a_message_queued_for_it(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    waiting = in_background(lambda: wait_for_tasks(phone, 30))
    sent, tasks = woken_by(
        lambda: expect(
            owner.post("/api/sms/send/", json={"to": TO, "message": "code 1", "device_id": phone.device_id}), 202
        ),
        waiting,
    )
    assert [t["id"] for t in tasks] == [sent["id"]] and tasks[0]["message"] == "code 1"


def test_a_waiting_phone_is_handed_its_accounts_pool_message(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner, online=False)  # no heartbeat: the wait makes it online
    key = world.api_key(owner)["api_key"]  # an API send without device_id: the account's own pool
    waiting = in_background(lambda: wait_for_tasks(phone, 30))
    sent, tasks = woken_by(lambda: expect(world.external({"api_key": key, "to": TO, "message": "pool"}), 202), waiting)
    assert [t["id"] for t in tasks] == [sent["id"]]


def test_a_waiting_platform_pool_phone_is_handed_an_api_only_senders_message(world: World, operator: Api) -> None:
    phone = world.pair(operator, "pool phone", pool=True, online=False)
    key = world.api_key(world.signup("api_only"))["api_key"]
    waiting = in_background(lambda: wait_for_tasks(phone, 30))
    sent, tasks = woken_by(
        lambda: expect(world.external({"api_key": key, "to": TO, "message": "your code: 4321"}), 202), waiting
    )
    assert [t["id"] for t in tasks] == [sent["id"]]
    expect(phone.report(tasks[0]["id"], "sent"), 200)


def test_an_empty_wait_answers_an_empty_list_at_its_end_and_the_phone_is_online_meanwhile(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner, online=False)
    [listed] = expect(owner.get("/api/devices/"), 200)
    assert listed["online"] is False
    started = time.monotonic()
    waiting = in_background(lambda: wait_for_tasks(phone, 3))
    settle()
    [listed] = expect(owner.get("/api/devices/"), 200)
    assert listed["online"] is True and listed["last_seen"] is not None
    assert expect(waiting.result(timeout=20), 200) == []
    assert 3 <= time.monotonic() - started < 3 + WOKEN_WITHIN


def test_a_phone_that_polls_again_after_every_answer_gets_a_trickle_and_never_a_429(world: World) -> None:
    """20 messages, one every 0.5 s, to a phone at the default poll limit (10 at once, 6 a
    minute): it polls again the moment each answer arrives, so it makes 20 polls or more
    in 10 s, which the limit would refuse were answers that carried messages charged."""
    owner = world.signup()
    phone = world.pair(owner)
    received: list[str] = []
    statuses: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() and len(received) < 20:
            response = wait_for_tasks(phone, 5)
            statuses.append(response.status_code)
            if response.status_code != 200:
                return
            received.extend(t["id"] for t in response.json())

    poller = threading.Thread(target=poll)
    poller.start()
    sent = []
    try:
        for i in range(20):
            body = {"to": TO, "message": f"trickle {i}", "device_id": phone.device_id}
            sent.append(expect(owner.post("/api/sms/send/", json=body), 202)["id"])
            time.sleep(0.5)
        poller.join(timeout=30)
    finally:
        done.set()
        poller.join(timeout=30)
    assert set(statuses) == {200}, statuses
    assert received == sent
    assert len(statuses) >= 15  # one answer per message or so: none waited out


def test_a_wait_past_the_poll_limit_is_refused_and_an_empty_one_is_charged(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    for _ in range(10):  # the burst, spent by empty plain polls
        expect(phone.tasks(), 200)
    refused = expect_error(wait_for_tasks(phone, 5), 429, "rate_limited")
    assert refused and int(phone.tasks().headers["Retry-After"]) >= 1


def test_a_phone_that_hung_up_gets_nothing_claimed_for_it(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    with pytest.raises(httpx.ReadTimeout):
        phone.api.get(f"/api/devices/{phone.device_id}/tasks/", params={"wait": 20}, timeout=1.0)
    settle()
    body = {"to": TO, "message": "after the hang-up", "device_id": phone.device_id}
    sent = expect(owner.post("/api/sms/send/", json=body), 202)
    time.sleep(1.0)
    assert expect(owner.get(f"/api/sms/{sent['id']}/"), 200)["status"] == "queued"
    assert [t["id"] for t in phone.claim()] == [sent["id"]]


def test_fifty_waiting_pool_phones_share_a_thousand_pool_messages_exactly_once(world: World, operator: Api) -> None:
    phones = [world.pair(operator, f"pool {i}", pool=True) for i in range(50)]
    key = world.api_key(world.signup("api_only"))["api_key"]
    claims: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def work(phone: Phone) -> None:
        while not stop.is_set():
            response = wait_for_tasks(phone, 5, limit=10)
            if response.status_code != 200:
                errors.append(describe(response))
                return
            tasks = response.json()
            with lock:
                claims.extend(t["id"] for t in tasks)
            for task in tasks:
                expect(phone.report(task["id"], "sent"), 200)

    with ThreadPoolExecutor(max_workers=len(phones)) as threads:
        running = [threads.submit(work, phone) for phone in phones]
        settle()
        sent: list[str] = []
        for start in range(0, 1000, 100):
            batch = [{"to": TO, "message": f"pool {n}"} for n in range(start, start + 100)]
            reply = expect(world.batch(key, batch), 202)
            sent += [m["id"] for m in reply["messages"]]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(claims) < len(sent) and not errors:
            time.sleep(0.2)
        stop.set()
        for future in running:
            future.result(timeout=30)
    assert errors == []
    repeated = [i for i, n in Counter(claims).items() if n > 1]
    assert repeated == [] and sorted(claims) == sorted(sent)


def test_metrics_count_waiting_long_polls_and_time_them_apart_from_plain_polls(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    waiting = in_background(lambda: wait_for_tasks(phone, 2))
    settle()
    metrics = world.api().get("/metrics").text
    held = [line for line in metrics.splitlines() if line.startswith("connecfy_long_polls_waiting")]
    assert held and float(held[0].split()[-1]) >= 1, held
    expect(waiting.result(timeout=20), 200)
    metrics = world.api().get("/metrics").text
    assert 'route="/api/devices/{device_id}/tasks/ (long poll)"' in metrics
