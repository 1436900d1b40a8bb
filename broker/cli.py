"""The ``connecfy`` command.

``connecfy --version`` prints the version; ``connecfy selfcheck`` starts a private Redis
(or uses ``REDIS_URL``), loads every script and walks one message through pairing,
heartbeat, send, claim and report, printing each step.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile

import redis.asyncio as aioredis

from broker import __version__
from broker.broker import Broker
from broker.records import OutgoingMessage
from broker.redis_server import RedisServer, redis_server_version
from broker.settings import Settings


async def _walk(url: str, settings: Settings) -> None:
    client = aioredis.from_url(url)
    try:
        broker = Broker(client, settings)
        await broker.start()
        print(f"scripts loaded: {', '.join(sorted(broker.scripts.scripts))}")
        account = await broker.create_account(f"selfcheck-{id(broker)}@connecfy.invalid", "self_managed")
        code = await broker.create_pairing_code(account)
        device = await broker.register_device(code.code, "selfcheck phone")
        print(f"paired device {device.device_id} with code {code.code}")
        await broker.heartbeat(device.ref, battery=100)
        queued = await broker.enqueue(account, [OutgoingMessage("+15551234567", "Hello", device.device_id)])
        claimed = await broker.claim(device.ref)
        if [m.id for m in claimed] != queued.ids:
            raise SystemExit(f"selfcheck failed: queued {queued.ids}, claimed {[m.id for m in claimed]}")
        change = await broker.report_status(device.ref, queued.ids[0], "sent")
        print(f"message {change.id}: queued -> claimed -> {change.status}")
        print("selfcheck passed")
    finally:
        await client.aclose()


def selfcheck(settings: Settings) -> int:
    if settings.redis_url:
        asyncio.run(_walk(settings.redis_url, settings))
        return 0
    with tempfile.TemporaryDirectory(prefix="connecfy-selfcheck-") as data_dir:
        with RedisServer(data_dir, appendonly=False) as server:
            print(f"started redis-server {redis_server_version(server.binary)} ({server.binary})")
            asyncio.run(_walk(server.url, settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connecfy", description="Connecfy SMS gateway")
    parser.add_argument("--version", action="version", version=f"connecfy {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("selfcheck", help="walk one message through a private Redis and report")
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        return selfcheck(Settings.from_env())
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
