"""One load generator process: a share of the phones, run on an event loop of its own.

``python3 -m bench.load.generator`` is started by the parent (``bench.load.fleet``) with
pipes for stdin and stdout, and speaks in frames on them (a 4-byte length, then one
msgpack message). The parent sends :class:`Start` (the server, the run's clock, the
phones' behaviour and credentials), then any :class:`Command` (phones going offline or
coming back, and at the end ``stop``). The process sends a :class:`Tick` once its phones
have started (the parent's warm-up counts from there: starting Python takes a while),
then every :data:`TICK_SECONDS`: the claims and reports since the last one (the parent's ledger is
the one that counts), the per-second rows of the seconds now complete, its event loop's
lateness samples, its CPU so far, and gauges (sends in flight, open connections). After
``stop`` (or when its stdin closes: the parent is gone) it stops the phones, sends a last
tick and :class:`Final` (every latency, error and lateness), and exits.

Its stdout carries frames only: anything printed goes to stderr.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import resource
import sys
import time
from typing import Any

import msgspec

from bench.load.client import Http, Recorder, Second
from bench.load.http1 import Connections
from bench.load.ledger import Ledger
from bench.load.loop_lag import LoopLag
from bench.load.phones import PhoneBehaviour, PhoneCredentials, PhoneSwarm

TICK_SECONDS = 0.5
GC_THRESHOLDS = (50_000, 20, 100)


class Start(msgspec.Struct, tag="start"):
    index: int
    base_url: str
    t0: float  # the parent's Recorder.t0 (the system's monotonic clock)
    behaviour: dict[str, Any]  # PhoneBehaviour's fields
    phones: list[PhoneCredentials]
    seed: int | None = None


class Command(msgspec.Struct, tag="command"):
    action: str  # "offline", "online" or "stop"
    device_ids: list[str] = []


class Row(msgspec.Struct, array_like=True):
    """One second of ``Recorder.seconds``."""

    requests: dict[str, int]
    errors: dict[str, int]
    messages: int
    latencies: dict[str, list[float]]

    @classmethod
    def of(cls, second: Second) -> Row:
        return cls(dict(second.requests), dict(second.errors), second.messages, dict(second.latencies))

    def second(self) -> Second:
        row = Second()
        row.requests.update(self.requests)
        row.errors.update(self.errors)
        row.messages = self.messages
        for kind, values in self.latencies.items():
            row.latencies[kind] = values
        return row


class Tick(msgspec.Struct, tag="tick"):
    now: float  # run seconds
    cpu: float  # this process's CPU seconds so far
    claims: list[tuple[str, str, float]]  # (message id, device id, at), every claim incl. repeats
    reports: list[tuple[str, str, float]]  # (message id, status, at), each acknowledged report
    seconds: dict[int, Row]
    loop_lag: list[tuple[float, float]]  # (planned wake, seconds late)
    in_flight: int  # sends and reports not finished
    connections: int  # open now
    peak_connections: int
    rejected_reports: int
    long_polls_with_tasks: int
    long_polls_answered_early: int


class Final(msgspec.Struct, tag="final"):
    latencies: dict[str, list[float]]
    errors: dict[str, dict[str, int]]
    lags: list[float]


Message = Start | Command | Tick | Final
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def frame(message: Message) -> bytes:
    body = _encoder.encode(message)
    return len(body).to_bytes(4, "big") + body


async def read_frame(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None at the end of the stream."""
    try:
        head = await reader.readexactly(4)
        return _decoder.decode(await reader.readexactly(int.from_bytes(head, "big")))
    except asyncio.IncompleteReadError:
        return None


class StreamingLedger(Ledger):
    """What a generator's phones tell the ledger: kept for the next tick (the parent's
    ledger is the one that counts), and the claims each phone holds, with which it
    de-duplicates them. Nothing else is kept: no entry per message to slow the
    garbage collector's passes."""

    def __init__(self) -> None:
        super().__init__()
        self.claims_out: list[tuple[str, str, float]] = []
        self.reports_out: list[tuple[str, str, float]] = []
        self.held: set[tuple[str, str]] = set()  # (message id, device id)

    def claim(self, message_id: str, device_id: str, at: float) -> bool:
        self.claims_out.append((message_id, device_id, at))
        if (message_id, device_id) in self.held:
            return False
        self.held.add((message_id, device_id))
        return True

    def reported(self, message_id: str, status: str, at: float) -> None:
        self.reports_out.append((message_id, status, at))


def raise_open_files_limit() -> int:
    """The soft limit on open files raised to the hard one (every connection is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


class Generator:
    def __init__(self, start: Start, out: asyncio.StreamWriter) -> None:
        self.out = out
        self.recorder = Recorder(start.t0)
        self.ledger = StreamingLedger()
        # The swarm's own Http only names the server and the clock: each phone has its own.
        self.swarm = PhoneSwarm(
            Http(start.base_url, self.recorder, connections=1),
            self.ledger,
            PhoneBehaviour(**start.behaviour),
            connection_per_phone=True,
        )
        self.phones = {p.device_id: p for p in self.swarm.adopt(start.phones)}
        self.lag = LoopLag(self.recorder.now)

    def tick(self) -> Tick:
        now = self.recorder.now()
        claims, self.ledger.claims_out = self.ledger.claims_out, []
        reports, self.ledger.reports_out = self.ledger.reports_out, []
        return Tick(
            now=now,
            cpu=time.process_time(),
            claims=claims,
            reports=reports,
            seconds={s: Row.of(row) for s, row in self.recorder.take_seconds(int(now)).items()},
            loop_lag=self.lag.take(),
            in_flight=self.swarm.in_flight(),
            connections=Connections.open,
            peak_connections=Connections.peak,
            rejected_reports=self.swarm.rejected_reports,
            long_polls_with_tasks=self.swarm.long_polls_with_tasks,
            long_polls_answered_early=self.swarm.long_polls_answered_early,
        )

    async def send(self, message: Message) -> None:
        self.out.write(frame(message))
        await self.out.drain()

    async def ticking(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self.send(self.tick())

    async def run(self, commands: asyncio.StreamReader) -> None:
        self.swarm.start()
        # Thousands of phones are long-lived objects: leave them out of the collector's
        # passes, and run its passes less often (a full pass over them all stalls the loop).
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        await self.send(self.tick())  # the first tick says the phones have started
        background = [asyncio.create_task(self.lag.run()), asyncio.create_task(self.ticking())]
        try:
            while (message := await read_frame(commands)) is not None:
                if not isinstance(message, Command) or message.action == "stop":
                    break
                for device_id in message.device_ids:
                    phone = self.phones.get(device_id)
                    if phone is None:
                        continue
                    if message.action == "offline":
                        phone.go_offline()
                    else:
                        phone.come_back()
        finally:
            for task in background:
                task.cancel()
            await self.swarm.stop()
        now = self.recorder.now()
        last = self.tick()
        last.seconds.update({s: Row.of(row) for s, row in self.recorder.take_seconds(int(now) + 2).items()})
        await self.send(last)
        recorder = self.recorder
        await self.send(
            Final(
                latencies=dict(recorder.latencies),
                errors={kind: dict(counts) for kind, counts in recorder.errors.items()},
                lags=recorder.lags,
            )
        )


async def serve(protocol_out: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(protocol_out, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    start = await read_frame(reader)
    if not isinstance(start, Start):
        raise SystemExit("bench generator: the first message must be Start")
    if start.seed is not None:
        random.seed(start.seed * 1000 + start.index)
    await Generator(start, writer).run(reader)
    transport.close()


def main() -> int:
    raise_open_files_limit()
    # Frames go on the original stdout; anything else printed goes to stderr.
    protocol_out = os.dup(1)
    os.dup2(2, 1)
    from connecfy.cli import run_async

    run_async(serve(protocol_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
