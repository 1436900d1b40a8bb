"""The hot paths: a plain ``GET /api/devices/{id}/tasks/``, ``POST
/api/devices/{id}/heartbeat/``, ``POST /api/sms/{id}/status/`` or ``POST
/api/external/send/`` answered from the ASGI scope, without Litestar's per-request
machinery around the handler.

Every paired phone polls and sends heartbeats all day long and reports each message it
sends (sent, often delivered), and high-volume senders send one message a request, so
these four requests are most of what a server answers, and
most of their CPU went to that machinery, not to their work: a ``Request`` object, the
guard called with a copy of the route handler, the before-request check, the parameters
parsed and validated, the body decoded a second time, a ``Response`` object and its
headers. Litestar still routes the request (404, 405,
the trailing slash, the path's device id) and still turns whatever is raised into the
JSON error shape: its exception middleware is outside the route's entry
(``route_entry`` in ``api/app.py``), which calls a route's hot path when it has one.

A hot path takes only a request whose every part is plain, and hands anything else to
the route as Litestar serves it, so that every refusal and every tolerated oddity is
Litestar's, as before:

- a query of the route's parameters alone, each at most once, each a decimal number as
  plainly written as can be (``10``, not ``010``, ``+10`` or ``1%30``) within its bounds;
- headers the path reads (the credentials, the body's, ``Idempotency-Key``) sent once each;
- a body of exactly ``Content-Length`` bytes sent as ``application/json`` that decodes as
  the declared type in the strict decode of ``check_request`` (which is what Litestar's
  lenient decode then makes of it too), or no body at all.

It runs the same credential check as the route's guard (:func:`api.credentials.admit_device`
first, as the guard does, the body read after it; or the API key of a body that decodes,
as :func:`api.credentials.api_key_guard` finds it), then the same handler
work, and sends what Litestar would: the handler's JSON with the route's headers, then
``content-type`` and ``content-length``. A request handed on after its body was read gets
that body again from the receive it is handed with. :func:`check_hot_paths` refuses an
app in which a route with a hot path has anything that the hot path would skip (another
guard, an after-request hook, response headers, a dependency...).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.types import Message, Receive, ReceiveMessage, Send

from api.inputs import MAX_BODY

HOT_PATH = "connecfy.hot_path"
"""The key, in a route handler's ``opt``, of its :class:`HotPath`."""


@dataclass(frozen=True)
class HotPath:
    """A route's hot path, and the guard whose check it runs itself (the route's only one)."""

    serve: Callable[[Any, Receive, Send], Awaitable[Receive | None]]
    """``(scope, receive, send)``: None when it answered the request, else the receive to
    hand the route with (which gives again what was read of the body)."""
    guard: Callable[..., Any]


JSON = b"application/json"
_JSON_TYPE = (b"content-type", JSON)
_NUMBER = re.compile(rb"0|[1-9][0-9]{0,8}")


def json_response_start(status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> Message:
    """The ``http.response.start`` Litestar sends for a JSON ``body``: ``headers``, then
    the content type and length."""
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, _JSON_TYPE, (b"content-length", str(len(body)).encode())],
    }


async def send_json(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A JSON response, as Litestar sends one."""
    await send(json_response_start(status, body, headers))
    await send({"type": "http.response.body", "body": body, "more_body": False})


def plain_number(text: bytes) -> int | None:
    """``text`` as a number when it is a plain decimal (``10``, not ``010`` or ``+10``)."""
    return int(text) if _NUMBER.fullmatch(text) else None


def plain_query(query: bytes, bounds: dict[bytes, tuple[int, int]]) -> dict[bytes, int] | None:
    """The numbers of a query like ``limit=10&wait=30``: only names of ``bounds``, each
    once, each value a plain decimal within its (low, high); None for any other query."""
    values: dict[bytes, int] = {}
    for pair in query.split(b"&"):
        name, equals, text = pair.partition(b"=")
        bound = bounds.get(name)
        value = plain_number(text)
        if bound is None or not equals or name in values or value is None or not bound[0] <= value <= bound[1]:
            return None
        values[name] = value
    return values


def plain_headers(headers: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes]) -> dict[bytes, bytes] | None:
    """The ``wanted`` headers of a request; None when one of them was sent more than once."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in wanted:
            if name in found:
                return None
            found[name] = value
    return found


async def read_body(receive: Receive, length: int) -> tuple[bytes | None, list[ReceiveMessage]]:
    """The body, when it is exactly ``length`` bytes; and every message read (to give
    again to the route when the body is not plain)."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size != length:
        return None, messages
    return chunks[0] if len(chunks) == 1 else b"".join(chunks), messages


BODY_HEADERS = frozenset({b"content-type", b"content-length", b"transfer-encoding"})
"""The headers a hot path reads to take a body (with :func:`plain_headers`)."""


def json_body_length(headers: dict[bytes, bytes], *, optional: bool = False) -> int | None:
    """The ``Content-Length`` of a plain JSON body, from a request's :data:`BODY_HEADERS`:
    no ``Transfer-Encoding``, a plain number of at most ``MAX_BODY`` bytes, sent as
    exactly ``application/json``; with ``optional``, 0 for no body at all (no length, or
    0, and then any type). None when the body is not plain."""
    if b"transfer-encoding" in headers:
        return None
    length = plain_number(headers.get(b"content-length", b"0" if optional else b""))
    if length is None or length > MAX_BODY or (not length and not optional):
        return None
    if length and headers.get(b"content-type") != JSON:
        return None
    return length


async def read_json(receive: Receive, length: int, decode: Callable[[bytes], Any]) -> tuple[Any, Receive | None]:
    """The body of exactly ``length`` bytes, decoded strictly by ``decode`` (None for no
    body), and None; or, when the body is not that or does not decode, (None, the receive
    to hand the route with), which gives again what was read."""
    body, messages = await read_body(receive, length)
    if body is None:
        return None, replaying(messages, receive)
    if not body:
        return None, None
    try:
        return decode(body), None
    except Exception:  # not JSON, or not of the declared types: as Litestar answers it
        return None, replaying(messages, receive)


def replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """``receive``, after giving ``messages`` again."""
    pending = list(messages)

    async def again() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return again


def check_hot_paths(app: Litestar, before_request: Any, max_body: int) -> None:
    """Refuse an app in which a route with a hot path has anything the hot path would
    skip: a guard other than the one it runs itself, a before-request hook other than
    ``before_request``, an after-request or after-response hook, response headers,
    cookies, ``ETag`` or ``Cache-Control``, a DTO, a dependency, response caching, a
    before-send hook, or another body size limit than ``max_body``."""
    if app.before_send:
        raise RuntimeError("the hot paths send responses without the app's before-send hooks")
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            hot_path = handler.opt.get(HOT_PATH)
            if hot_path is None:
                continue
            layers = handler.ownership_layers
            skipped = {
                "guards": handler.resolve_guards() != [hot_path.guard],
                "before_request": handler.resolve_before_request() is not before_request,
                "after_request": any(getattr(layer, "after_request", None) for layer in layers),
                "after_response": handler.resolve_after_response() is not None,
                "response_headers": bool(handler.resolve_response_headers()),
                "response_cookies": bool(handler.resolve_response_cookies()),
                "etag": any(getattr(layer, "etag", None) for layer in layers),
                "cache_control": any(getattr(layer, "cache_control", None) for layer in layers),
                "dto": handler.resolve_data_dto() is not None or handler.resolve_return_dto() is not None,
                "dependencies": bool(handler.resolve_dependencies()),
                "cache": bool(handler.cache),
                "request_max_body_size": handler.resolve_request_max_body_size() != max_body,
            }
            found = sorted(name for name, present in skipped.items() if present)
            if found:
                raise RuntimeError(f"{route.path} has a hot path, which would skip its {', '.join(found)}")
