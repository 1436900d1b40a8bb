"""A lean HTTP/1.1 keep-alive client for the swarm's hot requests.

A phone swarm of 20,000 makes about 2,300 requests a second; through aiohttp each cost
the load generator some 250 µs of CPU, close to a whole core on a 2-core box that also
runs the server under test. Here a request is a few bytes written on a pooled
connection and the answer is parsed by httptools (the C parser uvicorn uses): a
fraction of that. It speaks only what the swarm needs: requests with a Content-Length
body or none, answers with a body, keep-alive. Dashboard sessions (cookies, a few
requests) stay on aiohttp.

A pool may bind its connections to a source address (``local_address``): each simulated
phone has a pool of its own, from an address of its own in 127.0.0.0/8, as real phones
each hold their own connections from their own address. A request that finds its
reused connection closed by the server before any answer came (an idle keep-alive
connection the server let go) is sent once more on a new one, as HTTP clients do.
The connections open in this process are counted (``open_connections``, and the most
at once, ``peak_connections``): each is an open file.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode, urlsplit

import httptools
import msgspec


class Connections:
    """The client connections open in this process now, and the most at once."""

    open = 0
    peak = 0

    @classmethod
    def opened(cls) -> None:
        cls.open += 1
        cls.peak = max(cls.peak, cls.open)

    @classmethod
    def closed(cls) -> None:
        cls.open -= 1


class StaleConnection(ConnectionError):
    """A reused connection was found closed before any byte of the answer came."""


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes, dict[str, str]]] | None = None
        self.body: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.closed = False
        self.answered = 0  # answers complete on this connection
        self.receiving = False  # bytes of the current answer came

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        Connections.opened()

    def data_received(self, data: bytes) -> None:
        self.receiving = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        Connections.closed()
        self.closed = True
        if self.answered and not self.receiving:
            self._fail(StaleConnection("kept-alive connection closed by the server"))
        else:
            self._fail(ConnectionError("connection closed") if exc is None else exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []
        self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.headers["Retry-After"] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.answered += 1
        self.receiving = False
        if not self.parser.should_keep_alive():
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body), self.headers))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes, dict[str, str]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        if self.closed:  # closed while idle, after it was taken from the pool
            self.waiter.set_exception(StaleConnection("kept-alive connection closed by the server"))
        else:
            self.transport.write(request)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
        # cancellation that arrives as the answer does, and the caller then never stops.
        async with asyncio.timeout(timeout):
            return await self.waiter


class Http1Pool:
    """Up to ``size`` keep-alive connections to one host, from ``local_address`` when
    given; a request takes an idle one (or opens one), and puts it back when its answer
    is complete."""

    def __init__(
        self, base_url: str, *, size: int = 256, timeout: float = 30.0, local_address: str | None = None
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError("the lean client speaks plain http:// only")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.encode()
        self.timeout = timeout
        self.local_address = local_address
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(size)

    async def _take(self, fresh: bool = False) -> _Connection:
        while self.idle and not fresh:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        _, protocol = await asyncio.get_running_loop().create_connection(
            lambda: _Connection(self),
            self.host,
            self.port,
            local_addr=(self.local_address, 0) if self.local_address else None,
        )
        return protocol

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request; ``timeout`` (default the pool's) bounds the wait for its answer."""
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        lines = [f"{method} {target} HTTP/1.1", "Host: " + self.host_header.decode()]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        async with self.slots:
            connection = await self._take()
            try:
                try:
                    answer = await connection.exchange(request, timeout or self.timeout)
                except StaleConnection:  # the server let it go while idle: once more, on a new one
                    connection = await self._take(fresh=True)
                    answer = await connection.exchange(request, timeout or self.timeout)
            except BaseException:
                connection.closed = True
                if connection.transport is not None:
                    connection.transport.close()
                raise
            if not connection.closed:
                self.idle.append(connection)
            return answer

    async def close(self) -> None:
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()
        self.idle.clear()


def decoded(raw: bytes) -> Any:
    """A JSON answer body, or None when it is empty or not JSON."""
    try:
        return msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        return None
