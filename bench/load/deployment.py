"""The server under test: a ``connecfy serve`` started by the bench, or one at ``--target``.

A local server uses its own private Redis, or one the bench started for it
(``bench.load.redis_nodes``: one node or a Redis Cluster), given as ``REDIS_URL``.
Either way the Redis processes are known, so each one's CPU is reported apart. A local
server gets settings scaled to the run: the auth limit out of the way (a swarm
pairs thousands of phones from one address), the server-wide poll limit, presence TTL
and lease shrunk by the time scale so that a phone polling ten times as often is
neither refused nor taken for offline. A target keeps its own settings; the bench
raises only its own accounts' limits, through the operator's endpoints.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis

from bench.load.redis_nodes import RedisNodes

READY_TIMEOUT = 60.0
LATENCY_THRESHOLD_MS = 20  # Redis's latency monitor notes events longer than this


ROOT = Path(__file__).resolve().parents[2]


def connecfy_command() -> list[str]:
    """``connecfy`` of this checkout: this Python running ``connecfy.cli``, with
    ``checkout_env``. (The ``connecfy`` script of an editable install imports the
    checkout it was installed from, which need not be this one.)"""
    return [sys.executable, "-m", "connecfy.cli"]


def checkout_env(env: dict[str, str], root: Path = ROOT) -> dict[str, str]:
    """``env`` with this checkout (or the one at ``root``) first on ``PYTHONPATH``, so the
    server, its workers and its background process run the code beside this bench."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers_200(port: int, path: str) -> bool:
    """Whether ``GET path`` on 127.0.0.1:``port`` answers 200 (a server coming up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def scaled_settings(time_scale: float) -> dict[str, str]:
    """``CONNECFY_*`` for a local server whose phones run ``1/time_scale`` times faster."""
    polls_per_minute = math.ceil(3 / time_scale)  # a phone polls every 20 s
    return {
        "CONNECFY_AUTH_PER_MINUTE": "1000000",
        "CONNECFY_AUTH_BURST": "1000000",
        "CONNECFY_SIGNUP_OPEN": "true",
        "CONNECFY_TASKS_PER_MINUTE": str(max(6, 4 * polls_per_minute)),
        "CONNECFY_TASKS_BURST": str(max(10, 4 * polls_per_minute)),
        "CONNECFY_PRESENCE_TTL_SECONDS": str(max(2, math.ceil(45 * time_scale))),
        "CONNECFY_LEASE_SECONDS": str(max(3, math.ceil(120 * time_scale))),
    }


@dataclass
class Deployment:
    base_url: str
    operator_email: str
    operator_password: str
    workers: int | None = None  # known only for a local server
    redis_url: str | None = None  # for memory, the no-op baseline and a restart
    server_pid: int | None = None  # for CPU: the process and all its children
    restart_command: str | None = None  # how to restart Redis on a target
    redis_nodes: RedisNodes | None = None  # a Redis (or Redis Cluster) the bench started

    @property
    def redis_kind(self) -> str:
        """``private`` (the server's own), ``single``, ``cluster``, or ``target``."""
        if self.redis_nodes is not None:
            return self.redis_nodes.kind
        return "target" if self.workers is None else "private"

    def processes(self) -> list[psutil.Process]:
        if self.server_pid is None:
            return []
        try:
            root = psutil.Process(self.server_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server and every child (workers, private Redis)."""
        if self.server_pid is None:
            return None
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def redis_cpu_seconds(self) -> dict[str, float]:
        """User + system CPU of each Redis process, by node (``host:port``, or
        ``private`` for a local server's own Redis); empty for a target."""
        if self.redis_nodes is not None:
            return self.redis_nodes.cpu_seconds()
        seconds: dict[str, float] = {}
        for process in self.processes():
            try:
                if process.name() == "redis-server":
                    times = process.cpu_times()
                    seconds["private"] = seconds.get("private", 0.0) + times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return seconds

    def process_memory(self) -> dict[str, Any]:
        """RSS and open files of each of the server's processes (serve, its workers, the
        background process; its private Redis apart), and their sums."""
        rows: list[dict[str, Any]] = []
        for process in self.processes():
            try:
                name = process.name()
                rows.append(
                    {"pid": process.pid, "name": name, "rss": process.memory_info().rss, "fds": process.num_fds()}
                )
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        redis_pids = set(self.redis_nodes.pids().values()) if self.redis_nodes else set()
        for pid in redis_pids:
            try:
                process = psutil.Process(pid)
                rows.append(
                    {"pid": pid, "name": process.name(), "rss": process.memory_info().rss, "fds": process.num_fds()}
                )
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        server = [r for r in rows if r["name"] != "redis-server"]
        redis = [r for r in rows if r["name"] == "redis-server"]
        return {
            "server_rss_bytes": sum(r["rss"] for r in server) if server else None,
            "redis_rss_bytes": sum(r["rss"] for r in redis) if redis else None,
            "processes": rows,
        }

    async def memory(self) -> dict[str, Any]:
        """The server's processes' RSS (``process_memory``) and Redis's ``used_memory``."""
        figures = await asyncio.to_thread(self.process_memory)
        figures["redis_used_memory"] = await self.redis_memory()
        return figures

    def _redis_urls(self) -> list[str]:
        """A URL of each Redis node: every node of a cluster the bench started, or the one URL known."""
        urls = [f"redis://{name}" for name in self.redis_nodes.names()] if self.redis_nodes else [self.redis_url]
        return [url for url in urls if url] if all(urls) else []

    async def watch_redis_latency(self) -> None:
        """Have each Redis node note every event that takes over
        :data:`LATENCY_THRESHOLD_MS` in its latency monitor (a slow command or script, an
        append-only file write or fsync, an expire cycle...), from now on, for
        :meth:`redis_latency`. Only on a Redis of the bench's or of the server it started:
        a target's configuration is not the bench's to change."""
        if self.redis_kind == "target":
            return
        for url in self._redis_urls():
            client = aioredis.from_url(url, socket_timeout=2)
            try:
                await client.config_set("latency-monitor-threshold", LATENCY_THRESHOLD_MS)
                await client.execute_command("LATENCY", "RESET")
            except (aioredis.RedisError, OSError):
                pass
            finally:
                await client.aclose()

    async def redis_latency(self, since: float, until: float) -> dict[str, dict[str, float]] | None:
        """The latency monitor's events between two moments (Unix seconds, whole ones as
        Redis keeps them), all nodes together: by event, how many and the longest (ms).
        None when it was not watched or cannot be read."""
        if self.redis_kind == "target":
            return None
        events: dict[str, dict[str, float]] = {}
        for url in self._redis_urls():
            client = aioredis.from_url(url, socket_timeout=2)
            try:
                for row in await client.execute_command("LATENCY", "LATEST"):
                    name = row[0].decode() if isinstance(row[0], bytes) else str(row[0])
                    for at, ms in await client.execute_command("LATENCY", "HISTORY", name):
                        if int(since) <= int(at) <= until:
                            found = events.setdefault(name, {"count": 0, "max_ms": 0})
                            found["count"] += 1
                            found["max_ms"] = max(found["max_ms"], int(ms))
            except (aioredis.RedisError, OSError):
                return None
            finally:
                await client.aclose()
        return events

    async def redis_memory(self) -> int | None:
        """``used_memory`` of the Redis, summed over the nodes of a cluster the bench started."""
        urls = self._redis_urls()
        if not urls:
            return None
        total = 0
        for url in urls:
            client = aioredis.from_url(url, socket_timeout=2)
            try:
                total += int((await client.info("memory"))["used_memory"])
            except (aioredis.RedisError, OSError):
                return None
            finally:
                await client.aclose()
        return total

    async def restart_redis(self) -> None:
        """Restart Redis. A local server's private Redis is shut down cleanly (its
        append-only file flushed) and ``connecfy serve`` starts it again; a target's
        is restarted by ``--redis-restart-command``."""
        if self.restart_command:
            process = await asyncio.create_subprocess_shell(self.restart_command)
            if await process.wait() != 0:
                raise RuntimeError(f"{self.restart_command!r} exited with {process.returncode}")
            return
        if not self.redis_url:
            raise RuntimeError("no way to restart Redis: give --redis-restart-command")
        client = aioredis.from_url(self.redis_url)
        try:
            await client.shutdown()
        except (aioredis.ConnectionError, OSError):
            pass  # the connection drops as Redis exits
        finally:
            await client.aclose()


class LocalServer:
    """``connecfy serve`` in a temp data dir, with its private Redis and an operator."""

    def __init__(
        self,
        *,
        workers: int,
        time_scale: float,
        extra: dict[str, str] | None = None,
        redis_nodes: RedisNodes | None = None,
        root: Path = ROOT,
    ) -> None:
        self.workers = workers
        self.root = root  # the checkout whose code the server runs
        self.settings = {**scaled_settings(time_scale), **(extra or {})}
        self.redis_nodes = redis_nodes
        if redis_nodes is not None:
            self.settings["REDIS_URL"] = redis_nodes.url
        self.dir = Path(tempfile.mkdtemp(prefix="connecfy-bench-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Deployment:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CONNECFY_")}
        env = checkout_env({**env, **self.settings}, self.root)
        with open(self.dir / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    *connecfy_command(),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.dir),
                    "--workers",
                    str(self.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        base_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while not answers_200(self.port, "/readyz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"connecfy serve did not start:\n{self.log()}")
            time.sleep(0.2)
        email, password = "operator@bench.invalid", "bench-operator-password"
        created = subprocess.run(
            [
                *connecfy_command(),
                "operator",
                "create",
                "--email",
                email,
                "--password-stdin",
                "--data-dir",
                str(self.dir),
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"operator create failed: {created.stdout}{created.stderr}")
        socket_path = (self.dir / "redis" / "redis.sock").resolve()
        return Deployment(
            base_url,
            email,
            password,
            workers=self.workers,
            redis_url=self.redis_nodes.url if self.redis_nodes else f"unix://{socket_path}",
            server_pid=self.process.pid,
            redis_nodes=self.redis_nodes,
        )

    def log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, keep_log: Path | None = None) -> int | None:
        """SIGTERM and wait; the data dir is removed (its server log copied to
        ``keep_log`` first, when given). Returns the exit status."""
        status = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        elif self.process is not None:
            status = self.process.returncode
        if keep_log is not None:
            shutil.copyfile(self.dir / "server.log", keep_log)
        shutil.rmtree(self.dir, ignore_errors=True)
        return status
