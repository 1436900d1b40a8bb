"""``connecfy serve``: the HTTP API on granian, with a private Redis unless REDIS_URL is set,
and one ``connecfy background`` process for the sweeper, the history snapshotter and the
webhook dispatcher, so the request workers only serve requests.

Without ``REDIS_URL`` a private ``redis-server`` starts in ``<data dir>/redis`` with
append-only persistence, reachable only through its unix socket; every other
subcommand given the same ``--data-dir`` finds it there. It stops when the server does.

A request worker that dies (``kill -9``, the out-of-memory killer) is replaced while the
others serve (:mod:`connecfy.workers`); the private Redis and the background process
are restarted by their supervisors (:mod:`connecfy.supervisor`). A ``serve`` killed
outright takes its request workers and its private Redis with it: each asks the kernel
for SIGTERM when ``serve`` dies (which may send it several; a worker stops on the first
and takes the others as nothing new), so no worker goes on serving the port and no Redis
goes on writing the data directory with nobody supervising it (the background process
watches its parent already).

The data directory is locked for the server's life (:mod:`connecfy.datadir`), before
anything touches it: a second ``serve`` on it is refused in one line naming the first's
pid, and a killed one's lock goes with it, so the next starts there. A mistake found
before serving (the data directory, the port, the private Redis) is one line on stderr
and exit status 1 or 2 (:mod:`connecfy.errors`), not a traceback.

Granian over uvicorn: on this 2-core box a bare JSON GET did about 31k requests/s on one
granian worker against about 17k on uvicorn (uvloop + httptools), and both serve our
Redis-bound endpoints equally, so the lighter server leaves more CPU to the app.

Metrics: granian runs the app in several worker processes, so ``serve`` points
prometheus_client's multiprocess mode at ``<data dir>/metrics`` (emptied at start)
before any worker starts; each worker writes its counters there and a scrape of any
worker merges them all. Logs: granian's own lines and the app's are JSON on stderr.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker.settings import Settings
from connecfy.datadir import lock, metrics_dir, redis_dir
from connecfy.errors import RUNTIME, CommandError
from connecfy.redis_server import RedisServer
from connecfy.supervisor import Supervisor, die_with_parent

DRAIN_SECONDS = 10
RESERVED_FILES = 256
"""Open files a worker keeps for what is not a client connection: Redis connections,
the history store, logs, the listening socket."""

log = logging.getLogger("connecfy.serve")


def _raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (the workers
    inherit it): each client connection is one. Returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


# This process's pid while it serves, which the request workers it forks inherit: each
# asks to be stopped when it dies (and stops at once if it already has). Unset in a
# worker of another ASGI server, which then keeps its own rules.
_SERVE_PID: int | None = None
_held: list[int] = []  # the data directory's locked file, open for the process's life


def reset_metrics_dir(path: Path) -> Path:
    """An empty directory for the workers' metric files: counts restart with the server."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path.resolve()


def asgi_app() -> Any:
    """What granian serves: the app of ``api.app:app_from_env`` inside the request id,
    access log and metrics wrapper, which sits outside Litestar's router so unmatched
    paths (404, 405) get an id and are counted too."""
    from api.app import app_from_env

    if _SERVE_PID is not None:
        # A worker forked by serve: until granian sets its own once the app is built, it
        # still has serve's signal handlers, under which a SIGTERM (serve's, or the
        # kernel's once serve is gone) would only set a flag in serve's copy of granian.
        # Until then SIGTERM simply ends it.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(_SERVE_PID)
    return app_from_env()


def _cannot_listen(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on ("" when it can), checked before anything
    starts, so a busy port is one line instead of a traceback from every worker."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return str(exc)
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


class BackgroundProcess:
    """``connecfy background`` for this server: the sweeper, the snapshotter and the
    webhook dispatcher, off the request workers. It inherits the environment (the
    Redis, the data directory, the metrics directory) and stops when the server dies."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BackgroundProcess:
        env = {k: v for k, v in os.environ.items() if k != "CONNECFY_BACKGROUND_IN_WORKERS"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connecfy.cli", "background", "--parent-pid", str(os.getpid())],
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches serve,
            # which then stops this process itself.
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start_private_redis(data_dir: Path) -> RedisServer:
    private = RedisServer(redis_dir(data_dir), port=0, appendonly=True, exit_with_parent=True)
    try:
        return private.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        last = private.last_log_line()
        raise CommandError(
            f"the private Redis in {private.data_dir} did not start ({exc.__class__.__name__}"
            f"{': ' + last if last else ''}); its log is {private.data_dir / 'redis.log'}",
            RUNTIME,
        ) from None


def serve(settings: Settings, *, host: str, port: int, workers: int, data_dir: str | None) -> int:
    """Serve until SIGTERM or SIGINT, then exit 0. A mistake found before serving (the
    data directory, the port, the private Redis) is a :class:`CommandError`."""
    global _SERVE_PID
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    from connecfy.workers import Workers

    where = Path(data_dir or settings.data_dir).resolve()
    # First, before anything else touches the directory: one serve per data directory.
    # The descriptor stays open (and the lock held) until this process ends.
    _held.append(lock(where))
    problem = _cannot_listen(host, port)
    if problem:
        raise CommandError(f"cannot listen on {host}:{port}: {problem}", RUNTIME)
    # The workers read their settings from the environment: the history store's SQLite
    # file goes in this data directory.
    os.environ["CONNECFY_DATA_DIR"] = str(where)
    # Before prometheus_client is imported anywhere: it picks its value store at import.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(reset_metrics_dir(metrics_dir(where)))
    from api.observability import logging_dictconfig

    private: RedisServer | None = None
    background: BackgroundProcess | None = None
    # Stopped in this order: a supervisor before its child, the Redis last.
    redis_supervisor: Supervisor | None = None
    background_supervisor: Supervisor | None = None
    _SERVE_PID = os.getpid()
    try:
        if not settings.redis_url:
            private = _start_private_redis(where)
            redis_supervisor = Supervisor(private, "redis-server").start()
            os.environ["REDIS_URL"] = private.url
            print(f"connecfy: private Redis at {private.url}", flush=True)
        background = BackgroundProcess().start()
        background_supervisor = Supervisor(background, "connecfy background").start()
        os.environ["CONNECFY_BACKGROUND_IN_WORKERS"] = "false"  # the workers serve requests only
        open_files = _raise_open_files_limit()
        connections = settings.http_connections_per_worker
        if connections > open_files - RESERVED_FILES:
            log.warning(
                "%d connections per worker need more open files than the %d allowed; holding %d",
                connections,
                open_files,
                open_files - RESERVED_FILES,
            )
            connections = max(1, open_files - RESERVED_FILES)
        Workers(
            "connecfy.server:asgi_app",
            factory=True,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            backlog=settings.http_backlog,
            backpressure=connections,
            # HTTP/1.1 only unless asked: granian's automatic mode, which also takes
            # cleartext HTTP/2, holds each connection in about twice the memory.
            http=HTTPModes.auto if settings.http2_cleartext else HTTPModes.http1,
            http1_settings=HTTP1Settings(header_read_timeout=settings.http_idle_timeout_seconds * 1000),
            loop=Loops.uvloop,
            log_access=False,
            log_dictconfig=logging_dictconfig(),
            # SIGTERM: stop accepting, let requests in flight finish, but never hang:
            # a worker still busy after this long is killed.
            workers_kill_timeout=DRAIN_SECONDS,
        ).serve()
    finally:
        if background_supervisor is not None:
            background_supervisor.stop()
        if background is not None:
            background.stop()
        # The Redis last: the background process may still write while it stops. (A Redis
        # its supervisor restarted gets SIGTERM when that supervisor's thread ends.)
        if redis_supervisor is not None:
            redis_supervisor.stop()
        if private is not None:
            private.stop()
    return 0
