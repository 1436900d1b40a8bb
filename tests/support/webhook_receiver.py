"""A real HTTP receiver for webhook tests, on a loopback port in a thread of its own.

It records every request (path, headers, raw body, when) and answers as told:
``fail_first`` failures (500) per event id before a 2xx, or ``hang`` (hold each request
until :meth:`release`), or a fixed ``status``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    fail_first: int = 0
    status: int = 204
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    hung: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._answer(self.headers.get("Connecfy-Event-Id", ""))
                if status is None:
                    with receiver._lock:
                        receiver.hung += 1
                    receiver._released.wait(120)
                    status = 503
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers), body, time.monotonic(), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, event_id: str) -> int | None:
        with self._lock:
            self._attempts[event_id] += 1
            if self.hang and not self._released.is_set():
                return None
            if self._attempts[event_id] <= self.fail_first:
                return 500
            return self.status

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(
            f"receiver: condition not met in {timeout} s; got {len(self.received)} requests, {self.hung} held"
        )


def docs_receiver(secret: str) -> dict[str, Any]:
    """The receiver example of docs/webhooks.md, run as written with this endpoint's secret."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    section = text[text.index("## Receiving webhooks") :]
    code = section[section.index("```python\n") + 10 : section.index("```", section.index("```python\n") + 10)]
    assert 'SECRET = b"whsec_..."' in code
    namespace: dict[str, Any] = {"__name__": "docs_receiver"}
    exec(code.replace('b"whsec_..."', repr(secret.encode())), namespace)  # noqa: S102 - our own docs
    return namespace
