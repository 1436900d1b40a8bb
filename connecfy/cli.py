"""The ``connecfy`` command.

``connecfy --version`` prints the version; ``connecfy selfcheck`` starts a private Redis
(or uses ``REDIS_URL``), loads every script and walks one message through pairing,
heartbeat, send, claim and report, printing each step. ``connecfy restore`` rebuilds an
empty Redis from the history store. ``connecfy background`` runs the background jobs
(``connecfy serve`` starts one).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import tempfile
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec

from broker import __version__
from broker.broker import Broker
from broker.records import OutgoingMessage
from broker.redis_client import connect
from broker.settings import Settings
from connecfy.redis_server import RedisServer, redis_server_version

T = TypeVar("T")


async def _walk(url: str, settings: Settings) -> None:
    client = connect(url)
    try:
        broker = Broker(client, settings)
        await broker.start()
        print(f"scripts loaded: {', '.join(sorted(broker.scripts.scripts))}")
        account = await broker.accounts.create(f"selfcheck-{id(broker)}@connecfy.invalid", "self_managed")
        code = await broker.devices.create_pairing_code(account)
        device = await broker.devices.register(code.code, "selfcheck phone")
        print(f"paired device {device.device_id} with code {code.code}")
        await broker.presence.heartbeat(device.ref, battery=100)
        queued = await broker.messages.enqueue(account, [OutgoingMessage("+15551234567", "Hello", device.device_id)])
        claimed = await broker.messages.claim(device.ref)
        if [m.id for m in claimed] != queued.ids:
            raise SystemExit(f"selfcheck failed: queued {queued.ids}, claimed {[m.id for m in claimed]}")
        change = await broker.messages.report_status(device.ref, queued.ids[0], "sent")
        print(f"message {change.id}: queued -> claimed -> {change.status}")
        print("selfcheck passed")
    finally:
        await client.aclose()


def selfcheck(settings: Settings) -> int:
    if settings.redis_url:
        asyncio.run(_walk(settings.redis_url, settings))
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="connecfy-selfcheck-") as data_dir,
        RedisServer(data_dir, appendonly=False) as server,
    ):
        print(f"started redis-server {redis_server_version(server.binary)} ({server.binary})")
        asyncio.run(_walk(server.url, settings))
    return 0


async def _create_operator(url: str, settings: Settings, email: str, password: str) -> str:
    from api.auth import hash_password

    client = connect(url)
    try:
        broker = Broker(client, settings)
        await broker.start()
        account = await broker.accounts.create(
            email, "self_managed", operator=True, password_hash=await hash_password(password)
        )
        return account.id
    finally:
        await client.aclose()


def operator_create(settings: Settings, email: str, password_stdin: bool, data_dir: str | None) -> int:
    from api.auth import MAX_PASSWORD, MIN_PASSWORD
    from connecfy.server import redis_url_for

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password for the operator: ")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        print(f"connecfy: the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", file=sys.stderr)
        return 2
    account_id = asyncio.run(_create_operator(redis_url_for(settings, data_dir), settings, email, password))
    print(f"operator {email} created (account {account_id})")
    return 0


async def _restore(url: str, settings: Settings, data_dir: str | None) -> str:
    from broker.history import HistoryStore
    from broker.restore import restore

    client = connect(url)
    store = HistoryStore.from_settings(settings, data_dir)
    try:
        await store.start()
        broker = Broker(client, settings)
        await broker.start()
        report = await restore(broker, store)
        return (
            f"restored {report.accounts} accounts, {report.devices} devices, {report.api_keys} API keys and "
            f"{report.live_messages} unfinished messages ({report.stored_messages} messages in the store)"
        )
    finally:
        await store.close()
        await client.aclose()


def restore_command(settings: Settings, data_dir: str | None) -> int:
    from broker.restore import RestoreRefused
    from connecfy.server import redis_url_for

    try:
        print(asyncio.run(_restore(redis_url_for(settings, data_dir), settings, data_dir)))
    except RestoreRefused as exc:
        print(f"connecfy: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def background_command(settings: Settings, data_dir: str | None, parent_pid: int | None) -> int:
    from api.observability import configure_logging, swept, webhook_attempted
    from broker.jobs import Observers
    from connecfy.background import run
    from connecfy.server import redis_url_for

    configure_logging()
    settings = msgspec.structs.replace(settings, redis_url=redis_url_for(settings, data_dir))
    run_async(run(settings, observers=Observers(swept, webhook_attempted), parent_pid=parent_pid))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connecfy", description="Connecfy SMS gateway")
    parser.add_argument("--version", action="version", version=f"connecfy {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("selfcheck", help="walk one message through a private Redis and report")
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--data-dir", default=None, help="where the private Redis keeps its data")
    operator = commands.add_parser("operator", help="manage the operator account")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)
    create = operator_commands.add_parser("create", help="create the operator (pairs pool phones)")
    create.add_argument("--email", required=True)
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.add_argument("--data-dir", default=None)
    restore = commands.add_parser("restore", help="rebuild an empty Redis (after a total loss) from the history store")
    restore.add_argument("--data-dir", default=None, help="the data directory of the running connecfy serve")
    background = commands.add_parser(
        "background", help="run the sweeper, history snapshotter and webhook dispatcher (connecfy serve starts one)"
    )
    background.add_argument("--data-dir", default=None, help="the data directory of the running connecfy serve")
    background.add_argument(
        "--parent-pid", type=int, default=None, help="stop when this process (the one starting this one) is gone"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"connecfy: {exc}", file=sys.stderr)
        return 2
    if args.command == "selfcheck":
        return selfcheck(settings)
    if args.command == "serve":
        from connecfy.server import serve as run_server

        return run_server(settings, host=args.host, port=args.port, workers=args.workers, data_dir=args.data_dir)
    if args.command == "operator":
        return operator_create(settings, args.email, args.password_stdin, args.data_dir)
    if args.command == "restore":
        return restore_command(settings, args.data_dir)
    if args.command == "background":
        return background_command(settings, args.data_dir, args.parent_pid)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
