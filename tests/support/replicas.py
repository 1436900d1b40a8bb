"""A real Redis with a replica of its own, for the tests of waiting for replicas
(``CONNECFY_REDIS_WAIT_REPLICAS``), and what those tests read off a Redis.

:class:`PrimaryWithReplica` starts two ``redis-server`` of one version, the second
``--replicaof`` the first, and returns once the replica is in sync. :func:`stopped` holds
a server with SIGSTOP (a replica that acknowledges nothing) and always resumes it.
:func:`wait_calls` is ``INFO commandstats``'s count of ``WAIT`` commands a server ran.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from connecfy.redis_server import RedisServer

READY_KEY = "{replica-ready}"


class PrimaryWithReplica:
    """A primary and one replica (append-only off, no snapshots) in ``root``."""

    def __init__(self, binary: str, root: Path) -> None:
        self.primary = RedisServer(
            root / "primary", binary=binary, appendonly=False, options=("--repl-diskless-sync-delay", "0")
        )
        self.replica: RedisServer | None = None
        self.root = root
        self.binary = binary

    def start(self, timeout: float = 10.0) -> PrimaryWithReplica:
        self.primary.start()
        try:
            self.replica = RedisServer(
                self.root / "replica",
                binary=self.binary,
                appendonly=False,
                options=("--replicaof", "127.0.0.1", str(self.primary.port)),
            ).start()
            # In sync once it acknowledges a write (WAIT counts the writes of its own
            # connection: a connection that wrote nothing is answered at once).
            primary = redis.Redis(port=self.primary.port, single_connection_client=True)
            try:
                deadline = time.monotonic() + timeout
                while True:
                    primary.set(READY_KEY, "1")
                    if primary.execute_command("WAIT", 1, 100) == 1:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the replica did not follow within {timeout} s")
                primary.delete(READY_KEY)
            finally:
                primary.close()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.replica is not None:
            self.replica.stop()
        self.primary.stop()

    def __enter__(self) -> PrimaryWithReplica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """``server`` held with SIGSTOP for the block, resumed (SIGCONT) whatever happens."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def wait_calls(client: Any) -> int:
    """How many ``WAIT`` commands the server of ``client`` (a blocking redis-py client
    of one server) has run."""
    return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
