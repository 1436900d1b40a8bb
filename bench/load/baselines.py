"""What the machine can do at all, measured in the same run: the bare Litestar GET
(``bare_app``) and a no-op EVALSHA against the same Redis; and ``capacity``: each of
our endpoints driven to saturation the same way, as a ratio to the bare GET.

HTTP load comes from Debian's ``wrk`` (one thread, ``--connections`` connections, Lua
scripts in ``wrk/`` for per-device tokens and bodies): a Python load generator on this
2-core box would saturate before the server does. The no-op EVALSHA comes from
``bench/broker_bench.py``'s phase (one redis-py client, 32 tasks), the same client
stack every server worker uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.broker_bench import NoopPhase, run_round
from bench.load.deployment import answers_200, free_port

WRK_DIR = Path(__file__).resolve().parent / "wrk"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WrkResult:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    socket_errors: int
    messages_per_request: int = 1

    @property
    def messages_per_second(self) -> float:
        return self.requests_per_second * self.messages_per_request


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk is needed for the baselines (apt-get install wrk), or run with --no-baselines")
    return found


def run_wrk(
    name: str,
    url: str,
    *,
    seconds: float,
    connections: int,
    script: str,
    env: dict[str, str] | None = None,
    messages_per_request: int = 1,
) -> WrkResult:
    command = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / script),
        url,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, "BENCH_WRK_DIR": str(WRK_DIR), **(env or {})},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}{result.stderr}")
    figures = json.loads(lines[-1])
    return WrkResult(
        name,
        figures["requests"] / (figures["duration_us"] / 1e6),
        figures["p50_us"] / 1000,
        figures["p99_us"] / 1000,
        figures["max_us"] / 1000,
        figures["status_errors"],
        figures["socket_errors"],
        messages_per_request,
    )


class BareServer:
    """``bare_app`` on granian, as a separate process like ``connecfy serve``."""

    def __init__(self, workers: int, redis_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if redis_url:
            env["BENCH_REDIS_URL"] = redis_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.load.bare_app", "--port", str(self.port), "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not answers_200(self.port, "/bare"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the bare baseline server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def noop_evalsha(redis_url: str, seconds: float, concurrency: int = 32) -> float:
    """Calls per second of a no-op EVALSHA against ``redis_url`` (median of 3 rounds)."""
    client = aioredis.from_url(redis_url, max_connections=concurrency)
    try:
        phase = NoopPhase(client, "{bench}:noop")
        await phase.load()
        rounds = [await run_round(client, phase, concurrency, seconds / 3) for _ in range(3)]
        return sorted(r.calls_per_second for r in rounds)[1]
    finally:
        await client.aclose()


async def measure_baselines(redis_url: str | None, workers: int, seconds: float, connections: int) -> dict[str, Any]:
    """The bare Litestar GET (wrk) and, when Redis is reachable, the bare GET with one
    no-op EVALSHA (wrk) and the no-op EVALSHA from one client."""
    bare = BareServer(workers, redis_url)
    try:
        result = await asyncio.to_thread(
            run_wrk,
            "bare Litestar GET",
            bare.url + "/bare",
            seconds=seconds,
            connections=connections,
            script="fixed.lua",
            env={"BENCH_PATH": "/bare"},
        )
        with_redis = (
            await asyncio.to_thread(
                run_wrk,
                "bare GET + no-op EVALSHA",
                bare.url + "/bare-redis",
                seconds=seconds,
                connections=connections,
                script="fixed.lua",
                env={"BENCH_PATH": "/bare-redis"},
            )
            if redis_url
            else None
        )
    finally:
        bare.stop()
    noop = await noop_evalsha(redis_url, max(1.5, seconds / 2)) if redis_url else None
    return {
        "tool": f"wrk -t1 -c{connections}",
        "workers": workers,
        "bare": asdict(result),
        "bare_redis": asdict(with_redis) if with_redis else None,
        "noop_evalsha_per_second": noop,
    }


def write_body(payload: Any) -> str:
    handle, path = tempfile.mkstemp(suffix=".json", prefix="bench-body-")
    with os.fdopen(handle, "w") as out:
        json.dump(payload, out)
    return path


async def capacity(
    base_url: str, devices: list[tuple[str, str]], api_key: str, *, seconds: float, connections: int, batch_size: int
) -> list[WrkResult]:
    """Our endpoints at saturation, one after another: health, heartbeat, tasks (empty
    queues, the usual poll), the external send and the batch send."""
    devices_file = write_body([])
    Path(devices_file).write_text("".join(f"{d} {t}\n" for d, t in devices))
    heartbeat = write_body({"battery": 80, "android_version": "14", "app_version": "bench"})
    send = write_body({"api_key": api_key, "to": "+15551234567", "message": "capacity"})
    batch = write_body(
        {
            "api_key": api_key,
            "messages": [{"to": "+15551234567", "message": f"capacity {n}"} for n in range(batch_size)],
        }
    )
    runs: list[tuple[str, str, dict[str, str], int]] = [
        ("GET /healthz", "fixed.lua", {"BENCH_PATH": "/healthz"}, 1),
        (
            "POST heartbeat",
            "devices.lua",
            {
                "BENCH_DEVICES": devices_file,
                "BENCH_METHOD": "POST",
                "BENCH_PATH": "/api/devices/%s/heartbeat/",
                "BENCH_BODY_FILE": heartbeat,
            },
            1,
        ),
        (
            "GET tasks (empty)",
            "devices.lua",
            {"BENCH_DEVICES": devices_file, "BENCH_PATH": "/api/devices/%s/tasks/"},
            1,
        ),
        (
            "POST external send",
            "fixed.lua",
            {"BENCH_METHOD": "POST", "BENCH_PATH": "/api/external/send/", "BENCH_BODY_FILE": send},
            1,
        ),
        (
            f"POST batch of {batch_size}",
            "fixed.lua",
            {"BENCH_METHOD": "POST", "BENCH_PATH": "/api/external/send-batch/", "BENCH_BODY_FILE": batch},
            batch_size,
        ),
    ]
    results = []
    try:
        for name, script, env, size in runs:
            path = env.get("BENCH_PATH", "/")
            url = base_url + (path if "%s" not in path else "/")
            results.append(
                await asyncio.to_thread(
                    run_wrk,
                    name,
                    url,
                    seconds=seconds,
                    connections=connections,
                    script=script,
                    env=env,
                    messages_per_request=size,
                )
            )
            print(f"  {name:24} {results[-1].requests_per_second:10,.0f} req/s", file=sys.stderr)
    finally:
        for path in (devices_file, heartbeat, send, batch):
            os.unlink(path)
    return results
