"""The run's phones: paired here (in the parent), run in generator processes.

A fleet of 20,000 phones, each holding its own connections, is more open files than one
process may hold (20,000 here) and more requests than one Python event loop answers on
time. So the parent pairs the phones through the API, gives each a source address of
its own (127.1.0.1, 127.1.0.2, ...: any address in 127.0.0.0/8 can be bound on Linux
without setup, and the server's per-address limits then see one address per phone, as
they would real phones), and deals them out to ``processes`` slices in turn (phone n to
slice n mod processes), so every slice has its share of own and pool phones; the default
number of slices keeps each within the open files a process may hold (at most
:data:`MAX_PHONES_PER_PROCESS` phones, each of :data:`CONNECTIONS_PER_PHONE`
connections). Each slice runs in a process of its own
(``bench.load.generator``), on the parent's clock. Their claims, reports and per-second
rows come back every half second and are folded into the parent's ledger and recorder
as they come, so the drain, the progress line and the invariants work as with one
process; each process's latencies, errors, lateness, CPU and event-loop lag come at the
end (the lag and CPU also as they go, for the measured window).

The senders stay in the parent, on connections of their own (from 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import resource
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.load import loop_lag
from bench.load.accounts import Account
from bench.load.client import Http, Recorder
from bench.load.deployment import ROOT, checkout_env
from bench.load.generator import Command, Final, Start, Tick, frame, read_frame
from bench.load.ledger import Ledger
from bench.load.phones import CONNECTIONS_PER_PHONE, PhoneBehaviour, PhoneCredentials, pair

FIRST_PHONE_ADDRESS = ipaddress.IPv4Address("127.1.0.1")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
MAX_PHONES_PER_PROCESS = 8_000
RESERVED_FILES = 512  # a generator's files that are not phone connections
STOP_TIMEOUT = 60.0


def phone_address(index: int) -> str:
    """The source address of the ``index``-th phone (from 0), in 127.0.0.0/8."""
    address = FIRST_PHONE_ADDRESS + index
    if address not in LOOPBACK:
        raise ValueError(f"phone {index} would need an address outside 127.0.0.0/8")
    return str(address)


def on_loopback(base_url: str) -> bool:
    """Whether the server is at an IPv4 loopback address: phones can then each bind one
    of their own (to ``::1`` or another host, they connect from the kernel's choice)."""
    try:
        return ipaddress.ip_address(urlsplit(base_url).hostname or "") in LOOPBACK
    except ValueError:
        return False


def phones_per_process(open_files: int | None = None) -> int:
    """The most phones one generator takes: each may hold ``CONNECTIONS_PER_PHONE``
    connections, each an open file, within the hard limit of open files."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if open_files == resource.RLIM_INFINITY:
            open_files = 1 << 20
    return max(1, min(MAX_PHONES_PER_PROCESS, (open_files - RESERVED_FILES) // CONNECTIONS_PER_PHONE))


def default_processes(phones: int, open_files: int | None = None) -> int:
    return max(1, math.ceil(phones / phones_per_process(open_files)))


@dataclass
class GeneratorProcess:
    """The parent's side of one generator process."""

    index: int
    phones: int
    process: asyncio.subprocess.Process
    reading: asyncio.Task[None] | None = None
    last: Tick | None = None
    final: Final | None = None
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (run second, CPU seconds)
    connections: list[tuple[float, int]] = field(default_factory=list)  # (run second, open)
    loop_lag: list[tuple[float, float]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)  # its first tick came

    def cpu_percent(self, start: float, end: float) -> float | None:
        inside = [(t, c) for t, c in self.cpu if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100 * (c1 - c0) / (t1 - t0)


class Fleet:
    def __init__(
        self,
        base_url: str,
        recorder: Recorder,
        ledger: Ledger,
        behaviour: PhoneBehaviour,
        *,
        processes: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.base_url = base_url
        self.recorder = recorder
        self.ledger = ledger
        self.behaviour = behaviour
        self.processes = processes
        self.seed = seed
        self.own_addresses = on_loopback(base_url)
        self.credentials: list[PhoneCredentials] = []
        self.generators: list[GeneratorProcess] = []
        self.stopped = False
        self._owner: dict[str, GeneratorProcess] = {}

    async def pair(
        self, http: Http, owner: Account, count: int, *, pool: bool = False, budget: dict[str, int] | None = None
    ) -> list[PhoneCredentials]:
        """Pair ``count`` phones through the API (from ``http``, the senders' client), each
        given the next source address."""
        paired = await pair(http, owner, count, pool=pool, concurrency=64, budget=budget)
        if self.own_addresses:
            first = len(self.credentials)
            for n, phone in enumerate(paired):
                phone.address = phone_address(first + n)
        self.credentials.extend(paired)
        return paired

    def slices(self) -> list[list[PhoneCredentials]]:
        count = self.processes or default_processes(len(self.credentials))
        count = max(1, min(count, len(self.credentials)))
        return [self.credentials[n::count] for n in range(count)]

    async def start(self) -> None:
        """Start one generator process per slice, and return once every one has started
        its phones."""
        env = checkout_env(dict(os.environ))
        behaviour = asdict(self.behaviour)
        for index, phones in enumerate(self.slices()):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.load.generator",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                env=env,
                limit=2**30,
            )
            generator = GeneratorProcess(index, len(phones), process)
            self.generators.append(generator)
            for phone in phones:
                self._owner[phone.device_id] = generator
            assert process.stdin is not None
            process.stdin.write(frame(Start(index, self.base_url, self.recorder.t0, behaviour, phones, seed=self.seed)))
            await process.stdin.drain()
            generator.reading = asyncio.create_task(self._read(generator))
        for generator in self.generators:
            assert generator.reading is not None
            started = asyncio.create_task(generator.started.wait())
            await asyncio.wait([started, generator.reading], timeout=STOP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if not generator.started.is_set():
                started.cancel()
                raise RuntimeError(f"generator {generator.index} did not start its phones")

    async def _read(self, generator: GeneratorProcess) -> None:
        assert generator.process.stdout is not None
        while (message := await read_frame(generator.process.stdout)) is not None:
            if isinstance(message, Tick):
                self._apply(generator, message)
            elif isinstance(message, Final):
                generator.final = message
                self.recorder.merge(message.latencies, message.errors, message.lags)

    def _apply(self, generator: GeneratorProcess, tick: Tick) -> None:
        generator.started.set()
        generator.last = tick
        generator.cpu.append((tick.now, tick.cpu))
        generator.connections.append((tick.now, tick.connections))
        generator.loop_lag.extend(tick.loop_lag)
        for message_id, device_id, at in tick.claims:
            self.ledger.claim(message_id, device_id, at)
        for message_id, status, at in tick.reports:
            self.ledger.reported(message_id, status, at)
        for second, row in tick.seconds.items():
            self.recorder.merge_second(second, row.second())

    def _sum(self, name: str) -> int:
        return sum(getattr(g.last, name) for g in self.generators if g.last is not None)

    def in_flight(self) -> int:
        """Sends and reports the phones have not finished, as of the last ticks."""
        return self._sum("in_flight")

    @property
    def rejected_reports(self) -> int:
        return self._sum("rejected_reports")

    async def _command(self, action: str, device_ids: Iterable[str]) -> None:
        by_generator: dict[int, list[str]] = {}
        for device_id in device_ids:
            by_generator.setdefault(self._owner[device_id].index, []).append(device_id)
        for generator in self.generators:
            if generator.index in by_generator:
                await self._send(generator, Command(action, by_generator[generator.index]))

    async def _send(self, generator: GeneratorProcess, command: Command) -> None:
        stdin = generator.process.stdin
        if stdin is None or stdin.is_closing():
            return
        try:
            stdin.write(frame(command))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it is gone: stop() says so

    async def go_offline(self, device_ids: Iterable[str]) -> None:
        await self._command("offline", device_ids)

    async def come_back(self, device_ids: Iterable[str]) -> None:
        await self._command("online", device_ids)

    async def stop(self) -> None:
        """Stop every generator and take in its last records. A generator that died or
        does not finish in time is an error (after it is killed)."""
        if self.stopped:
            return
        self.stopped = True
        broken: list[str] = []
        for generator in self.generators:
            await self._send(generator, Command("stop"))
        for generator in self.generators:
            process = generator.process
            try:
                if generator.reading is not None:
                    await asyncio.wait_for(generator.reading, STOP_TIMEOUT)
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                broken.append(f"generator {generator.index} did not stop in {STOP_TIMEOUT:.0f} s")
                continue
            if generator.final is None or process.returncode != 0:
                broken.append(f"generator {generator.index} exited with {process.returncode} without its records")
        if broken:
            raise RuntimeError("; ".join(broken))

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """Each generator's phones, CPU, event-loop lag and connections from ``start`` to
        ``end`` (run seconds), and the worst of them."""
        rows = []
        for g in self.generators:
            held = [n for t, n in g.connections if start <= t <= end]
            last = g.last
            rows.append(
                {
                    "process": g.index,
                    "phones": g.phones,
                    "cpu_percent": g.cpu_percent(start, end),
                    "loop_lag_ms": loop_lag.summary(g.loop_lag, start, end),
                    "connections_max": max(held, default=0),
                    "connections_peak_whole_run": last.peak_connections if last else 0,
                    "long_polls_with_tasks": last.long_polls_with_tasks if last else 0,
                    "long_polls_answered_early": last.long_polls_answered_early if last else 0,
                }
            )
        return {
            "processes": len(rows),
            "by_process": rows,
            "loop_lag_p99_ms_worst": max((r["loop_lag_ms"]["p99_ms"] for r in rows), default=0.0),
            "loop_lag_max_ms_worst": max((r["loop_lag_ms"]["max_ms"] for r in rows), default=0.0),
            "cpu_percent_total": sum(r["cpu_percent"] or 0.0 for r in rows),
            "connections_max_sum": sum(r["connections_max"] for r in rows),
            "long_polls_answered_early": sum(r["long_polls_answered_early"] for r in rows),
            "source_addresses": len({c.address for c in self.credentials if c.address}),
        }
