"""The data directory of ``connecfy serve``: what lives in it, the lock that keeps it to
one ``serve``, and how the other subcommands find that server's private Redis.

- ``serve.lock``: locked (``flock``) by the ``serve`` using the directory, for as long as it
  runs, and holding its pid. It is taken before anything else touches the directory, so
  a second ``serve`` on it is refused before it starts a second Redis on the same
  append-only files, empties the first's metrics or removes its socket. The lock goes
  with the process (and the request workers it forked): a ``serve`` killed with SIGKILL
  leaves no lock behind, only a file whose pid nobody holds.
- ``redis/``: the private Redis's append-only files, its log and its socket;
- ``metrics/``: the workers' Prometheus files;
- ``history.sqlite3``: the history store (unless ``CONNECFY_DATABASE_URL`` names another).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from broker.settings import Settings
from connecfy.errors import RUNTIME, USAGE, CommandError

LOCK_FILE = "serve.lock"


def redis_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "redis"


def metrics_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "metrics"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def not_a_directory(data_dir: Path) -> CommandError:
    return CommandError(f"--data-dir {data_dir} is not a directory", USAGE)


def lock(data_dir: Path) -> int:
    """Make ``data_dir`` if needed and lock it for this process: the descriptor of the
    locked ``serve.lock``, to keep open for the process's life (it is not inherited by
    the programs this one starts; forked workers share it). Refused, as one line: a data
    directory that is a file or cannot be written (2), one another ``serve`` holds (1,
    naming its pid)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise not_a_directory(data_dir) from None
    except OSError as exc:
        raise CommandError(f"--data-dir {data_dir}: cannot create it: {_why(exc)}", USAGE) from None
    if not data_dir.is_dir():
        raise not_a_directory(data_dir)
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise CommandError(f"--data-dir {data_dir} is not writable: {_why(exc)}", USAGE) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise CommandError(
            f"the data directory {data_dir.resolve()} is in use by another connecfy serve (pid {holder}); "
            "stop it, or give this one another --data-dir",
            RUNTIME,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def redis_url_for(settings: Settings, data_dir: str | None) -> str:
    """The Redis a subcommand should use: REDIS_URL, else the private one of the ``serve``
    running on ``data_dir``; a mistake is one line (no such directory: 2, no ``serve``
    running on it: 1)."""
    if settings.redis_url:
        return settings.redis_url
    where = Path(data_dir or settings.data_dir)
    if where.exists() and not where.is_dir():
        raise not_a_directory(where)
    socket_path = redis_dir(where) / "redis.sock"
    if not socket_path.exists():
        raise CommandError(
            f"no connecfy serve is running with --data-dir {where} (no {socket_path}); start one, or set REDIS_URL"
        )
    return f"unix://{socket_path.resolve()}"
