"""The parts of the hot paths (``api/hot_path.py``): what counts as a plain query,
plain headers and a plain body, the body given again to the route, and the check that
refuses a hot path which would skip something of its route."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.handlers import BaseRouteHandler

from api.hot_path import (
    HOT_PATH,
    HotPath,
    check_hot_paths,
    json_body_length,
    plain_headers,
    plain_number,
    plain_query,
    read_body,
    replaying,
)
from api.inputs import MAX_BODY

BOUNDS = {b"limit": (1, 100), b"wait": (0, 60)}


@pytest.mark.parametrize(
    ("query", "values"),
    [
        (b"limit=10", {b"limit": 10}),
        (b"limit=100&wait=0", {b"limit": 100, b"wait": 0}),
        (b"wait=60&limit=1", {b"limit": 1, b"wait": 60}),
        (b"limit=0", None),
        (b"limit=101", None),
        (b"wait=61", None),
        (b"limit=010", None),
        (b"limit=+1", None),
        (b"limit=-1", None),
        (b"limit=%31", None),
        (b"limit=1.0", None),
        (b"limit= 1", None),
        (b"limit=", None),
        (b"limit", None),
        (b"limit=1&limit=2", None),
        (b"limit=1&", None),
        (b"&limit=1", None),
        (b"limit=1&other=2", None),
        (b"Limit=1", None),
        (b"limit=1;wait=2", None),
        (b"wait=99999999999999999999", None),
    ],
)
def test_plain_query(query: bytes, values: dict[bytes, int] | None) -> None:
    assert plain_query(query, BOUNDS) == values


def test_plain_number() -> None:
    assert [plain_number(t) for t in (b"0", b"7", b"65536")] == [0, 7, 65536]
    assert [plain_number(t) for t in (b"", b"00", b"07", b"+7", b"7 ", b"\xd9\xa7", b"1e3", b"9" * 10)] == [None] * 8


def test_plain_headers() -> None:
    wanted = frozenset({b"x-device-token", b"content-type"})
    sent = [(b"host", b"h"), (b"x-device-token", b"t"), (b"accept", b"a"), (b"accept", b"b")]
    assert plain_headers(sent, wanted) == {b"x-device-token": b"t"}
    assert plain_headers([*sent, (b"x-device-token", b"t")], wanted) is None
    assert plain_headers([], wanted) == {}


def messages_of(*chunks: bytes, end: bool = True) -> list[dict[str, Any]]:
    found = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    if end:
        found[-1]["more_body"] = False
    return found


def test_read_body_and_give_it_again() -> None:
    async def run(length: int, sent: list[dict[str, Any]]) -> tuple[bytes | None, list[Any], list[Any]]:
        queue = [*sent, {"type": "http.disconnect"}]

        async def receive() -> Any:
            return queue.pop(0)

        body, read = await read_body(receive, length)
        again = replaying(read, receive)
        seen = [await again() for _ in range(len(sent) + 1)]
        return body, read, seen

    whole = messages_of(b"ab", b"cd")
    assert asyncio.run(run(4, whole)) == (b"abcd", whole, [*whole, {"type": "http.disconnect"}])
    assert asyncio.run(run(4, messages_of(b"abcd")))[0] == b"abcd"
    assert asyncio.run(run(0, messages_of(b"")))[0] == b""
    for length, sent in ((3, messages_of(b"ab", b"cd")), (5, messages_of(b"abcd")), (0, messages_of(b"a"))):
        body, read, seen = asyncio.run(run(length, sent))
        assert body is None
        assert seen[: len(sent)] == sent  # everything read is given again, in order
    body, read, seen = asyncio.run(run(4, [{"type": "http.disconnect"}]))
    assert body is None and read == [{"type": "http.disconnect"}]


async def _guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    return None


async def _other_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    return None


async def _before(request: Any) -> None:
    return None


async def _hot(scope: Any, receive: Any, send: Any) -> Any:
    return receive


def app_with(guards: list[Any] | None = None, **options: Any) -> Litestar:
    @get("/hot", guards=[_guard] if guards is None else guards, opt={HOT_PATH: HotPath(_hot, _guard)}, **options)
    async def hot() -> dict[str, str]:
        return {}

    @get("/plain", response_headers=[ResponseHeader(name="X-Other", value="1")])
    async def plain() -> dict[str, str]:
        return {}

    return Litestar([hot, plain], before_request=_before, request_max_body_size=1024)


def test_the_check_accepts_a_route_it_can_serve_and_refuses_one_whose_parts_it_would_skip() -> None:
    check_hot_paths(app_with(), _before, 1024)  # the other route's headers are its own business
    for options, skipped in (
        ({"response_headers": [ResponseHeader(name="X-Extra", value="1")]}, "response_headers"),
        ({"after_request": lambda response: response}, "after_request"),
        ({"cache": True}, "cache"),
        ({"request_max_body_size": 10}, "request_max_body_size"),
        ({"guards": []}, "guards"),
        ({"guards": [_other_guard]}, "guards"),
        ({"guards": [_guard, _other_guard]}, "guards"),
    ):
        with pytest.raises(RuntimeError, match=skipped):
            check_hot_paths(app_with(**options), _before, 1024)
    with pytest.raises(RuntimeError, match="before_request"):
        check_hot_paths(app_with(), None, 1024)


def test_json_body_length() -> None:
    json = {b"content-type": b"application/json"}
    assert json_body_length({**json, b"content-length": b"12"}) == 12
    assert json_body_length({**json, b"content-length": str(MAX_BODY).encode()}) == MAX_BODY
    for headers in (
        {**json, b"content-length": str(MAX_BODY + 1).encode()},
        {**json, b"content-length": b"012"},
        {**json, b"content-length": b"12", b"transfer-encoding": b"chunked"},
        {b"content-type": b"text/plain", b"content-length": b"12"},
        {b"content-length": b"12"},
        {**json, b"content-length": b"0"},
        json,
        {},
    ):
        assert json_body_length(headers) is None, headers
    # A body that may be left out: none at all is 0, whatever the type.
    assert [json_body_length(h, optional=True) for h in ({}, {b"content-length": b"0"}, json)] == [0, 0, 0]
    assert json_body_length({b"content-length": b"12"}, optional=True) is None
