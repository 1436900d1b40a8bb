"""Everything a Redis holds, as bytes to search: the tests that check a text never
reached the server read it."""

from __future__ import annotations

import redis


def redis_bytes(client: redis.Redis) -> bytes:
    """Every key and every value (strings, hashes, lists, sets, sorted sets, streams), joined."""
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                parts += [field, value]
        elif kind == b"list":
            parts += client.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(client.smembers(key))
        elif kind == b"zset":
            parts += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            for entry_id, fields in client.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, value]
        else:
            raise AssertionError(f"a key of a type this scan does not read: {key!r} is {kind!r}")
    return b"\n".join(parts)
