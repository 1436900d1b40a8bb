"""The ``connecfy`` command.

``connecfy --version`` prints the version; ``connecfy selfcheck`` starts a private Redis
(or uses ``REDIS_URL``), loads every script and walks one message through pairing,
heartbeat, send, claim and report, printing each step. ``connecfy restore`` rebuilds an
empty Redis from the history store. ``connecfy background`` runs the background jobs
(``connecfy serve`` starts one).

A mistake ends in one line on stderr, ``connecfy: ...``, and exit status 2 for a wrong
option or setting, 1 for what the world refused (:mod:`connecfy.errors`); never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import tempfile
import urllib.parse
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import msgspec

from broker import __version__
from broker.broker import Broker
from broker.errors import BrokerError, InvalidInput
from broker.records import OutgoingMessage
from broker.redis_client import REDIS_AWAY, connect, open_redis
from broker.settings import Settings
from connecfy.datadir import not_a_directory, redis_url_for
from connecfy.errors import RUNTIME, USAGE, CommandError, report
from connecfy.redis_server import RedisServer, redis_server_version

T = TypeVar("T")


def shown(url: str) -> str:
    """``url`` fit to print: a password in it is masked."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_redis_url(url: str | None) -> None:
    """A ``REDIS_URL`` that is not a Redis URL is a mistake in the settings (2), found
    before anything starts; whether it answers is another matter."""
    if not url:
        return
    try:
        connect(url)  # parses the URL; connects on first use only
    except ValueError as exc:
        raise CommandError(f"REDIS_URL {shown(url)!r} is not a Redis URL: {exc}", USAGE) from None


def against_redis(url: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``, which talks to the Redis at ``url``: Redis unreachable is one line (1)."""
    try:
        return asyncio.run(main)
    except (*REDIS_AWAY, OSError) as exc:
        raise CommandError(f"cannot reach Redis at {shown(url)}: {exc}", RUNTIME) from None


async def _answers(url: str, settings: Settings) -> None:
    client = await open_redis(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        await Broker(client, settings).ready()
    finally:
        await client.aclose()


def check_redis_answers(url: str, settings: Settings) -> None:
    """One look, before a long-running command starts: a Redis that does not answer is
    one line (1), not a server that starts and answers 503."""
    against_redis(url, _answers(url, settings))


async def _walk(url: str, settings: Settings) -> None:
    client = await open_redis(url)
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
            raise CommandError(f"selfcheck failed: queued {queued.ids}, claimed {[m.id for m in claimed]}")
        change = await broker.messages.report_status(device.ref, queued.ids[0], "sent")
        print(f"message {change.id}: queued -> claimed -> {change.status}")
        print("selfcheck passed")
    finally:
        await client.aclose()


def selfcheck(settings: Settings) -> int:
    if settings.redis_url:
        against_redis(settings.redis_url, _walk(settings.redis_url, settings))
        return 0
    with tempfile.TemporaryDirectory(prefix="connecfy-selfcheck-") as data_dir:
        try:
            server = RedisServer(data_dir, appendonly=False, exit_with_parent=True).start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise CommandError(f"cannot start a private Redis: {exc}") from None
        try:
            print(f"started redis-server {redis_server_version(server.binary)} ({server.binary})")
            against_redis(server.url, _walk(server.url, settings))
        finally:
            server.stop()
    return 0


async def _create_operator(url: str, settings: Settings, email: str, password: str) -> str:
    from api.auth import hash_password

    client = await open_redis(url)
    try:
        broker = Broker(client, settings)
        await broker.start()
        account = await broker.accounts.create(
            email, "self_managed", operator=True, password_hash=await hash_password(password)
        )
        return account.id
    finally:
        await client.aclose()


def read_password(from_stdin: bool) -> str:
    """The operator's password: the first line of standard input, or asked on the
    terminal (no terminal and no ``--password-stdin`` is a mistake, 2)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    with warnings.catch_warnings():
        # getpass with no terminal warns, then reads standard input with echo on.
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass("Password for the operator: ")
        except getpass.GetPassWarning:
            raise CommandError(
                "no terminal to ask the password on; give it on standard input with --password-stdin", USAGE
            ) from None
        except EOFError:
            raise CommandError("no password given", USAGE) from None


def operator_create(settings: Settings, email: str, password_stdin: bool, data_dir: str | None) -> int:
    from api.auth import MAX_PASSWORD, MIN_PASSWORD

    url = redis_url_for(settings, data_dir)  # no server to create it in: say so before asking
    password = read_password(password_stdin)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise CommandError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", USAGE)
    try:
        account_id = against_redis(url, _create_operator(url, settings, email, password))
    except InvalidInput as exc:
        raise CommandError(f"--email {email!r}: {exc.detail}", USAGE) from None
    except BrokerError as exc:
        raise CommandError(f"cannot create the operator {email}: {exc.detail}") from None
    print(f"operator {email} created (account {account_id})")
    return 0


async def _restore(url: str, settings: Settings, data_dir: str | None) -> str:
    from broker.history import HistoryStore
    from broker.restore import restore

    client = await open_redis(url)
    store = HistoryStore.from_settings(settings, data_dir)
    try:
        await store.start()
        broker = Broker(client, settings)
        await broker.start()
        report = await restore(broker, store)
        return (
            f"restored {report.accounts} accounts, {report.devices} devices, {report.api_keys} API keys, "
            f"{report.threads} inbox threads and {report.live_messages} unfinished messages "
            f"({report.stored_messages} messages in the store)"
        )
    finally:
        await store.close()
        await client.aclose()


def restore_command(settings: Settings, data_dir: str | None) -> int:
    from sqlalchemy.exc import DBAPIError

    from broker.restore import RestoreRefused

    url = redis_url_for(settings, data_dir)
    try:
        print(against_redis(url, _restore(url, settings, data_dir)))
    except RestoreRefused as exc:
        raise CommandError(exc.detail) from None
    except DBAPIError as exc:
        raise CommandError(f"cannot read the history store: {exc.orig or exc}") from None
    return 0


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def background_command(settings: Settings, data_dir: str | None, parent_pid: int | None) -> int:
    from api.observability import configure_logging, swept, watch_gc_pauses, webhook_attempted
    from broker.jobs import Observers
    from connecfy.background import check_history_shared, run

    # The history store and the host's identity go by the data directory given.
    settings = msgspec.structs.replace(
        settings, redis_url=redis_url_for(settings, data_dir), data_dir=data_dir or settings.data_dir
    )
    assert settings.redis_url
    if parent_pid is None:
        # Run by hand: a Redis that does not answer is a mistake to report, and so is
        # history that would be split between hosts. Started by serve (which has asked
        # both), it waits for a Redis that is away.
        check_redis_answers(settings.redis_url, settings)
        check_history_shared(settings)
    configure_logging()
    watch_gc_pauses("background")
    run_async(run(settings, observers=Observers(swept, webhook_attempted), parent_pid=parent_pid))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, ``connecfy: [subcommand: ]what``, exit 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("connecfy").strip()
        report(f"{where}: {message}" if where else message)
        sys.exit(USAGE)


def _whole_number(low: int, high: int | None, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f"{low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} ({bounds})")
        return value

    return parse


PORT = _whole_number(1, 65535, "a port number")
COUNT = _whole_number(1, None, "a number of workers")
PID = _whole_number(1, None, "a process id")


def parser() -> Parser:
    parser = Parser(prog="connecfy", description="Connecfy SMS gateway")
    parser.add_argument("--version", action="version", version=f"connecfy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("selfcheck", help="walk one message through a private Redis and report")
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=PORT, default=8000)
    serve.add_argument("--workers", type=COUNT, default=1)
    serve.add_argument("--data-dir", default=None, help="where the private Redis keeps its data")
    operator = commands.add_parser("operator", help="manage the operator account")
    operator_commands = operator.add_subparsers(dest="operator_command", metavar="create", required=True)
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
        "--parent-pid", type=PID, default=None, help="stop when this process (the one starting this one) is gone"
    )
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    data_dir: str | None = getattr(args, "data_dir", None)
    if data_dir is not None and not data_dir:
        raise CommandError("--data-dir is empty", USAGE)
    where = Path(data_dir or settings.data_dir)
    if args.command != "selfcheck" and where.exists() and not where.is_dir():
        raise not_a_directory(where)
    check_redis_url(settings.redis_url)
    if args.command == "selfcheck":
        return selfcheck(settings)
    if args.command == "serve":
        from connecfy.server import serve as run_server

        if settings.redis_url:
            from connecfy.background import check_history_shared

            check_redis_answers(settings.redis_url, settings)
            check_history_shared(settings, data_dir)
        return run_server(settings, host=args.host, port=args.port, workers=args.workers, data_dir=data_dir)
    if args.command == "operator":
        return operator_create(settings, args.email, args.password_stdin, data_dir)
    if args.command == "restore":
        return restore_command(settings, data_dir)
    if args.command == "background":
        return background_command(settings, data_dir, args.parent_pid)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.command is None:
        command_line.print_help()
        return USAGE
    try:
        try:
            settings = Settings.from_env()
        except ValueError as exc:
            raise CommandError(str(exc), USAGE) from None
        return run(args, settings)
    except CommandError as exc:
        report(exc.message)
        return exc.status
    except KeyboardInterrupt:
        report("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
