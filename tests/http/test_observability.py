"""Metrics, request ids and JSON logs, against the real ``connecfy serve`` with two workers.

One server with a metrics token for most tests; a second one with a 2 s message TTL and
no token for the sweep counters. /metrics and unknown paths are requested with plain
httpx (not ``Api``), since ``Api`` records paths for the OpenAPI check.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import api.devices
from api.observability import GAUGES_MAX_AGE_SECONDS
from tests.support.e2e_server import Api, ServerProcess, expect, expect_error

TO = "+15551234567"
PASSWORD = "correct horse battery staple"
TOKEN = "metrics-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GENERATED_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TASKS_ROUTE = "/api/devices/{device_id}/tasks/"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connecfy-observability")
    process = ServerProcess(
        data_dir, workers=2, settings={"CONNECFY_METRICS_TOKEN": TOKEN}, separate_stderr=True
    ).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def scrape(server: ServerProcess, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(f"{server.base_url}/metrics", headers=AUTH if headers is None else headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_counted(samples: Samples, route: str, method: str, status: int) -> float:
    return value(samples, "connecfy_http_requests_total", route=route, method=method, status=str(status))


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line on the server's stderr, each of which must be one JSON object."""
    lines = []
    for line in server.stderr().splitlines():
        if line.strip():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            lines.append(entry)
    return lines


def access_lines(server: ServerProcess, request_id: str, *, wait: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        found = [e for e in log_lines(server) if e["logger"] == "connecfy.access" and e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def signup(server: ServerProcess, account_type: str) -> Api:
    user = Api(server.base_url)
    user.account = expect(
        user.post(
            "/api/auth/signup/",
            json={
                "email": f"obs-{uuid.uuid4().hex[:10]}@example.com",
                "password": PASSWORD,
                "account_type": account_type,
            },
        ),
        201,
    )
    return user


def pair(server: ServerProcess, owner: Api) -> tuple[str, Api]:
    code = expect(owner.post("/api/devices/pairing-codes/"), 201)["code"]
    registered = expect(
        Api(server.base_url).post(
            "/api/devices/register/", json={"code": code, "device_name": "Pixel 7", "phone_number": TO}
        ),
        201,
    )
    return registered["device_id"], Api(server.base_url, **{"X-Device-Token": registered["device_token"]})


# Request counts and latency -------------------------------------------------------------


def test_request_counts_add_up_across_both_workers(server: ServerProcess) -> None:
    before = scrape(server)
    made = 0
    pids: set[int] = set()
    ids: list[str] = []
    # New connection each time, until both workers have answered some (each logs its pid).
    while made < 40 or (len(pids) < 2 and made < 600):
        rid = f"count-{made}"
        response = httpx.get(f"{server.base_url}/healthz", headers={"X-Request-ID": rid})
        assert response.status_code == 200
        ids.append(rid)
        made += 1
        if made % 20 == 0:
            pids = {
                e["pid"]
                for e in log_lines(server)
                if e["logger"] == "connecfy.access" and str(e.get("request_id", "")).startswith("count-")
            }
    assert len(pids) == 2, f"one worker answered all {made} requests: {pids}"
    for _ in range(3):
        assert httpx.get(f"{server.base_url}/api/nothing-here/").status_code == 404
    assert httpx.delete(f"{server.base_url}/healthz").status_code == 405
    assert httpx.get(f"{server.base_url}/api/stats/").status_code == 401

    # Every scrape, whichever worker answers it, sees the sum over both.
    for _ in range(4):
        after = scrape(server)
        assert (
            requests_counted(after, "/healthz", "GET", 200) - requests_counted(before, "/healthz", "GET", 200) == made
        )
        assert requests_counted(after, "unmatched", "GET", 404) - requests_counted(before, "unmatched", "GET", 404) == 3
        assert requests_counted(after, "unmatched", "DELETE", 405) >= 1
        assert requests_counted(after, "/api/stats/", "GET", 401) >= 1

    # The latency histogram: every bucket, cumulative, +Inf equal to the count.
    buckets = {
        dict(labels)["le"]: v
        for (name, labels), v in after.items()
        if name == "connecfy_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == "/healthz"
        and dict(labels)["method"] == "GET"
    }
    assert {"0.001", "0.01", "0.1", "1.0", "+Inf"} <= set(buckets), buckets
    ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(ordered)), ordered
    count = value(after, "connecfy_http_request_duration_seconds_count", route="/healthz", method="GET")
    assert buckets["+Inf"] == count >= made
    assert value(after, "connecfy_http_request_duration_seconds_sum", route="/healthz", method="GET") > 0


# Gauges from Redis, and claims -----------------------------------------------------------


def claims_wired() -> bool:
    return "claimed(" in inspect.getsource(api.devices)


def test_queue_depths_devices_online_and_claims(server: ServerProcess) -> None:
    owner = signup(server, "self_managed")
    first, first_phone = pair(server, owner)
    second, second_phone = pair(server, owner)
    expect(first_phone.post(f"/api/devices/{first}/heartbeat/", json={"battery": 80}), 200)
    for i in range(3):
        expect(owner.post("/api/sms/send/", json={"device_id": first, "to": TO, "message": f"device {i}"}), 202)
    key = expect(owner.post("/api/api-keys/", json={"name": "backend"}), 201)["api_key"]
    for i in range(2):
        expect(
            Api(server.base_url).post(
                "/api/external/send/", json={"api_key": key, "to": TO, "message": f"own pool {i}"}
            ),
            202,
        )
    api_only = signup(server, "api_only")
    for i in range(4):
        expect(api_only.post("/api/sms/send/", json={"to": TO, "message": f"platform {i}"}), 202)

    time.sleep(GAUGES_MAX_AGE_SECONDS + 0.1)  # each worker reads the gauges once a second at most
    samples = scrape(server)
    assert value(samples, "connecfy_redis_up") == 1
    assert value(samples, "connecfy_queued_messages", queue="device", shard="account") == 3
    assert value(samples, "connecfy_queued_messages", queue="pool", shard="account") == 2
    assert value(samples, "connecfy_queued_messages", queue="pool", shard="platform") == 4
    assert value(samples, "connecfy_queued_messages", queue="device", shard="platform") == 0
    assert value(samples, "connecfy_devices", shard="account") == 2
    assert value(samples, "connecfy_devices_online", shard="account") == 1
    assert value(samples, "connecfy_devices_online", shard="platform") == 0
    # The pools' messages next in line were queued over a second ago.
    assert 1 <= value(samples, "connecfy_pool_wait_seconds", shard="platform") < 60
    assert 1 <= value(samples, "connecfy_pool_wait_seconds", shard="account") < 60
    assert value(samples, "connecfy_webhook_attempts_total", outcome="disabled") == 0
    assert ("connecfy_webhook_attempts_total", frozenset({("outcome", "disabled")})) in samples

    expect(second_phone.post(f"/api/devices/{second}/heartbeat/", json={}), 200)
    tasks = expect(first_phone.get(f"/api/devices/{first}/tasks/", params={"limit": 2}), 200)
    assert len(tasks) == 2
    time.sleep(GAUGES_MAX_AGE_SECONDS + 0.1)
    after = scrape(server)
    assert value(after, "connecfy_devices_online", shard="account") == 2
    assert value(after, "connecfy_queued_messages", queue="device", shard="account") == 1
    assert requests_counted(after, TASKS_ROUTE, "GET", 200) == 1
    assert not [labels for (_, labels) in after if any(first in v or second in v for _, v in labels)], (
        "a device id leaked into a label"
    )
    if claims_wired():
        assert value(after, "connecfy_claims_total") - value(samples, "connecfy_claims_total") == 1
        assert value(after, "connecfy_claimed_messages_total") - value(samples, "connecfy_claimed_messages_total") == 2
    for client in (owner, first_phone, second_phone, api_only):
        client.close()


# The metrics token ------------------------------------------------------------------------


def test_metrics_need_the_token_when_one_is_set(server: ServerProcess) -> None:
    url = f"{server.base_url}/metrics"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        response = httpx.get(url, headers=headers)
        expect_error(response, 401, "not_authenticated")
        assert GENERATED_ID.fullmatch(response.headers["x-request-id"])
    assert httpx.get(url, headers=AUTH).status_code == 200
    assert "connecfy_http_requests_total" in httpx.get(url, headers={"authorization": f"bearer {TOKEN}"}).text
    schema = httpx.get(f"{server.base_url}/schema/openapi.json").json()
    assert "/metrics" not in schema["paths"]


# Request ids and logs ---------------------------------------------------------------------


def test_request_id_is_echoed_or_generated_on_every_answer(server: ServerProcess) -> None:
    base = server.base_url
    for rid in ("abc-123", "A.b_c-9", "x" * 64):
        response = httpx.get(f"{base}/healthz", headers={"X-Request-ID": rid})
        assert response.headers["x-request-id"] == rid
    seen = set()
    for bad in ("", "has space", "x" * 65, "semi;colon", "ünï"):
        response = httpx.get(f"{base}/healthz", headers={"X-Request-ID": bad.encode()})
        generated = response.headers["x-request-id"]
        assert generated != bad and GENERATED_ID.fullmatch(generated), generated
        seen.add(generated)
    assert len(seen) == 5, "each request gets its own id"
    # Errors carry it too: 401, 404, 405, and a body the app refuses.
    for response in (
        httpx.get(f"{base}/api/stats/", headers={"X-Request-ID": "err-401"}),
        httpx.get(f"{base}/no/such/path", headers={"X-Request-ID": "err-404"}),
        httpx.put(f"{base}/healthz", headers={"X-Request-ID": "err-405"}),
        httpx.post(
            f"{base}/api/devices/register/",
            content=b"{",
            headers={"X-Request-ID": "err-400", "Content-Type": "application/json"},
        ),
    ):
        assert response.status_code >= 400
        assert response.headers["x-request-id"] == f"err-{response.status_code}", response.headers


def test_log_lines_are_json_with_the_request_id(server: ServerProcess) -> None:
    rid = "log-" + uuid.uuid4().hex
    response = httpx.get(
        f"{server.base_url}/api/devices/{uuid.uuid4().hex}/tasks/",
        headers={"X-Request-ID": rid, "X-Device-Token": "not-a-token"},
    )
    assert response.status_code == 401
    [line] = access_lines(server, rid)
    assert line["level"] == "info" and line["message"].startswith("GET /api/devices/")
    assert line["method"] == "GET" and line["route"] == TASKS_ROUTE and line["status"] == 401
    assert line["path"] == response.request.url.path
    assert line["client"] == "127.0.0.1" and line["bytes"] == len(response.content)
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 5000
    assert abs((datetime.now(UTC) - datetime.fromisoformat(line["ts"])).total_seconds()) < 30
    entries = log_lines(server)  # every line on stderr parsed as one JSON object
    assert all({"ts", "level", "logger", "message", "pid"} <= set(e) for e in entries)
    assert any(e["logger"].startswith("_granian") for e in entries), "granian's own lines are JSON too"
    assert "forwarded_for" not in line
    # A proxy's X-Forwarded-For is logged as received, cut to 512 characters, like the path.
    rid = "fwd-" + uuid.uuid4().hex
    httpx.get(
        f"{server.base_url}/healthz/" + "x" * 2000,
        headers={"X-Request-ID": rid, "X-Forwarded-For": "198.51.100.7, " + "9" * 1000},
    )
    [line] = access_lines(server, rid)
    assert line["forwarded_for"] == ("198.51.100.7, " + "9" * 1000)[:512]
    assert len(line["path"]) == 512 and line["status"] == 404


def test_each_worker_settles_its_collector_and_times_its_pauses(server: ServerProcess) -> None:
    """Once its app has started, each worker freezes the app's objects out of later
    collections and says so; every worker's collections are timed in /metrics."""
    settled = [e for e in log_lines(server) if e["message"].startswith("collector settled: ")]
    assert len({e["pid"] for e in settled}) == 2, settled  # both workers
    assert all(int(e["message"].split()[2]) > 10_000 for e in settled), settled
    for _ in range(50):  # requests make objects, which make young collections
        assert httpx.get(f"{server.base_url}/api/stats/").status_code == 401
    samples = scrape(server)
    young = samples.get(
        ("connecfy_gc_pause_seconds_count", frozenset({("process", "worker"), ("generation", "0")})), 0.0
    )
    assert young > 0, sorted(name for name, _ in samples if name.startswith("connecfy_gc"))


# Sweeps -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_ttl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connecfy-observability-ttl")
    process = ServerProcess(data_dir, workers=2, settings={"CONNECFY_MESSAGE_TTL_SECONDS": "2"}).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def test_sweep_counters_move_when_a_message_expires(short_ttl_server: ServerProcess) -> None:
    before = scrape(short_ttl_server, headers={})  # no token set: open
    user = signup(short_ttl_server, "api_only")
    expect(user.post("/api/sms/send/", json={"to": TO, "message": "nobody will send me"}), 202)
    time.sleep(GAUGES_MAX_AGE_SECONDS + 0.1)
    assert value(scrape(short_ttl_server, headers={}), "connecfy_queued_messages", queue="pool", shard="platform") == 1
    deadline = time.monotonic() + 15
    samples = before
    while time.monotonic() < deadline:
        samples = scrape(short_ttl_server, headers={})
        if value(samples, "connecfy_swept_messages_total", outcome="expired") >= 1:
            break
        time.sleep(0.25)
    assert value(samples, "connecfy_swept_messages_total", outcome="expired") == 1
    assert value(samples, "connecfy_swept_messages_total", outcome="lost") == 0
    assert value(samples, "connecfy_sweeps_total") > value(before, "connecfy_sweeps_total")
    time.sleep(GAUGES_MAX_AGE_SECONDS + 0.1)
    samples = scrape(short_ttl_server, headers={})
    assert value(samples, "connecfy_queued_messages", queue="pool", shard="platform") == 0
    user.close()


# 500 and 503, in process: the app's own error handlers inside the wrapper ------------------


def test_server_errors_carry_a_request_id_too() -> None:
    from litestar import Litestar, get
    from litestar.testing import TestClient
    from redis.exceptions import ConnectionError as RedisConnectionError

    from api.errors import exception_handlers
    from api.observability import instrument

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    @get("/redis-down", sync_to_thread=False)
    def redis_down() -> None:
        raise RedisConnectionError("connection refused")

    app = instrument(Litestar([boom, redis_down], exception_handlers=exception_handlers(), logging_config=None))
    with TestClient(app) as client:
        for path, status in (("/boom", 500), ("/redis-down", 503)):
            response = client.get(path, headers={"X-Request-ID": f"in-process-{status}"})
            expect_error(response, status)
            assert response.headers["x-request-id"] == f"in-process-{status}"


def test_made_up_methods_share_one_label(server: ServerProcess) -> None:
    for method in ("FOO0", "FOO1", "BAR"):
        assert httpx.request(method, f"{server.base_url}/nothing/here").status_code in (404, 405)
    samples = scrape(server)
    methods = {dict(labels)["method"] for name, labels in samples if name == "connecfy_http_requests_total"}
    assert "other" in methods and not methods & {"FOO0", "FOO1", "BAR"}, methods
