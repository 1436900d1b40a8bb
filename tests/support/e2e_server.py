"""The real ``connecfy serve`` process for end-to-end HTTP tests, and small HTTP helpers.

:class:`ServerProcess` starts the installed console script on a free loopback port with
its private Redis (no ``REDIS_URL``), waits for ``GET /readyz``, creates the operator
with ``connecfy operator create`` and, on :meth:`stop`, sends SIGTERM and expects exit 0.

:class:`Api` is one httpx client per user, so cookies are kept; on unsafe methods it
echoes the ``csrftoken`` cookie in ``X-CSRFToken``, as the dashboard does. Every request
it makes is recorded (method, path) so a test can check the OpenAPI document lists them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CONNECFY = Path(sys.executable).parent / "connecfy"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Every (method, path) an Api client sent, for the OpenAPI check.
REQUESTS_MADE: set[tuple[str, str]] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """This environment without REDIS_URL or CONNECFY_* settings: the defaults, private Redis."""
    return {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CONNECFY_")}


class ServerProcess:
    def __init__(
        self, data_dir: Path, *, workers: int = 1, settings: dict[str, str] | None = None, separate_stderr: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.settings = settings or {}  # CONNECFY_* variables for this server
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        # With separate_stderr, stderr (the log lines) goes to its own file, stdout to log_path.
        self.stderr_path: Path | None = data_dir / "server.err" if separate_stderr else None
        self.process: subprocess.Popen[bytes] | None = None

    def stderr(self) -> str:
        """The server's stderr so far ("" unless started with separate_stderr)."""
        try:
            return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""
        except OSError:
            return ""

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") + self.stderr()
        except OSError:
            return ""

    def start(self) -> ServerProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the process's life
        err: Any = open(self.stderr_path, "wb") if self.stderr_path else subprocess.STDOUT  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(CONNECFY),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
            ],
            stdout=log,
            stderr=err,
            env={**server_env(), **self.settings},
            cwd=self.data_dir,
        )
        log.close()
        if self.stderr_path:
            err.close()
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"connecfy serve exited with {self.process.returncode} before it was ready:\n{self.output()}"
                )
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=1.0)
                if response.status_code == 200:
                    return self
                last = f"{response.status_code} {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"connecfy serve not ready within {READY_TIMEOUT} s (last: {last}):\n{self.output()}")

    def create_operator(self, email: str, password: str) -> str:
        result = subprocess.run(
            [
                str(CONNECFY),
                "operator",
                "create",
                "--email",
                email,
                "--password-stdin",
                "--data-dir",
                str(self.data_dir),
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
            # The server's Redis: its private one through the data directory, or REDIS_URL.
            env={**server_env(), **{k: v for k, v in self.settings.items() if k == "REDIS_URL"}},
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"operator create failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def stop(self) -> int:
        """SIGTERM, then the exit status (None if it did not exit within STOP_TIMEOUT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"connecfy serve did not exit within {STOP_TIMEOUT} s of SIGTERM:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _record(request: httpx.Request) -> None:
    REQUESTS_MADE.add((request.method, request.url.path))


class Api:
    """One user's HTTP client: keeps its cookies and echoes the CSRF cookie."""

    def __init__(self, base_url: str, **headers: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10.0, headers=headers, event_hooks={"request": [_record]})
        self.account: dict[str, Any] = {}  # the signup or login answer, for a user's client

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        token = self.client.cookies.get("csrftoken")
        if csrf and method.upper() in UNSAFE and token and "X-CSRFToken" not in headers:
            headers["X-CSRFToken"] = token
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


def describe(response: httpx.Response) -> str:
    """The exchange, for assertion messages."""
    request = response.request
    body = request.content[:300].decode(errors="replace") if request.content else ""
    return (
        f"{request.method} {request.url.path}{'?' + request.url.query.decode() if request.url.query else ''}"
        f" {body!s} -> {response.status_code} {response.text[:500]}"
    )


def expect(response: httpx.Response, status: int) -> Any:
    """Assert the status and return the decoded JSON body (None for an empty body)."""
    assert response.status_code == status, describe(response)
    if not response.content:
        return None
    assert response.headers.get("content-type", "").startswith("application/json"), describe(response)
    return response.json()


ERROR_KEYS = {"status_code", "code", "detail"}
ERROR_EXTRA_KEYS = {"field", "index"}
TRACEBACK_MARKERS = ("Traceback", 'File "', ", line ", "site-packages", '.py"')


def expect_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert an error: that status, JSON ``{"status_code", "code", "detail"}`` (plus only
    ``field``/``index``), status_code equal to the HTTP status, and no traceback text."""
    assert response.status_code == status, describe(response)
    assert response.headers.get("content-type", "").startswith("application/json"), describe(response)
    body = response.json()
    assert isinstance(body, dict), describe(response)
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | ERROR_EXTRA_KEYS, describe(response)
    assert body["status_code"] == status, describe(response)
    assert isinstance(body["code"], str) and body["code"], describe(response)
    assert isinstance(body["detail"], str) and body["detail"], describe(response)
    if code is not None:
        assert body["code"] == code, describe(response)
    text = json.dumps(body)
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, describe(response)
    return body
