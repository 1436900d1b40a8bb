"""A real Redis Cluster on loopback for the tests: three primaries with a replica each.

:class:`RedisClusterProcess` starts six ``redis-server --cluster-enabled yes`` (each in
its own directory, append-only off, no snapshots), joins them with ``redis-cli --cluster
create ... --cluster-replicas 1`` and waits until every node says ``cluster_state:ok``,
knows all six, and every primary has its replica attached (a replica shows in ``CLUSTER
NODES`` a second or two after the create). ``--cluster-node-timeout 2000
--cluster-replica-validity-factor 0``: a primary killed with :meth:`kill_primary` has its
replica promoted and the cluster ``ok`` again within about 4 s; without the validity
factor an idle replica may refuse to take over. :meth:`flush` empties every primary
(what each test starts from) and waits until their replicas have followed.

Ports: each node listens on a free loopback port below Linux's ephemeral range whose
cluster bus port (port + 10000) is free too, so no outgoing connection takes either while
the cluster runs. Each node gets SIGTERM if the thread that started it ends, so a killed
test run leaves no cluster behind.

A missing ``redis-cli`` is an error, never a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from connecfy.redis_server import RedisServer

HOST = "127.0.0.1"
PORTS = (10_000, 22_000)  # node ports drawn from here; bus ports are 10000 higher


def redis_cli_for(binary: str) -> str:
    """The ``redis-cli`` beside ``binary`` (Debian puts both in /usr/bin), else the one on
    PATH; raises when there is none."""
    beside = Path(binary).with_name("redis-cli")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError(f"no redis-cli beside {binary} or on PATH: a Redis Cluster needs it to be created")
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_port(taken: frozenset[int] | set[int] = frozenset()) -> int:
    """A loopback port for a cluster node: free, not in ``taken``, below the ephemeral
    range, with its bus port (10000 higher) free too."""
    for _ in range(1000):
        port = random.randrange(*PORTS)
        if not {port, port + 10_000} & taken and _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class Node:
    """One ``redis-server --cluster-enabled yes`` process (a :class:`RedisServer`)."""

    def __init__(self, binary: str, port: int, data_dir: Path, node_timeout_ms: int) -> None:
        self.server = RedisServer(
            data_dir,
            binary=binary,
            port=port,
            appendonly=False,
            cluster=True,
            exit_with_parent=True,
            options=(
                *("--cluster-node-timeout", str(node_timeout_ms), "--cluster-replica-validity-factor", "0"),
                # A replica's first sync starts at once (diskless sync waits 5 s by default).
                *("--repl-diskless-sync-delay", "0"),
            ),
        )
        self._client: redis.Redis | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    @property
    def name(self) -> str:
        """As redis-py names a node: ``host:port``."""
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def client(self) -> redis.Redis:
        """A blocking client of this node alone (no cluster redirections)."""
        if self._client is None:
            self._client = redis.Redis(host=HOST, port=self.port, socket_timeout=5, socket_connect_timeout=5)
        return self._client

    def start(self, timeout: float = 10.0) -> None:
        self.server.start(timeout)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.data_dir / "redis.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def info(self, section: str) -> dict[str, Any]:
        return dict(self.client.info(section))

    def cluster_info(self) -> dict[str, str]:
        raw = self.client.execute_command("CLUSTER INFO")
        if isinstance(raw, dict):  # redis-py may parse it
            return {_text(k): _text(v) for k, v in raw.items()}
        return dict(line.strip().split(":", 1) for line in _text(raw).splitlines() if ":" in line)

    def role(self) -> list[Any]:
        """``ROLE``: ``[b"master", offset, [[host, port, offset], ...]]`` for a primary,
        ``[b"slave", host, port, state, offset]`` for a replica."""
        return list(self.client.execute_command("ROLE"))

    def is_primary(self) -> bool:
        return _text(self.role()[0]) == "master"

    def kill(self) -> None:
        """``kill -9``: no shutdown, no goodbye to the other nodes."""
        self._close_client()
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self) -> None:
        """Ask it to shut down (SIGTERM) without waiting; :meth:`stop` waits."""
        self._close_client()
        if self.running:
            assert self.process is not None
            self.process.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and wait for it to end (SIGKILL after ``timeout`` seconds)."""
        self._close_client()
        self.server.stop(timeout)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RedisClusterProcess:
    """``primaries`` primaries with ``replicas`` replicas each, on loopback, in ``root``.

    ``start()`` returns once the cluster is whole (see :meth:`wait_ok`); ``stop()`` ends
    every node. Usable as a context manager."""

    def __init__(
        self,
        binary: str,
        root: str | os.PathLike[str],
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
    ) -> None:
        self.binary = binary
        self.cli = redis_cli_for(binary)
        self.root = Path(root)
        self.primary_count = primaries
        self.replica_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []

    # Where it is ---------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        """Every running node, for ``RedisCluster(startup_nodes=...)``."""
        return [ClusterNode(HOST, node.port) for node in self.nodes if node.running]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` of one running node (any node finds the others)."""
        return f"redis://{HOST}:{self.live_nodes()[0].port}"

    def client(self, **options: Any) -> RedisCluster:
        """redis-py's cluster client, found from one node's URL as a server given
        ``REDIS_URL`` finds it (``initialize()`` it, or send a command, before asking it
        about nodes)."""
        return RedisCluster.from_url(self.url, **options)

    def live_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.running]

    def primaries(self) -> list[Node]:
        """The running nodes that are primaries now (a failover changes which)."""
        return [node for node in self.live_nodes() if node.is_primary()]

    def replicas(self) -> list[Node]:
        return [node for node in self.live_nodes() if not node.is_primary()]

    def node_at(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def owner_port(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        view: dict[str, dict[str, Any]] = self.live_nodes()[0].client.execute_command("CLUSTER NODES")
        for name, entry in view.items():
            if any(int(r[0]) <= slot <= int(r[-1]) for r in entry["slots"]):
                return int(name.rsplit(":", 1)[1])
        raise AssertionError(f"no node serves slot {slot}")

    # Life ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisClusterProcess:
        total = self.primary_count * (1 + self.replica_count)
        try:
            taken: set[int] = set()
            for _ in range(total):
                self.nodes.append(self._start_node(taken))
            create = subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(node.name for node in self.nodes),
                    "--cluster-replicas",
                    str(self.replica_count),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
            if create.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed ({create.returncode}):\n"
                    f"{create.stdout[-2000:]}\n{create.stderr[-2000:]}"
                )
            self.wait_ok(timeout=timeout)
            # Redis 7.0 reports a replica "loading" in CLUSTER SHARDS (which redis-py's
            # client reads to find replicas) until its primary has written something:
            # one write, followed by every replica, and the client sees them all.
            self.flush()
            self.wait_ok(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, taken: set[int]) -> Node:
        last_error: Exception | None = None
        for _ in range(20):
            port = cluster_port(taken)
            node = Node(self.binary, port, self.root / str(port), self.node_timeout_ms)
            try:
                node.start()
            except (RuntimeError, TimeoutError) as exc:  # lost a race for the port: try another
                last_error = exc
                continue
            taken |= {port, port + 10_000}
            return node
        raise RuntimeError(f"could not start a cluster node with {self.binary}: {last_error}")

    def wait_ok(self, *, timeout: float = 30.0, replicas: bool = True) -> None:
        """Wait until every running node says ``cluster_state:ok``, knows every node
        started and sees every slot served by a running primary that nobody counts
        failed, and (``replicas``) sees each primary with its replicas, each replica in
        sync and ``online`` in ``CLUSTER SHARDS``. After :meth:`kill_primary` the promoted replica has none: pass
        ``replicas=False`` to wait for the failover."""
        deadline = time.monotonic() + timeout
        while True:
            problem = self._not_ok(replicas)
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster is not whole after {timeout}s: {problem}")
            time.sleep(0.05)

    def _not_ok(self, replicas: bool) -> str | None:
        """What keeps the cluster from being whole, or None."""
        live = {node.name for node in self.live_nodes()}
        try:
            for node in self.live_nodes():
                info = node.cluster_info()
                if info.get("cluster_state") != "ok":
                    return f"{node.name}: cluster_state {info.get('cluster_state')}"
                problem = self._view_problem(node, live, replicas)
                if problem is not None:
                    return problem
            if replicas:
                for node in self.replicas():
                    role = node.role()
                    if _text(role[3]) != "connected":
                        return f"replica {node.name} is {_text(role[3])}"
                for shard in self.live_nodes()[0].client.execute_command("CLUSTER SHARDS"):
                    for entry in shard[b"nodes"]:
                        if entry[b"health"] != b"online":
                            return f"node {_text(entry[b'port'])} is {_text(entry[b'health'])} in CLUSTER SHARDS"
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _view_problem(self, node: Node, live: set[str], replicas: bool) -> str | None:
        """What is wrong with ``node``'s ``CLUSTER NODES``: every slot must be served by a
        running, unfailed primary, and (``replicas``) each primary have its replicas."""
        view: dict[str, dict[str, Any]] = node.client.execute_command("CLUSTER NODES")
        where = f"as {node.name} sees it"
        if len(view) != len(self.nodes):
            return f"{len(view)} nodes known of {len(self.nodes)}, {where}"
        owners = {name: entry for name, entry in view.items() if entry["slots"]}
        served = sum(int(r[-1]) - int(r[0]) + 1 for entry in owners.values() for r in entry["slots"])
        if served != 16384:
            return f"{served} slots served, {where}"
        for name, entry in owners.items():
            if name not in live or "fail" in entry["flags"]:
                return f"slots on {name} ({entry['flags']}), {where}"
        if replicas:
            ids = {entry["node_id"]: name for name, entry in owners.items()}
            followers = {name: 0 for name in owners}
            for name, entry in view.items():
                flags = entry["flags"]
                if "slave" in flags and "fail" not in flags and name in live and entry["master_id"] in ids:
                    followers[ids[entry["master_id"]]] += 1
            if len(owners) != self.primary_count or set(followers.values()) != {self.replica_count}:
                return f"replicas per primary {followers}, {where}"
        return None

    def flush(self) -> None:
        """Empty every primary (``FLUSHALL``) and wait until their replicas have followed:
        what a test starts from. Scripts stay loaded."""
        for node in self.primaries():
            node.client.flushall()
            attached = len(node.role()[2])
            if attached:
                node.client.execute_command("WAIT", attached, 5000)

    def kill_primary(self, port: int | None = None) -> Node:
        """``kill -9`` the primary on ``port`` (by default the first running one) and
        return it; its replica takes over once the others count it failed (about 4 s,
        see :meth:`wait_ok`)."""
        primaries = self.primaries()
        if port is None:
            victim = primaries[0]
        else:
            victim = self.node_at(port)
            if victim not in primaries:
                raise ValueError(f"{victim.name} is not a running primary")
        victim.kill()
        return victim

    def stop(self) -> None:
        for node in self.nodes:  # all asked at once, then each waited for
            node.terminate()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
