"""The server's Redis client packs commands with hiredis: the same bytes redis-py's own
packing produces, and a working client against a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection

from broker.redis_client import connect, with_hiredis_packing

COMMANDS = [
    ("EVALSHA", "a921d759a711c26b62c03dc31e82d6daa2cdc0eb", 2, "{a:x}:device:d", "{a:x}:queue", 1795787432585, 10),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", "bench"),
    ("SET", "clé", "ünïcode ✓", "PX", 1500),
    ("HSET", b"\x00binary\xff", "f", b"\x00\xff", "float", 0.1, "big", 10**20, "neg", -7),
    ("SET", "k", memoryview(b"a view")),  # not for hiredis: redis-py packs it
]


def test_same_bytes_as_redis_py() -> None:
    plain, packed = Connection(), with_hiredis_packing(aioredis.Redis()).connection_pool.connection_class()
    for command in COMMANDS:
        assert b"".join(packed.pack_command(*command)) == b"".join(plain.pack_command(*command)), command


def test_unix_socket_clients_pack_with_hiredis_too() -> None:
    client = connect("unix:///tmp/connecfy-no-such.sock")
    assert issubclass(client.connection_pool.connection_class, UnixDomainSocketConnection)
    assert client.connection_pool.connection_class.pack_command is not UnixDomainSocketConnection.pack_command


async def test_round_trip_on_real_redis(real_redis: aioredis.Redis) -> None:
    # real_redis comes from connect(): every broker test on a real Redis uses this packing.
    assert real_redis.connection_pool.connection_class.pack_command is not Connection.pack_command
    await real_redis.hset("h", mapping={"ü": "✓", "n": 12, "f": 0.25})
    assert await real_redis.hgetall("h") == {"ü".encode(): "✓".encode(), b"n": b"12", b"f": b"0.25"}
    assert await real_redis.eval("return {KEYS[1], ARGV[1], ARGV[2]}", 1, "k", -3, "x y") == [b"k", b"-3", b"x y"]
