"""A mistake with the ``connecfy`` command ends in one line on stderr, ``connecfy: ...``,
and the right exit status: 2 for a wrong option or setting (a port out of range, a data
directory that is a file or cannot be written, a malformed ``REDIS_URL``, no terminal to
ask a password on), 1 for what the world refused (Redis unreachable, the email taken, no
``serve`` running on the data directory, the directory in use). Never a
traceback. Every subcommand that can meet a mistake is tried with it.

The commands run as the installed console script, a few at a time, each with a time
limit; those that need a Redis share a private one of the test's own."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from connecfy.redis_server import RedisServer, free_port
from tests.support.e2e_server import CONNECFY, server_env

USAGE, RUNTIME = 2, 1
TIMEOUT = 20.0


@dataclass
class Case:
    argv: list[str]
    status: int
    says: str  # a part of the one line that shows it is the right one
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""
    preexec: Callable[[], None] | None = None


@dataclass
class Outcome:
    status: int | None  # None: still running after TIMEOUT (then killed)
    stdout: str
    stderr: str


def run(case: Case, cwd: Path) -> Outcome:
    process = subprocess.Popen(
        [str(CONNECFY), *case.argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**server_env(), **case.env},
        cwd=cwd,
        start_new_session=True,  # no controlling terminal, as under a service manager
        preexec_fn=case.preexec,
    )
    try:
        stdout, stderr = process.communicate(case.stdin, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: it and whatever it started
        stdout, stderr = process.communicate()
        return Outcome(None, stdout, stderr)
    return Outcome(process.returncode, stdout, stderr)


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def without_root_powers() -> None:
    """In the child, before exec: a root that cannot ignore file permissions (dropped from
    the bounding set, so the program it runs starts without them)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            os._exit(99)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """What the mistakes need: a file, a directory no serve runs on, one another holds,
    one that cannot be written, a Redis, an unreachable Redis URL."""
    root = tmp_path_factory.mktemp("connecfy-mistakes")
    a_file = root / "a-file"
    a_file.write_text("not a directory\n")
    idle = root / "idle"
    idle.mkdir()
    locked = root / "locked"
    locked.mkdir()
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    lock = os.open(locked / "serve.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a serve running there holds it
    os.write(lock, f"{os.getpid()}\n".encode())
    redis = RedisServer(root / "redis", appendonly=False).start()
    try:
        yield {
            "root": root,
            "file": a_file,
            "idle": idle,
            "locked": locked,
            "read_only": read_only,
            "redis": redis.url,
            "unreachable": f"redis://127.0.0.1:{free_port()}/0",
        }
    finally:
        redis.stop()
        os.close(lock)


def cases(place: dict[str, object]) -> dict[str, Case]:
    file, idle, locked, read_only = (str(place[k]) for k in ("file", "idle", "locked", "read_only"))
    unreachable = {"REDIS_URL": str(place["unreachable"])}
    malformed = {"REDIS_URL": "localhost:6379"}
    redis = {"REDIS_URL": str(place["redis"])}
    port = str(free_port())
    found = {
        # Usage: the command line or a setting.
        "serve --port 99999": Case(["serve", "--port", "99999", "--data-dir", idle], USAGE, "--port"),
        "serve --data-dir a file": Case(["serve", "--port", port, "--data-dir", file], USAGE, "not a directory"),
        "serve --data-dir under a file": Case(
            ["serve", "--port", port, "--data-dir", f"{file}/data"], USAGE, "cannot create it"
        ),
        "serve --data-dir unwritable": Case(
            ["serve", "--port", port, "--data-dir", read_only],
            USAGE,
            "not writable",
            preexec=without_root_powers if os.geteuid() == 0 else None,
        ),
        "operator create --data-dir a file": Case(
            ["operator", "create", "--email", "op@example.com", "--password-stdin", "--data-dir", file],
            USAGE,
            "not a directory",
            stdin="long enough password\n",
        ),
        "restore --data-dir a file": Case(["restore", "--data-dir", file], USAGE, "not a directory"),
        "background --data-dir a file": Case(["background", "--data-dir", file], USAGE, "not a directory"),
        "operator create without a terminal": Case(
            ["operator", "create", "--email", "op@example.com"], USAGE, "--password-stdin", env=redis
        ),
        "operator create, not an email": Case(
            ["operator", "create", "--email", "nobody", "--password-stdin"],
            USAGE,
            "--email",
            env=redis,
            stdin="long enough password\n",
        ),
        "an unknown command": Case(["srve"], USAGE, "srve"),
        "an unknown setting": Case(["selfcheck"], USAGE, "CONNECFY_LEASE_SECOND", env={"CONNECFY_LEASE_SECOND": "3"}),
        # Runtime: what the world refused.
        "serve on a data dir in use": Case(
            ["serve", "--port", port, "--data-dir", locked],
            RUNTIME,
            f"in use by another connecfy serve (pid {os.getpid()})",
        ),
        "operator create, no serve": Case(
            ["operator", "create", "--email", "op@example.com", "--password-stdin", "--data-dir", idle],
            RUNTIME,
            "no connecfy serve is running",
            stdin="long enough password\n",
        ),
        "restore, no serve": Case(["restore", "--data-dir", idle], RUNTIME, "no connecfy serve is running"),
        "background, no serve": Case(["background", "--data-dir", idle], RUNTIME, "no connecfy serve is running"),
    }
    subcommands = {
        "serve": ["serve", "--port", port, "--data-dir", idle],
        "selfcheck": ["selfcheck"],
        "operator create": ["operator", "create", "--email", "op@example.com", "--password-stdin", "--data-dir", idle],
        "restore": ["restore", "--data-dir", idle],
        "background": ["background", "--data-dir", idle],
    }
    for name, argv in subcommands.items():
        found[f"{name}, REDIS_URL malformed"] = Case(
            argv, USAGE, "REDIS_URL", env=malformed, stdin="long enough password\n"
        )
        found[f"{name}, REDIS_URL unreachable"] = Case(
            argv, RUNTIME, "cannot reach Redis", env=unreachable, stdin="long enough password\n"
        )
    return found


NAMES = sorted(cases(dict.fromkeys(("root", "file", "idle", "locked", "read_only", "redis", "unreachable"), "x")))


@pytest.fixture(scope="module")
def outcomes(place: dict[str, object]) -> dict[str, Outcome]:
    """Every case run once, four at a time (each is mostly interpreter start-up)."""
    table = cases(place)
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(run, case, Path(str(place["root"]))) for name, case in table.items()}
        return {name: future.result() for name, future in futures.items()}


def one_line(outcome: Outcome) -> str:
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("connecfy: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("name", NAMES)
def test_a_mistake_is_one_line_and_the_right_status(
    name: str, place: dict[str, object], outcomes: dict[str, Outcome]
) -> None:
    case, outcome = cases(place)[name], outcomes[name]
    if case.preexec is without_root_powers and outcome.status == 99:
        why = "running as root, and cannot give up root's power over file permissions"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI must be able to run this case")
        pytest.skip(why)
    assert outcome.status is not None, f"still running after {TIMEOUT} s: {outcome.stderr[-2000:]}"
    line = one_line(outcome)
    assert case.says in line, line
    assert outcome.status == case.status, (outcome.status, line)


def test_the_operators_email_taken_is_one_line_and_status_1(place: dict[str, object]) -> None:
    create = Case(
        ["operator", "create", "--email", "taken@example.com", "--password-stdin"],
        0,
        "",
        env={"REDIS_URL": str(place["redis"])},
        stdin="long enough password\n",
    )
    first = run(create, Path(str(place["root"])))
    assert first.status == 0 and first.stderr == "", first
    again = run(create, Path(str(place["root"])))
    assert again.status == RUNTIME, again
    assert "exists already" in one_line(again)
    assert again.stdout == ""


def test_a_refused_serve_leaves_the_directory_as_it_was(place: dict[str, object], outcomes: dict[str, Outcome]) -> None:
    """The serve refused on a locked directory started nothing there (the busy port's
    case is tests/e2e/test_packaging.py's)."""
    assert outcomes["serve on a data dir in use"].status == RUNTIME
    assert sorted(p.name for p in Path(str(place["locked"])).iterdir()) == ["serve.lock"]
