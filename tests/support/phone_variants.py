"""The variants of a phone's poll and heartbeat that the hot path's tests send both ways
(``tests/app/test_hot_path.py`` in process, ``tests/http/test_hot_path_http.py`` over
HTTP): plain ones, which the hot path answers, and every kind it hands to Litestar."""

from __future__ import annotations

import json

HEARTBEAT = {"battery": 81, "android_version": "14", "app_version": "1.0.0"}
JSON_TYPE = ("Content-Type", "application/json")

Headers = list[tuple[str, str]]

QUERIES = [
    "",
    "limit=5",
    "limit=100",
    "limit=101",
    "limit=0",
    "limit=010",
    "limit=+5",
    "limit=%35",
    "limit=5.0",
    "limit=",
    "limit",
    "limit=5&limit=6",
    "limit=5&foo=1",
    "foo=1",
    "limit=5&",
    "&limit=5",
    "wait=0",
    "wait=0&limit=3",
    "limit=3&wait=00",
    "wait=-1",
    "wait=61",
    "wait=999999999999",
    "LIMIT=5",
]


def credentials(token: str, other_token: str) -> list[Headers]:
    """Ways to send a phone's ``token`` (and ``other_token``, another phone's of the same
    account), well or not."""
    a, b = token, other_token
    return [
        [("X-Device-Token", a)],
        [("Authorization", f"Bearer {a}")],
        [("authorization", f"bearer  {a} ")],
        [("X-Device-Token", f" {a}\t")],
        [("X-Device-Token", a), ("Authorization", "Bearer nope")],
        [("X-Device-Token", "nope"), ("Authorization", f"Bearer {a}")],
        [("X-Device-Token", a), ("X-Device-Token", "nope")],
        [("X-Device-Token", "nope"), ("X-Device-Token", a)],
        [("X-Device-Token", "")],
        [("X-Device-Token", " ")],
        [("Authorization", "Basic abc")],
        [("X-Device-Token", b)],  # the other phone's token on this phone's path: 403
        [],
    ]


def bodies() -> list[tuple[bytes | None, Headers]]:
    """Heartbeat bodies (None: no body) and the headers that go with them."""
    whole = json.dumps(HEARTBEAT).encode()
    return [
        (whole, [JSON_TYPE]),
        (b"null", [JSON_TYPE]),
        (b"{}", [JSON_TYPE]),
        (None, []),
        (b"", [JSON_TYPE]),
        (b"", [("Content-Type", "text/plain")]),
        (json.dumps({"battery": 81.0}).encode(), [JSON_TYPE]),
        (json.dumps({"battery": 81.5}).encode(), [JSON_TYPE]),
        (json.dumps({"battery": "81"}).encode(), [JSON_TYPE]),
        (json.dumps({"battery": 101}).encode(), [JSON_TYPE]),
        (json.dumps({"battery": None}).encode(), [JSON_TYPE]),
        (json.dumps({"extra": 1}).encode(), [JSON_TYPE]),
        (json.dumps({"app_version": "x" * 10_000}).encode(), [JSON_TYPE]),
        (b"[]", [JSON_TYPE]),
        (b"{not json", [JSON_TYPE]),
        (b"\xff{}", [JSON_TYPE]),
        (b"[" * 5000 + b"]" * 5000, [JSON_TYPE]),
        (whole, [("Content-Type", "text/plain")]),
        (whole, [("Content-Type", "application/json; charset=utf-8")]),
        (whole, [("Content-Type", "Application/JSON")]),
        (whole, []),
        (whole, [JSON_TYPE, ("Content-Type", "text/plain")]),
        (whole, [JSON_TYPE, ("Content-Length", str(len(whole)))]),
        (b" " * 70_000 + whole, [JSON_TYPE]),
    ]
