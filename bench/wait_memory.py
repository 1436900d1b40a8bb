"""Server memory per waiting phone: what an idle keep-alive connection and a waiting long
poll each cost ``connecfy serve``.

Run it from the repository root::

    python3 -m bench.wait_memory                                # 5,000 phones
    python3 -m bench.wait_memory --phones 20000 --json /tmp/wait-memory.json
    python3 -m bench.wait_memory --variant base --variant arena2:MALLOC_ARENA_MAX=2 --rounds 2
    python3 -m bench.wait_memory --variant base --variant bare --census

Each run starts ``connecfy serve --workers 2`` afresh (its private Redis, settings as
``bench.load`` gives a local server; ``bench/load/deployment.py``), pairs ``--phones``
phones through the API (``bench/load/phones.py``) and measures the server's memory, its
private Redis apart (serve, its workers and its background process: RSS, and PSS from
``/proc/<pid>/smaps_rollup``, which counts a page shared by k processes as 1/k), at
three points:

(a) **paired**: the phones paired, none connected;
(b) **connections**: each phone holds one keep-alive connection, from its own source
    address (127.1.0.1, 127.1.0.2, ... as ``bench/load/fleet.py`` gives them), idle after
    one plain poll (``GET .../tasks/``);
(c) **waits**: each phone's connection carries a long poll (``?wait=60``) that waits.

At each point the figure is taken once the servers' RSS is steady (two samples a second
apart within 0.2%), at most ``--settle`` seconds after the last phone got there. The
report gives KiB per connection ((b) - (a)) / N and KiB per wait beyond its connection
((c) - (b)) / N, by RSS and by PSS, and each process's RSS at each point. The server
gets ``CONNECFY_HTTP_IDLE_TIMEOUT_SECONDS=600`` (no idle connection is closed during the
run) and ``CONNECFY_LONG_POLL_MAX_WAITS`` of ``--phones`` (no wait is answered at once
for a worker's cap); a wait answered before the end of (c) is counted and reported.

The phones' connections are held by client processes of their own (``python3 -m
bench.wait_memory client``), at most ``--phones-per-process`` (default 16,000: a
process may hold 20,000 open files on this box) each.

``--variant NAME[@CHECKOUT][:K=V,K=V...]`` runs the server with extra environment, and
the code of another checkout when given (a directory, e.g. from ``git archive``), for a
before/after in one run (repeatable; ``base`` is this checkout's server as it is); the variant ``bare`` (or ``bare:K=V...``) is instead
``bench/load/bare_app.py`` on granian with the same workers, event loop and idle
timeout: (b) and (c) are then ``GET /bare`` and ``GET /bare-wait?wait=60`` on each
connection, what granian and Litestar cost with nothing of ours. ``--rounds R`` runs
every variant R times, alternating their order round by round; the report gives each
variant's medians. ``--census`` also counts the Python objects of every server process
by type at each point (a ``sitecustomize`` that dumps ``gc.get_objects()`` on SIGUSR2,
put on the server's ``PYTHONPATH`` for the run) and reports the types that grew most from
(b) to (c), per wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from bench.load.accounts import Account
from bench.load.client import Http, Recorder
from bench.load.deployment import ROOT, LocalServer, answers_200, checkout_env, free_port
from bench.load.fleet import phone_address
from bench.load.generator import raise_open_files_limit
from bench.load.http1 import Http1Pool
from bench.load.phones import pair

WAIT_SECONDS = 60
POINTS = ("paired", "connections", "waits")
KIB = 1024
MIB = 1024 * 1024
STEADY = 0.002
CENSUS_TOP = 15
WAITS_PER_STEP = 10

CENSUS_SITECUSTOMIZE = """
import gc, json, os, signal, sys
from collections import Counter

def _census(signum, frame):
    counts, sizes = Counter(), Counter()
    for o in gc.get_objects():
        name = type(o).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(o)
    path = os.path.join(os.environ["WAIT_MEMORY_CENSUS_DIR"], f"{os.getpid()}-{signum}.json")
    with open(path + ".tmp", "w") as out:
        json.dump({"argv": sys.argv, "counts": counts, "sizes": sizes, "blocks": sys.getallocatedblocks()}, out)
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR2, _census)
"""


# The client side: a process holding its share of the phones' connections.


class Phone(msgspec.Struct, array_like=True):
    device_id: str
    token: str
    address: str


class ClientStart(msgspec.Struct):
    base_url: str
    bare: bool
    phones: list[Phone]
    waits_per_second: float


async def client_main() -> int:
    """Read a ClientStart line, then commands (``connect``, ``wait``, ``count``,
    ``quit``) on stdin, answering each with one JSON line on stdout."""
    raise_open_files_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    start = msgspec.json.decode(await reader.readline(), type=ClientStart)
    pools = [
        Http1Pool(start.base_url, size=1, timeout=WAIT_SECONDS + 60, local_address=p.address) for p in start.phones
    ]
    gate = asyncio.Semaphore(256)  # connections being opened at once
    waits: list[asyncio.Task[Any]] = []

    def path(phone: Phone, wait: int) -> str:
        if start.bare:
            return f"/bare-wait?wait={wait}" if wait else "/bare"
        return f"/api/devices/{phone.device_id}/tasks/" + (f"?wait={wait}" if wait else "")

    async def request(pool: Http1Pool, phone: Phone, wait: int) -> int:
        try:
            status, _, _ = await pool.request("GET", path(phone, wait), headers={"X-Device-Token": phone.token})
            return status
        except (OSError, TimeoutError) as exc:
            return -1 if isinstance(exc, TimeoutError) else 0

    async def connect(pool: Http1Pool, phone: Phone) -> int:
        async with gate:
            return await request(pool, phone, 0)

    def reply(answer: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    while True:
        line = (await reader.readline()).decode().strip()
        if line in ("", "quit"):
            break
        if line == "connect":
            statuses = await asyncio.gather(*(connect(pool, p) for pool, p in zip(pools, start.phones, strict=True)))
            reply({"ok": sum(s == 200 for s in statuses), "statuses": Counter(map(str, statuses))})
        elif line == "wait":
            for n, (pool, p) in enumerate(zip(pools, start.phones, strict=True)):
                waits.append(asyncio.create_task(request(pool, p, WAIT_SECONDS)))
                if n % WAITS_PER_STEP == WAITS_PER_STEP - 1:
                    await asyncio.sleep(WAITS_PER_STEP / start.waits_per_second)
            reply({"sent": len(waits)})
        elif line == "count":
            done = [w.result() for w in waits if w.done()]
            reply({"answered": len(done), "statuses": Counter(map(str, done))})
    for task in waits:
        task.cancel()
    for pool in pools:
        await pool.close()
    return 0


# The parent: the server, the pairing, the measurements.


@dataclass
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    root: Path = ROOT  # the checkout whose code the server runs

    @property
    def bare(self) -> bool:
        return self.name == "bare" or self.name.startswith("bare-")

    @classmethod
    def parse(cls, text: str) -> Variant:
        head, _, rest = text.partition(":")
        name, _, checkout = head.partition("@")
        env: dict[str, str] = {}
        last = ""
        for item in filter(None, rest.split(",")):
            if "=" in item:
                last, value = item.split("=", 1)
                env[last] = value
            elif last:  # a comma inside a value (MALLOC_CONF=a:1,b:2)
                env[last] += "," + item
        return cls(name, env, Path(checkout).resolve() if checkout else ROOT)


def pss_bytes(pid: int) -> int:
    """The process's proportional set size (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0


def role(process: psutil.Process, root: int) -> str:
    if process.pid == root:
        return "serve"
    cmdline = " ".join(process.cmdline())
    return "background" if " background" in cmdline else "worker"


def server_processes(root: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(root)
        return [p for p in [top, *top.children(recursive=True)] if p.name() != "redis-server"]
    except psutil.NoSuchProcess:
        return []


def sample(root: int) -> dict[str, Any]:
    rows = []
    for process in server_processes(root):
        try:
            rows.append({"pid": process.pid, "role": role(process, root), "rss": process.memory_info().rss, "pss": 0})
            rows[-1]["pss"] = pss_bytes(process.pid)
        except psutil.NoSuchProcess:
            pass
    return {"rss": sum(r["rss"] for r in rows), "pss": sum(r["pss"] for r in rows), "processes": rows}


async def steady_sample(root: int, settle: float) -> dict[str, Any]:
    """A sample once two a second apart agree within :data:`STEADY`, or after ``settle`` s."""
    ends = time.monotonic() + settle
    last = await asyncio.to_thread(sample, root)
    while time.monotonic() < ends:
        await asyncio.sleep(1.0)
        now = await asyncio.to_thread(sample, root)
        steady = abs(now["rss"] - last["rss"]) <= STEADY * last["rss"]
        last = now
        if steady:
            break
    return last


Census = dict[int, dict[str, Any]]  # pid -> counts and sizes by type, allocated blocks


async def census(root: int, directory: Path) -> Census:
    """Python objects by type of every server process (SIGUSR2 to each, then its file):
    counts, bytes (``sys.getsizeof``) and the interpreter's allocated blocks."""
    for old in directory.glob("*.json"):
        old.unlink()
    pids = [p.pid for p in server_processes(root)]
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    found: Census = {}
    deadline = time.monotonic() + 60
    while len(found) < len(pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        for pid in pids:
            path = directory / f"{pid}-{int(signal.SIGUSR2)}.json"
            if pid not in found and path.exists():
                found[pid] = json.loads(path.read_text())
    return found


class Clients:
    """The client processes, each with its share of the phones."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(
        self, base_url: str, bare: bool, phones: list[Phone], per_process: int, waits_per_second: float
    ) -> None:
        count = max(1, math.ceil(len(phones) / per_process))
        for n in range(count):
            share = phones[n::count]
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.wait_memory",
                "client",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=checkout_env(dict(os.environ)),
                cwd=ROOT,
                limit=1 << 24,
            )
            assert process.stdin is not None
            process.stdin.write(
                msgspec.json.encode(ClientStart(base_url, bare, share, waits_per_second / count)) + b"\n"
            )
            self.processes.append(process)

    async def command(self, word: str) -> list[dict[str, Any]]:
        async def one(process: asyncio.subprocess.Process) -> dict[str, Any]:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(word.encode() + b"\n")
            await process.stdin.drain()
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"a client process ended (status {await process.wait()})")
            answer: dict[str, Any] = json.loads(line)
            return answer

        return list(await asyncio.gather(*(one(p) for p in self.processes)))

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None and process.stdin is not None:
                process.stdin.write(b"quit\n")
                with_timeout = asyncio.wait_for(process.wait(), 30)
                try:
                    await with_timeout
                except TimeoutError:
                    process.kill()
                    await process.wait()


def summed(answers: list[dict[str, Any]], key: str) -> Any:
    if key == "statuses":
        total: Counter[str] = Counter()
        for answer in answers:
            total.update(answer[key])
        return dict(total)
    return sum(answer[key] for answer in answers)


class BareServer:
    """``bench/load/bare_app.py`` on granian, as ``connecfy serve`` would be started."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONNECFY_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.load.bare_app",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--idle-seconds",
                "600",
                "--connections",
                "12000",
            ],
            env=checkout_env({**base, **env}),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not answers_200(self.port, "/bare"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the bare app did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def paired_phones(base_url: str, operator_email: str, operator_password: str, count: int) -> list[Phone]:
    recorder = Recorder()
    http = Http(base_url, recorder, connections=64)
    operator = Account(base_url, recorder, "operator")
    owner = Account(base_url, recorder, "own")
    try:
        await operator.login(operator_email, operator_password)
        await owner.signup("self_managed", secrets.token_hex(4))
        await operator.raise_limits(owner.id)
        paired = await pair(http, owner, count, concurrency=64)
    finally:
        for closing in (http, operator, owner):
            await closing.close()
    return [Phone(p.device_id, p.token, phone_address(n)) for n, p in enumerate(paired)]


async def run_variant(args: argparse.Namespace, variant: Variant, census_dir: Path | None) -> dict[str, Any]:
    env = dict(variant.env)
    if census_dir is not None:
        env["PYTHONPATH"] = str(census_dir)
        env["WAIT_MEMORY_CENSUS_DIR"] = str(census_dir)
    local: LocalServer | None = None
    bare: BareServer | None = None
    clients = Clients()
    result: dict[str, Any] = {
        "variant": variant.name,
        "env": variant.env,
        "checkout": str(variant.root),
        "phones": args.phones,
    }
    started = time.monotonic()
    try:
        if variant.bare:
            bare = BareServer(args.workers, env)
            root, base_url = bare.process.pid, f"http://127.0.0.1:{bare.port}"
            phones = [Phone("", "", phone_address(n)) for n in range(args.phones)]
        else:
            settings = {
                "CONNECFY_HTTP_IDLE_TIMEOUT_SECONDS": "600",
                "CONNECFY_LONG_POLL_MAX_WAITS": str(max(args.phones, 1)),
                **env,
            }
            local = LocalServer(workers=args.workers, time_scale=1.0, extra=settings, root=variant.root)
            deployment = local.start()
            assert deployment.server_pid is not None
            root, base_url = deployment.server_pid, deployment.base_url
            phones = await paired_phones(base_url, deployment.operator_email, deployment.operator_password, args.phones)
        result["pairing_seconds"] = round(time.monotonic() - started, 1)
        points: dict[str, Any] = {}
        censuses: dict[str, Census] = {}
        points["paired"] = await steady_sample(root, args.settle)
        if census_dir is not None:
            censuses["paired"] = await census(root, census_dir)
        await clients.start(base_url, variant.bare, phones, args.phones_per_process, args.waits_per_second)
        connected = await clients.command("connect")
        result["connected"] = summed(connected, "ok")
        result["connect_statuses"] = summed(connected, "statuses")
        points["connections"] = await steady_sample(root, args.settle)
        if census_dir is not None:
            censuses["connections"] = await census(root, census_dir)
        await clients.command("wait")
        await asyncio.sleep(2.0)
        points["waits"] = await steady_sample(root, args.settle)
        if census_dir is not None:
            censuses["waits"] = await census(root, census_dir)
        counted = await clients.command("count")
        result["answered_early"] = summed(counted, "answered")
        result["early_statuses"] = summed(counted, "statuses")
        result["points"] = points
        n = max(args.phones, 1)
        for kind in ("rss", "pss"):
            result[f"{kind}_per_connection_kib"] = (points["connections"][kind] - points["paired"][kind]) / n / KIB
            result[f"{kind}_per_wait_kib"] = (points["waits"][kind] - points["connections"][kind]) / n / KIB
        if censuses:
            result["census_per_wait"] = census_growth(censuses, "connections", "waits", n)
            result["census_per_connection"] = census_growth(censuses, "paired", "connections", n)
    finally:
        await clients.stop()
        if local is not None:
            local.stop(
                keep_log=Path(args.keep_logs) / f"{variant.name}-{os.getpid()}-{int(started)}.log"
                if args.keep_logs
                else None
            )
        if bare is not None:
            bare.stop()
    return result


def census_growth(censuses: dict[str, Census], before: str, after: str, n: int) -> dict[str, Any]:
    """Python objects per phone from ``before`` to ``after``, over every process: the
    types that grew most in bytes (count and bytes each), all bytes, allocated blocks."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    blocks = 0
    for pid, later in censuses[after].items():
        earlier = censuses[before].get(pid, {"counts": {}, "sizes": {}, "blocks": later["blocks"]})
        counts.update(later["counts"])
        counts.subtract(earlier["counts"])
        sizes.update(later["sizes"])
        sizes.subtract(earlier["sizes"])
        blocks += later["blocks"] - earlier["blocks"]
    return {
        "bytes": round(sum(sizes.values()) / n),
        "blocks": round(blocks / n, 1),
        "types": {k: [round(counts[k] / n, 2), round(v / n)] for k, v in sizes.most_common(CENSUS_TOP)},
    }


def report(results: list[dict[str, Any]]) -> str:
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    lines = [
        "| variant | runs | RSS MiB paired / connections / waits | PSS MiB waits "
        "| KiB per connection, RSS / PSS | KiB per wait, RSS / PSS | answered early |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in by_variant.items():

        def med(key: str, point: str | None = None, runs: list[dict[str, Any]] = runs) -> float:
            if point is None:
                return statistics.median(r[key] for r in runs)
            return statistics.median(r["points"][point][key] for r in runs) / MIB

        lines.append(
            f"| {name} | {len(runs)} | {med('rss', 'paired'):.0f} / {med('rss', 'connections'):.0f} / "
            f"{med('rss', 'waits'):.0f} | {med('pss', 'waits'):.0f} | "
            f"{med('rss_per_connection_kib'):.1f} / {med('pss_per_connection_kib'):.1f} | "
            f"{med('rss_per_wait_kib'):.1f} / {med('pss_per_wait_kib'):.1f} | "
            f"{max(r['answered_early'] for r in runs)} |"
        )
    lines.append("")
    for result in results:
        roles = []
        for point in POINTS:
            rows = result["points"][point]["processes"]
            roles.append(
                point
                + " "
                + ", ".join(f"{r['role']} {r['rss'] / MIB:.0f}" for r in sorted(rows, key=lambda r: r["pid"]))
            )
        lines.append(
            f"{result['variant']}: connected {result['connected']}/{result['phones']} "
            f"(statuses {result['connect_statuses']}), answered early {result['early_statuses']}; "
            f"RSS MiB by process: " + "; ".join(roles)
        )
        for key in ("census_per_connection", "census_per_wait"):
            if key in result:
                growth = result[key]
                types = ", ".join(f"{k} {c} ({b} B)" for k, (c, b) in growth["types"].items())
                lines.append(f"  {key}: {growth['bytes']} B of objects, {growth['blocks']} blocks: {types}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    variants = [Variant.parse(v) for v in args.variant] or [Variant("base")]
    raise_open_files_limit()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wait-memory-") as scratch:
        census_dir: Path | None = None
        if args.census:
            census_dir = Path(scratch)
            (census_dir / "sitecustomize.py").write_text(CENSUS_SITECUSTOMIZE)
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for variant in order:
                result = await run_variant(args, variant, census_dir)
                result["round"] = round_
                results.append(result)
                if not args.quiet:
                    print(
                        f"wait_memory: round {round_ + 1} {variant.name}: "
                        f"KiB per connection {result['rss_per_connection_kib']:.1f}, "
                        f"per wait {result['rss_per_wait_kib']:.1f} (RSS)",
                        file=sys.stderr,
                        flush=True,
                    )
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.wait_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--phones", type=int, default=5000, help="phones, each with one connection (default 5,000)")
    parser.add_argument("--workers", type=int, default=2, help="request workers (default 2)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME[:K=V,...]: the server with extra environment; 'bare' is the bare granian app (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of every variant, alternating (default 1)")
    parser.add_argument("--settle", type=float, default=15.0, help="most seconds to wait for steady RSS (default 15)")
    parser.add_argument(
        "--phones-per-process", type=int, default=16_000, help="phones per client process (default 16,000)"
    )
    parser.add_argument(
        "--waits-per-second",
        type=float,
        default=1000.0,
        help="long polls asked a second, all phones together (default 1,000: a burst of thousands at once "
        "makes a busy box's claims wait past the Redis client's timeout, and those polls are answered 503)",
    )
    parser.add_argument("--census", action="store_true", help="count server objects by type at each point")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--keep-logs", help="copy each server's log into this directory")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main() -> int:
    if sys.argv[1:2] == ["client"]:
        import uvloop

        return uvloop.run(client_main())
    import uvloop

    return uvloop.run(main_async(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
