"""The bare baselines: Litestar GETs returning a small JSON body, served by granian
with the same worker count, event loop and access-log setting as ``connecfy serve``.
What an endpoint of ours does is compared with what these do on the same box.

``/bare``        nothing else: what Litestar on granian can answer at all;
``/bare-wait``   ``?wait=N``: answers after N seconds (at most 60), a long poll with
                 nothing else (``bench/wait_memory.py`` holds one per connection);
``/bare-redis``  plus one no-op ``EVALSHA`` through the server's own Redis client (hiredis
                 packing, same pool): the most an endpoint making one script call could
                 reach, before any credential check, validation or real script work.
                 Only served when ``BENCH_REDIS_URL`` is set.

    python3 -m bench.load.bare_app --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from litestar import Litestar, get
from litestar.datastructures import State

from broker.redis_client import connect

NOOP = "return 1"


@get("/bare", sync_to_thread=False)
def bare() -> dict[str, str]:
    return {"status": "ok", "device_id": "01J0000000000000000000000"}


@get("/bare-wait")
async def bare_wait(wait: int = 0) -> dict[str, str]:
    await asyncio.sleep(min(max(wait, 0), 60))
    return {"status": "ok", "device_id": "01J0000000000000000000000"}


@get("/bare-redis")
async def bare_redis(state: State) -> dict[str, str]:
    await state["redis"].evalsha(state["sha"], 1, "{bench}:noop", "a", "b")
    return {"status": "ok", "device_id": "01J0000000000000000000000"}


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    url = os.environ.get("BENCH_REDIS_URL")
    if url:
        client = connect(url, max_connections=64)
        app.state["redis"], app.state["sha"] = client, await client.script_load(NOOP)
    yield
    if url:
        await app.state["redis"].aclose()


app = Litestar(route_handlers=[bare, bare_wait, bare_redis], openapi_config=None, lifespan=[lifespan])


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--idle-seconds", type=int, default=30, help="how long an idle keep-alive connection stays open (default 30)"
    )
    parser.add_argument("--connections", type=int, default=None, help="connections a worker holds at once")
    args = parser.parse_args()
    Granian(
        "bench.load.bare_app:app",
        address="127.0.0.1",
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        backpressure=args.connections,
        http1_settings=HTTP1Settings(header_read_timeout=args.idle_seconds * 1000),
        loop=Loops.uvloop,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
