"""The ASGI wrapper around the whole app, outside Litestar's router so 404 and 405 are
seen too: every request gets an id (``X-Request-ID``), one JSON access line, and its
count and latency by route template, method and status."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from api.observability.logs import access_line_writer, encoder, pid, request_id
from api.observability.metrics import LONG_POLL, LONG_POLL_LABEL, RequestMetrics

log = logging.getLogger("connecfy.api")
access_log = logging.getLogger("connecfy.access")

REQUEST_ID_HEADER = b"x-request-id"
MAX_LOGGED_CHARS = 512
DRAIN_MAX_BYTES = 8 * 1024 * 1024
_valid_request_id = re.compile(rb"[A-Za-z0-9._-]{1,64}").fullmatch
_INTERNAL_ERROR = encoder.encode(
    {"status_code": 500, "code": "internal_error", "detail": "the server could not complete the request"}
)


_fresh_ids: list[str] = []  # request ids not given yet, from one read of the random source
os.register_at_fork(after_in_child=_fresh_ids.clear)  # a child gives none of its parent's
FRESH_IDS_PER_READ = 256


def new_request_id() -> str:
    """24 hex digits (96 random bits); one read of the random source per 256 ids."""
    if not _fresh_ids:
        raw = os.urandom(12 * FRESH_IDS_PER_READ).hex()
        _fresh_ids.extend(raw[i : i + 24] for i in range(0, len(raw), 24))
    return _fresh_ids.pop()


class ObservedApp:
    """Pure ASGI: request id, access line, request count and latency, around ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.metrics = RequestMetrics()
        self.write_access_line = access_line_writer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # the wrapped app's attributes (state, openapi_schema, ...)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]  # as sent: the router normalizes scope["path"] in place
        rid = None
        forwarded = None
        # A request with neither header has no body (HTTP/1.1), so nothing to drain.
        body_done = True
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if rid is None and _valid_request_id(value):
                    rid = value.decode()
            elif name == b"x-forwarded-for":
                forwarded = value if forwarded is None else forwarded + b", " + value
            elif name == b"content-length":
                body_done = body_done and value == b"0"
            elif name == b"transfer-encoding":
                body_done = False
        if rid is None:
            rid = new_request_id()
        rid_header = (REQUEST_ID_HEADER, rid.encode())
        token = request_id.set(rid)
        status = 0
        sent = 0

        async def send_with_id(message: Any) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            if body_done:
                # Nothing to track: the server's own receive goes on as it is (a long
                # poll then watches its connection without a task: api/devices.py).
                await self.app(scope, receive, send_with_id)
            else:

                async def receive_tracked() -> Any:
                    nonlocal body_done
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        body_done = True
                    return message

                await self.app(scope, receive_tracked, send_with_id)
            if not body_done and status:
                await _drain(receive)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if status:
                raise
            status = 500
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
                rid_header,
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": _INTERNAL_ERROR})
            sent = len(_INTERNAL_ERROR)
        finally:
            seconds = time.perf_counter() - start
            route = self.metrics.route_label(scope.get("path_template"))
            if scope.get(LONG_POLL):
                route += LONG_POLL_LABEL
            method = scope.get("method", "")
            self.metrics.observe(route, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                self._access_line(method, path, route, status, seconds, sent, scope.get("client"), rid, forwarded)
            request_id.reset(token)

    def _access_line(
        self,
        method: str,
        path: str,
        route: str,
        status: int,
        seconds: float,
        sent: int,
        client: Any,
        rid: str,
        forwarded: bytes | None,
    ) -> None:
        path = path[:MAX_LOGGED_CHARS]
        entry = {
            "ts": "",
            "level": "info",
            "logger": "connecfy.access",
            "message": f"{method} {path} {status}",
            "pid": pid(),
            "request_id": rid,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "client": client[0] if client else None,
            "bytes": sent,
        }
        if forwarded is not None:
            # As received: whether to trust it is the proxy's business (CONNECFY_TRUST_FORWARDED_FOR).
            entry["forwarded_for"] = forwarded[:MAX_LOGGED_CHARS].decode("latin-1")
        self.write_access_line(entry)


async def _drain(receive: Any) -> None:
    """Read and drop what is left of a request body the app answered without reading
    (a 401 before the body, a 413 past the cap), up to DRAIN_MAX_BYTES: otherwise the
    unread bytes are taken for the next request on a kept-alive connection, and the
    client sees that one fail."""
    read = 0
    while read <= DRAIN_MAX_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def instrument(app: Any) -> Any:
    """``app`` wrapped by :class:`ObservedApp` (once: an instrumented app is returned as is)."""
    return app if isinstance(app, ObservedApp) else ObservedApp(app)
