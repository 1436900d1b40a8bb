"""The phone's hot path over real HTTP: two ``connecfy serve``, each on its own private
Redis, one of them with ``CONNECFY_HOT_PATHS=false`` (every poll and heartbeat
through Litestar's handler), are sent the same requests in lockstep on one kept-alive
connection each, and must answer each alike to the byte: status line, every header in
order (the request ids are the test's own), body; the ids, tokens and clocks of the two
worlds told apart only by what they stand for. Then the two servers' access lines and
request metrics for those requests must be the same, and a long poll waiting when each
server is stopped must be answered alike.

Covered: every poll and heartbeat variant of :mod:`tests.support.phone_variants`, tasks
with and without ``sim_slot``, a long poll that times out and one woken by a send, the
poll limiter's 429 (``RateLimit-*`` and ``Retry-After``), a removed phone's token, a body
sent in chunks, unknown paths beside the phone's."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import phone_variants as variants
from tests.support.e2e_server import ServerProcess
from tests.support.phone_variants import HEARTBEAT, JSON_TYPE, QUERIES, Headers, bodies

PASSWORD = "correct horse battery staple"
TO = "+15551234567"
# Tight enough that one phone's empty polls reach the poll limiter's 429 within the test.
SETTINGS = {"CONNECFY_TASKS_PER_MINUTE": "1", "CONNECFY_TASKS_BURST": "30"}
MOMENT = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
# Seconds from now, ±1 between the worlds: two headers, and the 429's sentence.
SECONDS_HEADERS = frozenset({"ratelimit-reset", "retry-after"})
SECONDS_IN_BODY = re.compile(rb"try again in (\d+) s")


@dataclass
class World:
    """One server, its account, its phones and a kept-alive connection to it."""

    server: ServerProcess
    dashboard: httpx.Client
    connection: http.client.HTTPConnection
    names: dict[str, str] = field(default_factory=dict)  # each id or token of this world -> what it stands for
    phones: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (device id, token)
    messages: dict[str, str] = field(default_factory=dict)  # m0, m1, ... (in the order sent) -> id

    def csrf(self) -> dict[str, str]:
        return {"X-CSRFToken": self.dashboard.cookies["csrftoken"]}

    def pair(self, name: str) -> None:
        code = self.dashboard.post("/api/devices/pairing-codes/", headers=self.csrf())
        assert code.status_code == 201, code.text
        reply = self.dashboard.post(
            "/api/devices/register/", json={"code": code.json()["code"], "device_name": f"phone {name}"}
        )
        assert reply.status_code == 201, reply.text
        device_id, token = reply.json()["device_id"], reply.json()["device_token"]
        self.phones[name] = (device_id, token)
        self.names[device_id], self.names[token] = f"<phone {name}>", f"<token {name}>"

    def send(self, name: str, **extra: Any) -> None:
        body = {"to": TO, "message": f"hello {len(self.names)}", "device_id": self.phones[name][0], **extra}
        reply = self.dashboard.post("/api/sms/send/", json=body, headers=self.csrf())
        assert reply.status_code == 202, reply.text
        self.names[reply.json()["id"]] = f"<message {len(self.names)}>"
        self.messages[f"m{len(self.messages)}"] = reply.json()["id"]

    def told(self, text: bytes) -> bytes:
        """``text`` with this world's ids and tokens as what they stand for, and moments as one."""
        for actual, name in self.names.items():
            text = text.replace(actual.encode(), name.encode())
        return MOMENT.sub(b"<moment>", text)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, World]]:
    """The server with the hot path and the one without, each with an account of three
    paired phones (a, b, c)."""
    made: list[World] = []
    try:
        for hot in ("true", "false"):
            data_dir: Path = tmp_path_factory.mktemp(f"hot-path-{hot}")
            server = ServerProcess(data_dir, settings={**SETTINGS, "CONNECFY_HOT_PATHS": hot}, separate_stderr=True)
            server.start()
            world = World(
                server,
                httpx.Client(base_url=server.base_url, timeout=10.0),
                http.client.HTTPConnection("127.0.0.1", server.port, timeout=10.0),
            )
            made.append(world)
            signup = world.dashboard.post(
                "/api/auth/signup/",
                json={"email": "phones@example.com", "password": PASSWORD, "account_type": "self_managed"},
            )
            assert signup.status_code == 201, signup.text
            for name in ("a", "b", "c"):
                world.pair(name)
        yield made[0], made[1]
    finally:
        for world in made:
            world.dashboard.close()
            world.connection.close()
            if world.server.process is not None and world.server.process.poll() is None:
                assert world.server.stop() == 0, world.server.output()


@dataclass
class Exchange:
    status: int
    reason: str
    headers: list[tuple[str, bytes]]
    body: bytes


def exchange(
    world: World, method: str, path: str, headers: Headers, body: bytes | list[bytes] | None, request_id: str
) -> Exchange:
    """One request on the world's kept-alive connection, as sent: ``headers`` in order, a
    body with its ``Content-Length`` (``list``: in chunks), the test's own request id."""
    connection = world.connection
    connection.putrequest(method, path, skip_accept_encoding=True)
    connection.putheader("X-Request-ID", request_id)
    for name, value in headers:
        connection.putheader(name, value.encode("latin-1"))
    if isinstance(body, list):
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders(iter(body), encode_chunked=True)
    elif body is not None:
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
    else:
        connection.endheaders()
    reply = connection.getresponse()
    raw_headers = [(name.lower(), value.encode("latin-1")) for name, value in reply.getheaders()]
    return Exchange(reply.status, reply.reason, raw_headers, reply.read())


class Lockstep:
    """Each request sent to both worlds, one right after the other, and the two answers
    compared; the request ids are kept for the access lines."""

    def __init__(self, hot: World, reference: World) -> None:
        self.worlds = (hot, reference)
        self.request_ids: list[str] = []
        self.statuses: set[int] = set()

    def same(
        self,
        method: str,
        path: str,
        headers: Headers = (),  # type: ignore[assignment]
        body: bytes | list[bytes] | None = None,
        before: Callable[[World], threading.Thread] | None = None,
    ) -> tuple[int, Any]:
        """``path`` and ``headers`` may name ``{a}`` and ``{a_token}`` (and b, c), and
        ``path`` the messages sent, ``{m0}``, ``{m1}``...: each world's own. ``before(world)`` starts a thread right before each world's request,
        joined before the answers are compared. The answer's status and JSON body (None
        when it is not JSON)."""
        request_id = f"hot-path-{len(self.request_ids):04d}"
        self.request_ids.append(request_id)
        answers = []
        started: list[threading.Thread] = []
        for world in self.worlds:
            own = {name: device_id for name, (device_id, _) in world.phones.items()}
            own.update({f"{name}_token": token for name, (_, token) in world.phones.items()})
            own.update(world.messages)
            if before is not None:
                started.append(before(world))
            sent_headers = [(name, value.format(**own)) for name, value in headers]
            answers.append(exchange(world, method, path.format(**own), sent_headers, body, request_id))
        for thread in started:  # what it did (a send) names an id the answer may hold
            thread.join()
        told = [self.told(world, answer) for world, answer in zip(self.worlds, answers, strict=True)]
        what = f"{method} {path} {headers} {body[:80] if isinstance(body, bytes) else body}"
        assert told[0][0] == told[1][0], f"{what}: {told[0]} != {told[1]}"
        assert [name for name, _ in told[0][1]] == [name for name, _ in told[1][1]], what
        for (name, hot_value), (_, reference_value) in zip(told[0][1], told[1][1], strict=True):
            assert abs(int(hot_value) - int(reference_value)) <= 1, (what, name, hot_value, reference_value)
        self.statuses.add(answers[0].status)
        try:
            return answers[0].status, json.loads(told[0][0][-1])
        except ValueError:
            return answers[0].status, None

    @staticmethod
    def told(world: World, answer: Exchange) -> tuple[tuple[Any, ...], list[tuple[str, bytes]]]:
        """What must be the same to the byte, and the seconds-from-now headers apart."""
        headers = []
        seconds = []
        for name, value in answer.headers:
            if name in SECONDS_HEADERS:
                seconds.append((name, value))
                value = b"<seconds>"
            elif name == "date":  # granian's, to the second
                value = b"<date>"
            headers.append((name, world.told(value)))
        seconds += [("body", found) for found in SECONDS_IN_BODY.findall(answer.body)]
        body = SECONDS_IN_BODY.sub(b"try again in <seconds> s", world.told(answer.body))
        return (answer.status, answer.reason, headers, body), seconds


def access_lines(world: World, request_ids: list[str]) -> list[dict[str, Any]]:
    """The server's access lines of these requests, in their order, without what differs
    from run to run (time, duration, process id), ids and tokens as what they stand for."""
    by_id: dict[str, dict[str, Any]] = {}
    for line in world.server.stderr().splitlines():
        if '"connecfy.access"' not in line:
            continue
        entry = json.loads(line)
        for varying in ("ts", "duration_ms", "pid"):
            entry.pop(varying)
        by_id[entry["request_id"]] = json.loads(world.told(json.dumps(entry).encode()))
    return [by_id.get(request_id, {"missing": request_id}) for request_id in request_ids]


def phone_metrics(world: World) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The request counts and latency counts of the phone's routes, and the claim counters."""
    reply = httpx.get(f"{world.server.base_url}/metrics")
    assert reply.status_code == 200, reply.text
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            labels = dict(sample.labels)
            route = labels.get("route", "")
            phone_route = route.startswith("/api/devices/{device_id}/") or route == "/api/sms/{message_id}/status/"
            counted = sample.name in ("connecfy_http_requests_total", "connecfy_http_request_duration_seconds_count")
            claims = sample.name in ("connecfy_claims_total", "connecfy_claimed_messages_total")
            if (counted and phone_route) or claims or sample.name == "connecfy_long_polls_waiting":
                found[(sample.name, frozenset(labels.items()))] = sample.value
    return found


def started(thread: threading.Thread) -> threading.Thread:
    thread.start()
    return thread


def test_the_hot_path_answers_as_litestar_does_over_http(worlds: tuple[World, World]) -> None:
    hot, reference = worlds
    step = Lockstep(hot, reference)
    tasks, heartbeat = "/api/devices/{a}/tasks/", "/api/devices/{a}/heartbeat/"
    token = [("X-Device-Token", "{a_token}")]
    ways = variants.credentials("{a_token}", "{b_token}")

    # Polls: every query, every way of sending the token, the path without its slash.
    for query in QUERIES:
        step.same("GET", f"{tasks}?{query}" if query else tasks, token)
    for headers in ways:
        step.same("GET", tasks, headers)
        step.same("GET", tasks.rstrip("/") + "?limit=2", headers)
    step.same("HEAD", tasks, token)
    step.same("GET", "/api/devices/{a}/task/", token)

    # Tasks handed over, one with the SIM asked for (omitted from the other).
    for world in worlds:
        world.send("a")
        world.send("a", sim_slot=2)
    status, handed = step.same("GET", f"{tasks}?limit=5", token)
    assert status == 200 and [task.get("sim_slot") for task in handed] == [None, 2], handed

    # Long polls: one that finds nothing, one woken by a send while it waits.
    assert step.same("GET", f"{tasks}?wait=1", token) == (200, [])
    status, woken = step.same(
        "GET", f"{tasks}?wait=10&limit=3", token, before=lambda world: started(threading.Timer(0.5, world.send, ("a",)))
    )
    assert status == 200 and len(woken) == 1, woken

    # Status reports on the three handed over (m0, m1, m2): plain ones, each body the hot
    # path hands on, other credentials, an unknown message.
    json_token = [*token, JSON_TYPE]
    for message, report in (
        ("m0", {"status": "sent", "sim_slot": 1}),
        ("m0", {"status": "delivered"}),
        ("m1", {"status": "failed", "error": "radio off", "retryable": True}),
        ("m2", {"status": "sent"}),
    ):
        status, out = step.same("POST", f"/api/sms/{{{message}}}/status/", json_token, json.dumps(report).encode())
        assert (status, out["status"]) == (200, "queued" if report.get("retryable") else report["status"]), out
    report_path = "/api/sms/{m2}/status/"
    delivered = json.dumps({"status": "delivered"}).encode()
    for headers, body in (
        (json_token, b'{"status": "bogus"}'),
        (json_token, b'{"status": "delivered", "sim_slot": "1"}'),
        (json_token, b"{not json"),
        (json_token, b""),
        (token, delivered),
        ([*token, ("Content-Type", "text/plain")], delivered),
        (json_token, [delivered[:5], delivered[5:]]),
        ([("X-Device-Token", "nope"), JSON_TYPE], delivered),
        ([("X-Device-Token", "{b_token}"), JSON_TYPE], delivered),
        ([JSON_TYPE], delivered),
    ):
        step.same("POST", report_path, headers, body)
    step.same("POST", report_path + "?x=1", json_token, delivered)
    step.same("POST", "/api/sms/01J00000000000000000000000/status/", json_token, delivered)

    # Heartbeats: every body, with a good token, another phone's and none; every way of
    # sending the token; in chunks; without the path's slash.
    for body, headers in bodies():
        for credential in ways[:1] + ways[-2:]:
            step.same("POST", heartbeat, credential + headers, body)
    whole = json.dumps(HEARTBEAT).encode()
    for credential in ways:
        step.same("POST", heartbeat, [*credential, JSON_TYPE], whole)
        step.same("POST", heartbeat.rstrip("/"), credential)
    status, beat = step.same("POST", heartbeat, [*token, JSON_TYPE], [whole[:5], whole[5:]])
    assert (status, beat["status"]) == (200, "ok")

    # The poll limiter: phone b polls with nothing to take until it is refused.
    limited = None
    for _ in range(40):
        status, limited = step.same("GET", "/api/devices/{b}/tasks/", [("X-Device-Token", "{b_token}")])
        if status == 429:
            break
    assert status == 429 and limited["code"] == "rate_limited", limited

    # A removed phone: its token, remembered by the server, is unknown from then on.
    c_token = [("X-Device-Token", "{c_token}")]
    assert step.same("GET", "/api/devices/{c}/tasks/", c_token)[0] == 200
    for world in worlds:
        removed = world.dashboard.delete(f"/api/devices/{world.phones['c'][0]}/", headers=world.csrf())
        assert removed.status_code == 204, removed.text
    assert step.same("GET", "/api/devices/{c}/tasks/", c_token)[0] == 401
    assert step.same("POST", "/api/devices/{c}/heartbeat/", c_token)[0] == 401
    assert step.same("GET", tasks, c_token)[0] == 401
    unknown = "/api/sms/01J00000000000000000000000/status/"
    assert step.same("POST", unknown, [*c_token, JSON_TYPE], delivered)[0] == 401

    assert step.statuses >= {200, 400, 401, 403, 404, 405, 413, 415, 429}

    # The access lines and the metrics of all that.
    deadline = time.monotonic() + 10  # a line is written once its response is sent
    while True:
        lines = [access_lines(world, step.request_ids) for world in worlds]
        if not any("missing" in line for found in lines for line in found) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for hot_line, reference_line in zip(*lines, strict=True):
        assert hot_line == reference_line
    routes = {line["route"] for line in lines[0]}
    assert "/api/devices/{device_id}/tasks/ (long poll)" in routes, routes
    metrics = phone_metrics(hot)
    assert any(dict(labels).get("route") == "/api/sms/{message_id}/status/" for _, labels in metrics), metrics
    assert metrics == phone_metrics(reference)


def test_a_long_poll_waiting_when_the_server_stops_is_answered_alike(worlds: tuple[World, World]) -> None:
    """SIGTERM answers a waiting phone ``200 []`` on either path."""
    answers: dict[str, tuple[int, bytes]] = {}

    def wait(world: World, name: str) -> None:
        device_id, token = world.phones["a"]
        reply = httpx.get(
            f"{world.server.base_url}/api/devices/{device_id}/tasks/?wait=30",
            headers={"X-Device-Token": token},
            timeout=20.0,
        )
        answers[name] = (reply.status_code, reply.content)

    waiters = [
        threading.Thread(target=wait, args=(world, name))
        for world, name in zip(worlds, ("hot", "reference"), strict=True)
    ]
    for waiter in waiters:
        waiter.start()
    time.sleep(1.0)
    for world in worlds:
        assert world.server.stop() == 0, world.server.output()
    for waiter in waiters:
        waiter.join(timeout=20)
    assert answers == {"hot": (200, b"[]"), "reference": (200, b"[]")}
