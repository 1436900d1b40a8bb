"""A Redis the bench starts for the server under test: one node, or a Redis Cluster.

``--redis single`` starts one ``redis-server`` on a loopback TCP port; ``--redis
cluster`` starts ``--primaries`` (default 3) ``redis-server --cluster-enabled yes`` and
joins them with ``redis-cli --cluster create --cluster-replicas 0``. Both use Debian's
binaries (the ``redis-cli`` beside ``redis-server``), the settings of
``deploy/redis/connecfy.conf`` (append-only, ``appendfsync everysec``, ``noeviction``)
and a temp directory; the server the bench starts gets ``REDIS_URL`` of the first node
(any node finds the others). Each node's process is known, so a run can report the CPU
of each one (``psutil``: user + system seconds).

This is a bench's own, smaller copy of what ``tests/support/cluster.py`` does for the
tests (no replicas, no failover): bench imports ``connecfy`` and ``broker``, never
``tests``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import redis

from connecfy.redis_server import RedisServer, find_redis_server

HOST = "127.0.0.1"
PORTS = (10_000, 22_000)  # below Linux's ephemeral range; a node's bus port is 10000 higher
KINDS = ("single", "cluster")
DEBIAN_REDIS = "/usr/bin/redis-server"


def redis_binaries() -> tuple[str, str]:
    """(redis-server, redis-cli): Debian's when present, else what is on PATH."""
    server = DEBIAN_REDIS if Path(DEBIAN_REDIS).exists() else find_redis_server()
    cli = Path(server).with_name("redis-cli")
    found = str(cli) if cli.exists() else shutil.which("redis-cli")
    if found is None:
        raise RuntimeError(f"no redis-cli beside {server} or on PATH: a Redis Cluster needs it to be created")
    return server, found


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_node_port(taken: set[int]) -> int:
    for _ in range(200):
        port = random.randrange(*PORTS)
        if not {port, port + 10_000} & taken and _bindable(port) and _bindable(port + 10_000):
            taken |= {port, port + 10_000}
            return port
    raise RuntimeError("no free loopback port pair for a Redis node")


class RedisNodes:
    """``kind`` ``single`` (one node) or ``cluster`` (``primaries`` primaries, no replicas)."""

    def __init__(self, kind: str, *, primaries: int = 3, appendonly: bool = True) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.kind = kind
        self.primaries = primaries if kind == "cluster" else 1
        self.appendonly = appendonly
        self.binary, self.cli = redis_binaries()
        self.root = Path(tempfile.mkdtemp(prefix=f"connecfy-bench-redis-{kind}-"))
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}"

    def names(self) -> list[str]:
        return [f"{HOST}:{node.port}" for node in self.nodes]

    def pids(self) -> dict[str, int]:
        return {name: node.process.pid for name, node in zip(self.names(), self.nodes, strict=True) if node.process}

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds of each node so far (by ``host:port``)."""
        seconds: dict[str, float] = {}
        for name, pid in self.pids().items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[name] = times.user + times.system
        return seconds

    def start(self, timeout: float = 30.0) -> RedisNodes:
        taken: set[int] = set()
        options = ("--maxmemory-policy", "noeviction", "--appendfsync", "everysec")
        try:
            for _ in range(self.primaries):
                port = _free_node_port(taken)
                node = RedisServer(
                    self.root / str(port),
                    binary=self.binary,
                    port=port,
                    appendonly=self.appendonly,
                    cluster=self.kind == "cluster",
                    exit_with_parent=True,
                    options=options,
                )
                self.nodes.append(node.start())
            if self.kind == "cluster":
                self._create(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, timeout: float) -> None:
        created = subprocess.run(
            [self.cli, "--cluster", "create", *self.names(), "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({created.returncode}):\n{created.stdout[-2000:]}\n"
                f"{created.stderr[-2000:]}"
            )
        deadline = time.monotonic() + timeout
        while (problem := self._not_ok()) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster is not whole after {timeout}s: {problem}")
            time.sleep(0.05)

    def _not_ok(self) -> str | None:
        """What keeps the cluster from being whole (every node ``ok``, knowing every
        node, every slot served), or None."""
        for name, node in zip(self.names(), self.nodes, strict=True):
            with redis.Redis(host=HOST, port=node.port, socket_timeout=5) as client:
                raw = client.execute_command("CLUSTER INFO")
            if isinstance(raw, bytes):
                raw = raw.decode()
            info = raw if isinstance(raw, dict) else dict(line.split(":", 1) for line in raw.split() if ":" in line)
            info = {str(k): str(v).strip() for k, v in info.items()}
            if info.get("cluster_state") != "ok":
                return f"{name}: cluster_state {info.get('cluster_state')}"
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                return f"{name} knows {info.get('cluster_known_nodes')} nodes"
            if info.get("cluster_slots_ok") != "16384":
                return f"{name}: {info.get('cluster_slots_ok')} slots ok"
        return None

    def flush(self) -> None:
        """``FLUSHALL`` on every node (scripts stay loaded)."""
        for node in self.nodes:
            with redis.Redis(host=HOST, port=node.port, socket_timeout=30) as client:
                client.flushall()

    def slots(self) -> dict[str, str]:
        """Each node's slot ranges, ``host:port`` → ``"0-5460"``, for the report."""
        if self.kind != "cluster":
            return {name: "all" for name in self.names()}
        with redis.Redis(host=HOST, port=self.nodes[0].port, socket_timeout=5) as client:
            shards = client.execute_command("CLUSTER SLOTS")
        ranges: dict[str, list[str]] = {}
        for start, end, primary, *_ in shards:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            ranges.setdefault(f"{host}:{primary[1]}", []).append(f"{start}-{end}")
        return {name: ",".join(sorted(r, key=lambda s: int(s.split("-")[0]))) for name, r in ranges.items()}

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
