"""Status webhooks under load: throughput and delay from a status change to the receiver.

Run from the repository root::

    python3 -m bench.webhook_bench                      # 1,000 changes/s for 60 s
    python3 -m bench.webhook_bench --rate 500 --seconds 30 --json bench/results/webhooks.json

The bench starts its own ``connecfy serve`` the way ``bench.load`` does (a temp data dir,
its private Redis, ``--workers`` workers, phone intervals shrunk by ``--time-scale``)
with plain-HTTP loopback webhooks allowed, and a receiver in a process of its own (so
it shares neither the server's nor the load generator's event loop). The receiver
answers 204 to every POST, checks every signature and records each event's id, type,
message id, ``created_at`` and its arrival time.

The load is ``bench.load``'s open loop: a self-managed account sends to its own phones
through the external and the batch API at ``--rate / 4`` messages a second, and the
phones claim each message, report it sent and then delivered, so every message makes
four status changes (queued, claimed, sent, delivered). After ``--seconds`` the senders
stop, the phones finish, every message's timeline is read back from the history pages,
and the receiver's events are matched against the timelines: an expected change with
no event is *missing*, an event id received twice a *duplicate*.

The baseline, in the same run and on the same server: the same load for an account with
no endpoint (the dispatcher then reads the streams but posts nothing), so the API's
latencies and the server's CPU are quoted with and without webhooks; and the receiver's
own ceiling (signed POSTs straight at it, as fast as the lean client goes), so a delay
can be told apart from a slow receiver.

CPU is sampled once a second per server process (the request workers, the background
process the dispatcher runs in, Redis), for the receiver and for the whole machine: on
a shared box a busy neighbour shows in the machine's figure rather than passing for our
slowness. ``--json`` keeps a per-second series (changes, events, delay, CPU) too.

Exit status 1 when an event is missing, duplicated, unexpected, badly signed or dropped
by the server after the drain (or nothing was sent at all).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import multiprocessing
import os
import platform
import secrets
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httptools
import msgspec
import psutil

from bench.load import report
from bench.load.accounts import LIFTED_BUDGET, Account, expect
from bench.load.client import KINDS, Http, Recorder, percentile
from bench.load.deployment import Deployment, LocalServer
from bench.load.http1 import Http1Pool, decoded
from bench.load.ledger import Ledger
from bench.load.phones import HEARTBEAT_SECONDS, PhoneBehaviour, PhoneSwarm
from bench.load.run import new_sender
from bench.load.senders import SenderSwarm, Stream
from connecfy.cli import run_async

CHANGES_PER_MESSAGE = 4  # queued, claimed, sent, delivered
TOLERANCE_SECONDS = 300  # a signature older than this is refused, as a receiver should
HOOK_PATH = "/hooks"
CEILING_PATH = "/ceiling"


# The receiver (its own process) ------------------------------------------------------------


def signature_ok(secret: bytes, header: str, body: bytes, now_s: int) -> bool:
    """What a receiver does with ``Connecfy-Signature: t=<s>,v1=<hex>[,v1=<hex>]``, written
    here from the documented scheme rather than imported, so a signer and a checker that
    agree only with each other cannot pass."""
    stamps, signatures = [], []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now_s - int(stamps[0])) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret, stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


class EventBody(msgspec.Struct):
    id: str
    type: str
    created_at: str
    data: dict[str, Any]


class Inbox:
    """Everything the receiver got, per path: one row per POST (event id, type, message
    id, created_at, arrival wall time), the ids seen, and the ones that failed the check.
    A badly signed event is still answered 204, and counted: a refusal would make the
    server retry it, and the retries would blur every other figure."""

    def __init__(self) -> None:
        self.secret = b""
        self.rows: dict[str, list[tuple[str, str, str, str, float]]] = defaultdict(list)
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.bad: Counter[str] = Counter()
        self.decoder = msgspec.json.Decoder(EventBody)

    def receive(self, path: str, headers: dict[bytes, bytes], body: bytes, arrival: float) -> None:
        try:
            event = self.decoder.decode(body)
        except msgspec.DecodeError:
            self.bad[path] += 1
            return
        good = (
            signature_ok(self.secret, headers.get(b"connecfy-signature", b"").decode(), body, int(arrival))
            and headers.get(b"connecfy-event-id", b"").decode() == event.id
            and headers.get(b"connecfy-event-type", b"").decode() == event.type
        )
        if not good:
            self.bad[path] += 1
        self.rows[path].append((event.id, event.type, str(event.data.get("message_id", "")), event.created_at, arrival))
        self.ids[path].add(event.id)

    def control(self, method: bytes, path: str, body: bytes) -> bytes:
        if method == b"POST" and path == "/_secret":
            self.secret = body
            return NO_CONTENT
        if path == "/_stats":
            return json_answer(
                {
                    p: {"received": len(self.rows[p]), "unique": len(self.ids[p]), "bad": self.bad[p]}
                    for p in (HOOK_PATH, CEILING_PATH)
                }
            )
        if path == "/_records":
            return json_answer({"rows": self.rows[HOOK_PATH], "bad": self.bad[HOOK_PATH]})
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


def json_answer(value: Any) -> bytes:
    payload = msgspec.json.encode(value)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload


class HookConnection(asyncio.Protocol):
    """One keep-alive connection, parsed by httptools: a POST is answered 204 as soon as
    it is recorded (the arrival time is taken when its last byte is in)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        arrival = time.time()
        assert self.transport is not None
        path = self.url.decode("latin-1").partition("?")[0]
        body = b"".join(self.body)
        if path.startswith("/_"):
            answer = self.inbox.control(self.parser.get_method(), path, body)
        else:
            self.inbox.receive(path, self.headers, body, arrival)
            answer = NO_CONTENT
        self.transport.write(answer)
        if not self.parser.should_keep_alive():
            self.transport.close()


def receiver_main(sock: socket.socket, parent: int) -> None:
    """The receiver process: serve on ``sock`` until SIGTERM, or until the bench that
    started it is gone (so a killed bench leaves nothing behind)."""

    async def serve() -> None:
        inbox = Inbox()
        server = await asyncio.get_running_loop().create_server(lambda: HookConnection(inbox), sock=sock, backlog=1024)
        async with server:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops it, after reading it
    run_async(serve())


class ReceiverProcess:
    """The parent's handle on the receiver: its URL, its counters, its records, its CPU."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = self.base_url + HOOK_PATH
        self.process = multiprocessing.get_context("spawn").Process(
            target=receiver_main, args=(self.sock, os.getpid()), name="webhook-receiver", daemon=True
        )
        self.control = Http1Pool(self.base_url, size=4, timeout=60)

    def start(self) -> None:
        self.process.start()
        self.sock.close()  # the child has its own copy

    async def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        status, raw, _ = await self.control.request(method, path, body=body)
        if status not in (200, 204):
            raise RuntimeError(f"receiver {method} {path}: {status}")
        return decoded(raw)

    async def set_secret(self, secret: str) -> None:
        await self.call("POST", "/_secret", secret.encode())

    async def stats(self) -> dict[str, dict[str, int]]:
        return await self.call("GET", "/_stats")

    async def records(self) -> dict[str, Any]:
        return await self.call("GET", "/_records")

    def cpu_seconds(self) -> float:
        try:
            times = psutil.Process(self.process.pid).cpu_times()
            return times.user + times.system
        except (psutil.NoSuchProcess, ValueError):
            return 0.0

    async def stop(self) -> None:
        await self.control.close()
        if self.process.is_alive():
            self.process.terminate()
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)


async def receiver_ceiling(
    receiver: ReceiverProcess, secret: str, seconds: float, connections: int = 64
) -> dict[str, Any]:
    """Signed event POSTs straight at the receiver, ``connections`` at a time, for
    ``seconds``: what it takes at most (a floor, since this client has its limits too)."""
    pool = Http1Pool(receiver.base_url, size=connections, timeout=10)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def loop(worker: int) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < deadline:
            n += 1
            event_id = f"evt_ceiling{worker}x{n}"
            body = msgspec.json.encode(
                {"id": event_id, "type": "message.sent", "created_at": "", "data": {"message_id": "", "status": "sent"}}
            )
            stamp = int(time.time())
            signature = hmac.new(secret.encode(), b"%d." % stamp + body, hashlib.sha256).hexdigest()
            started = time.perf_counter()
            status, _, _ = await pool.request(
                "POST",
                CEILING_PATH,
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "Connecfy-Signature": f"t={stamp},v1={signature}",
                    "Connecfy-Event-Id": event_id,
                    "Connecfy-Event-Type": "message.sent",
                },
            )
            if status == 204:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    began = time.monotonic()
    try:
        await asyncio.gather(*(loop(w) for w in range(connections)))
    finally:
        await pool.close()
    elapsed = time.monotonic() - began
    stats = (await receiver.stats())[CEILING_PATH]
    return {
        "connections": connections,
        "seconds": round(elapsed, 2),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": errors,
        "signature_failures": stats["bad"],
    }


# One phase of load -----------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    recorder: Recorder
    ledger: Ledger
    wall_start: float = 0.0
    wall_end: float = 0.0
    cpu_percent: float | None = None
    receiver_cpu_percent: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core per process during the load
    # (wall time, the machine's CPU % of all cores since the previous sample, CPU seconds per process)
    cpu_samples: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    endpoint: dict[str, Any] | None = None
    drain_seconds: float = 0.0
    webhook_drain_seconds: float = 0.0
    rejected_reports: int = 0


def process_label(process: psutil.Process, server_pid: int | None) -> str:
    if process.pid == server_pid:
        return f"serve {process.pid}"
    command = " ".join(process.cmdline())
    kind = "redis" if "redis-server" in command else "background" if " background" in command else "worker"
    return f"{kind} {process.pid}"


def cpu_times(deployment: Deployment, receiver: ReceiverProcess | None) -> dict[str, float]:
    """CPU seconds so far of each server process (the supervisor, every worker, Redis)
    and of the receiver: one worker also runs the dispatcher, and shows it."""
    found: dict[str, float] = {}
    for process in deployment.processes():
        try:
            times = process.cpu_times()
            found[process_label(process, deployment.server_pid)] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    if receiver is not None:
        found["receiver"] = receiver.cpu_seconds()
    return found


async def timelines_of(account: Account) -> dict[str, list[dict[str, Any]]]:
    """Every message of the account with its status timeline."""
    return {item["id"]: item["timeline"] for item in await account.messages()}


class Monitor:
    """Once a second: the CPU of every server process, the receiver and the whole machine
    (the box may be shared: a busy neighbour shows here, not as our slowness), kept on the
    phase running; and unless quiet, a progress line on stderr."""

    def __init__(self, deployment: Deployment, receiver: ReceiverProcess | None, enabled: bool) -> None:
        self.deployment = deployment
        self.receiver = receiver
        self.enabled = enabled
        self.phase: Phase | None = None
        self.label = ""

    async def run(self) -> None:
        last = 0
        psutil.cpu_percent()  # the machine's figure is since the previous call
        while True:
            await asyncio.sleep(1.0)
            phase = self.phase
            if phase is None:
                continue
            cpu = await asyncio.to_thread(cpu_times, self.deployment, self.receiver)
            phase.cpu_samples.append((time.time(), psutil.cpu_percent(), cpu))
            if not self.enabled:
                continue
            received = last
            if self.receiver is not None:
                try:
                    received = (await self.receiver.stats())[HOOK_PATH]["received"]
                except (TimeoutError, OSError, RuntimeError):
                    pass
            now = phase.recorder.now()
            second = phase.recorder.seconds.get(int(now) - 1)
            accepted = second.messages if second else 0
            reports = second.requests["status"] if second else 0
            p99 = percentile(second.latencies["status"], 99) * 1000 if second else 0.0
            errors = sum(second.errors.values()) if second else 0
            print(
                f"{now:6.0f}s {phase.name:<12} {self.label:<8} accepted {accepted:>4}/s | reports {reports:>4}/s "
                f"p99 {p99:>5.0f} ms | events {received - last:>5}/s ({received:,}) | err {errors}/s | "
                f"open {phase.ledger.open_count()}",
                file=sys.stderr,
                flush=True,
            )
            last = received


async def run_phase(
    name: str,
    args: argparse.Namespace,
    deployment: Deployment,
    seconds: float,
    receiver: ReceiverProcess | None,
    monitor: Monitor,
) -> Phase:
    """Sign up an account (with an endpoint at the receiver when given), pair its phones,
    run the open-loop load for ``seconds``, let the phones finish, read the timelines
    back, and (with a receiver) wait until every change has reached it."""
    recorder, ledger = Recorder(), Ledger()
    phase = Phase(name, seconds, recorder, ledger)
    http = Http(deployment.base_url, recorder, connections=args.connections)
    phones = PhoneSwarm(http, ledger, PhoneBehaviour(time_scale=args.time_scale, failed_share=0.0, delivered_share=1.0))
    accounts: list[Account] = []
    monitor.phase, monitor.label = phase, "setup"
    try:
        operator = Account(deployment.base_url, recorder, "operator")
        accounts.append(operator)
        await operator.login(deployment.operator_email, deployment.operator_password)
        sender = await new_sender(deployment, recorder, operator, name, "self_managed", secrets.token_hex(4), accounts)
        if receiver is not None:
            status, body, _ = await sender.account.call(None, "POST", "/api/webhooks/", json={"url": receiver.url})
            created = expect(status, body, 201, "register the webhook endpoint")
            await receiver.set_secret(created["secret"])
            phase.endpoint = {"id": created["id"]}
        sender.devices = [p.device_id for p in await phones.pair(sender.account, args.phones, budget=LIFTED_BUDGET)]
        phones.start()
        monitor.label = "warm-up"
        await asyncio.sleep(max(1.0, HEARTBEAT_SECONDS * args.time_scale * 1.1))

        streams = [
            Stream("external → device", sender, "external", True, 0.5),
            Stream("batch → device", sender, "batch", True, 0.5, args.batch_size),
        ]
        swarm = SenderSwarm(http, ledger, streams, lambda t: args.rate / CHANGES_PER_MESSAGE)
        monitor.label = "load"
        start = recorder.now()
        cpu0 = await asyncio.to_thread(cpu_times, deployment, receiver)
        phase.wall_start = time.time()
        await swarm.run(start, start + seconds)
        await swarm.wait()
        phase.wall_end = time.time()
        cpu1 = await asyncio.to_thread(cpu_times, deployment, receiver)
        elapsed = phase.wall_end - phase.wall_start
        phase.cpu = {name: round(100 * (cpu1[name] - cpu0[name]) / elapsed, 1) for name in cpu1 if name in cpu0}
        phase.cpu_percent = sum(v for k, v in phase.cpu.items() if k != "receiver") if phase.cpu else None
        phase.receiver_cpu_percent = phase.cpu.get("receiver")

        monitor.label = "drain"
        load_end = recorder.now()
        deadline = load_end + args.drain_seconds
        while (ledger.open_count() or phones.in_flight()) and recorder.now() < deadline:
            await asyncio.sleep(0.25)
        phase.drain_seconds = recorder.now() - load_end
        await phones.stop()
        phase.rejected_reports = phones.rejected_reports
        monitor.label = "reading"
        phase.timelines = await timelines_of(sender.account)
        if receiver is not None:
            # Every change is final by now (the phones finished): wait for its event, then
            # a little longer, so that a late duplicate would still be counted.
            expected = sum(len(t) for t in phase.timelines.values())
            monitor.label = "webhooks"
            while (await receiver.stats())[HOOK_PATH]["unique"] < expected and recorder.now() < deadline:
                await asyncio.sleep(0.25)
            phase.webhook_drain_seconds = recorder.now() - load_end
            await asyncio.sleep(args.grace_seconds)
            status, body, _ = await sender.account.call(None, "GET", f"/api/webhooks/{created['id']}/")
            phase.endpoint = expect(status, body, 200, "read the webhook endpoint")
    finally:
        monitor.phase = None
        await phones.stop()
        await http.close()
        for account in accounts:
            await account.close()
    return phase


# Figures -----------------------------------------------------------------------------------


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def match_events(timelines: dict[str, list[dict[str, Any]]], rows: list[Sequence[Any]]) -> dict[str, Any]:
    """The receiver's rows against the timelines. Each timeline entry is one status
    change and must arrive as exactly one event (message id, ``message.<status>``): a
    change with fewer distinct event ids is missing, a second row with an id already
    seen is a duplicate, an event for no change of the account is unexpected. The delay
    of each first arrival is its arrival minus its ``created_at`` (both wall clock, one
    machine). ``firsts`` holds each distinct event's (created_at, arrival) in epoch seconds,
    created_at None when it could not be read."""
    wanted = Counter(
        (message_id, f"message.{entry['status']}") for message_id, timeline in timelines.items() for entry in timeline
    )
    seen: set[str] = set()
    got: Counter[tuple[str, str]] = Counter()
    firsts: list[tuple[float | None, float]] = []
    duplicates = 0
    duplicate_examples: list[str] = []
    for event_id, event_type, message_id, created_at, arrival in rows:
        if event_id in seen:
            duplicates += 1
            if len(duplicate_examples) < 5:
                duplicate_examples.append(event_id)
            continue
        seen.add(event_id)
        got[(message_id, event_type)] += 1
        try:
            firsts.append((epoch(created_at), arrival))
        except ValueError:
            firsts.append((None, arrival))
    missing = {key: n - got[key] for key, n in wanted.items() if got[key] < n}
    unexpected = {key: n - wanted[key] for key, n in got.items() if n > wanted[key]}
    return {
        "expected": sum(wanted.values()),
        "received": len(rows),
        "unique": len(seen),
        "duplicates": duplicates,
        "missing": sum(missing.values()),
        "unexpected": sum(unexpected.values()),
        "by_type": dict(sorted(Counter(t for _, t in got.elements()).items())),
        "examples": {
            "missing": [list(k) for k in list(missing)[:5]],
            "duplicates": duplicate_examples,
            "unexpected": [list(k) for k in list(unexpected)[:5]],
        },
        "firsts": firsts,
    }


def changes_in(timelines: dict[str, list[dict[str, Any]]], start: float, end: float) -> list[float]:
    return [at for timeline in timelines.values() for entry in timeline if start <= (at := epoch(entry["at"])) <= end]


def machine_cpu(phase: Phase) -> float | None:
    """The whole machine's CPU during the load, % of all its cores (ours and anyone else's)."""
    inside = [machine for at, machine, _ in phase.cpu_samples if phase.wall_start < at <= phase.wall_end + 0.5]
    return round(sum(inside) / len(inside), 1) if inside else None


def phase_figures(phase: Phase) -> dict[str, Any]:
    elapsed = max(phase.wall_end - phase.wall_start, 1e-9)
    changes = changes_in(phase.timelines, phase.wall_start, phase.wall_end)
    server_status = {m: t[-1]["status"] for m, t in phase.timelines.items() if t}
    invariants = phase.ledger.check(server_status)
    return {
        "name": phase.name,
        "seconds": phase.seconds,
        "messages_accepted": invariants["accepted"],
        "changes": sum(len(t) for t in phase.timelines.values()),
        "changes_per_second": len(changes) / elapsed,
        "server_cpu_percent": phase.cpu_percent,
        "receiver_cpu_percent": phase.receiver_cpu_percent,
        "cpu_percent_by_process": phase.cpu,
        "machine_cpu_percent": machine_cpu(phase),
        "drain_seconds": round(phase.drain_seconds, 2),
        "requests": [
            report.latency_row(kind, phase.recorder.latencies[kind], elapsed, sum(phase.recorder.errors[kind].values()))
            for kind in KINDS
        ],
        "errors": {kind: dict(c) for kind, c in phase.recorder.errors.items() if c},
        "rejected_reports": phase.rejected_reports,
        "invariants": {k: v for k, v in invariants.items() if k != "examples"},
    }


def webhook_figures(phase: Phase, records: dict[str, Any]) -> dict[str, Any]:
    matched = match_events(phase.timelines, records["rows"])
    firsts = matched.pop("firsts")
    delays = [arrival - created for created, arrival in firsts if created is not None]
    elapsed = max(phase.wall_end - phase.wall_start, 1e-9)
    in_window = sum(1 for _, arrival in firsts if phase.wall_start <= arrival <= phase.wall_end)
    # After the load, when more than a second's worth was still waiting: how fast that
    # backlog went out with no API traffic beside it (the dispatcher's own pace).
    after = sorted(arrival for _, arrival in firsts if arrival > phase.wall_end)
    backlog = len(after) > max(1.0, in_window / elapsed)
    drain_rate = len(after) / (after[-1] - phase.wall_end) if backlog else None
    series: dict[int, dict[str, Any]] = defaultdict(lambda: {"changes": 0, "events": 0, "delays": []})
    for timeline in phase.timelines.values():
        for entry in timeline:
            series[int(epoch(entry["at"]) - phase.wall_start)]["changes"] += 1
    for created, arrival in firsts:
        series[int(arrival - phase.wall_start)]["events"] += 1
        if created is not None:
            series[int(created - phase.wall_start)]["delays"].append(arrival - created)
    cpu_by_second: dict[int, dict[str, float]] = {}
    for (t0, _, c0), (t1, machine, c1) in itertools.pairwise(phase.cpu_samples):
        shares = {name: round(100 * (c1[name] - c0[name]) / (t1 - t0), 1) for name in c1 if name in c0}
        cpu_by_second[int(t1 - phase.wall_start)] = {"machine": machine, **shares}
    endpoint = phase.endpoint or {}
    return {
        **matched,
        "signature_failures": records["bad"],
        "events_per_second": in_window / elapsed,
        "events_after_load": len(after),
        "backlog_events_per_second": drain_rate,
        "delay_ms": {
            "count": len(delays),
            "p50": percentile(delays, 50) * 1000,
            "p95": percentile(delays, 95) * 1000,
            "p99": percentile(delays, 99) * 1000,
            "max": max(delays, default=0.0) * 1000,
        },
        "drain_seconds": round(phase.webhook_drain_seconds, 2),
        "endpoint": {k: endpoint.get(k) for k in ("id", "queued", "dropped", "failing_since", "enabled")},
        # per second of the run: changes made, events received, and the delay of the
        # events of the changes made in that second
        "series": [
            {
                "second": s,
                "changes": row["changes"],
                "events": row["events"],
                "delay_p50_ms": round(percentile(row["delays"], 50) * 1000, 1),
                "delay_p99_ms": round(percentile(row["delays"], 99) * 1000, 1),
                "cpu_percent": cpu_by_second.get(s, {}),
            }
            for s, row in sorted(series.items())
        ],
    }


def verdict(result: dict[str, Any]) -> list[str]:
    """What is wrong, if anything: an empty list is a pass."""
    hooks = result["webhooks"]
    wrong = [
        f"{hooks[k]} {k.replace('_', ' ')}"
        for k in ("missing", "duplicates", "unexpected", "signature_failures")
        if hooks[k]
    ]
    if not hooks["expected"]:
        wrong.append("no status changes were made")
    if hooks["endpoint"].get("dropped"):
        wrong.append(f"{hooks['endpoint']['dropped']} events dropped by the server")
    return wrong


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "-"


def print_table(result: dict[str, Any], out: Any = sys.stdout) -> None:
    w = out.write
    load, base, hooks = result["load"], result.get("baseline"), result["webhooks"]
    w(
        f"\nwebhook bench: {result['rate']:,.0f} status changes/s planned ({result['rate'] / CHANGES_PER_MESSAGE:,.0f} "
        f"messages/s, {CHANGES_PER_MESSAGE} changes each), {result['seconds']:g} s, {result['phones']} phones, "
        f"time scale {result['time_scale']}, {result['workers']} workers, {result['machine']['cpus']} CPUs\n\n"
    )
    w(f"{'':34} {'no webhooks':>14} {'webhooks':>14} {'ratio':>8}\n")

    def row(label: str, with_: float | None, without: float | None, fmt: str = "{:,.1f}") -> None:
        left = "-" if without is None else fmt.format(without)
        right = "-" if with_ is None else fmt.format(with_)
        w(f"{label:34} {left:>14} {right:>14} {ratio(with_, without):>8}\n")

    row("status changes made/s", load["changes_per_second"], base and base["changes_per_second"])
    row("webhook events received/s", hooks["events_per_second"], None)
    if hooks["backlog_events_per_second"]:
        row(f"  its backlog of {hooks['events_after_load']:,} after, /s", hooks["backlog_events_per_second"], None)
    row("server CPU, % of one core", load["server_cpu_percent"], base and base["server_cpu_percent"], "{:,.0f}")
    row("machine CPU, % of all cores", load["machine_cpu_percent"], base and base["machine_cpu_percent"], "{:,.0f}")
    base_rows = {r["name"]: r for r in base["requests"]} if base else {}
    for r in load["requests"]:
        if not r["count"]:
            continue
        b = base_rows.get(r["name"])
        for q in ("p50", "p99"):
            row(f"API {r['name']} {q} ms ({r['per_second']:,.0f}/s)", r[f"{q}_ms"], b and b[f"{q}_ms"], "{:,.2f}")
    d = hooks["delay_ms"]
    w(
        f"\nwebhook delay, status change → receiver (ms): p50 {d['p50']:,.1f}, p95 {d['p95']:,.1f}, "
        f"p99 {d['p99']:,.1f}, max {d['max']:,.1f} over {d['count']:,} events "
        f"(the dispatcher polls every {result['webhook_poll_ms']} ms)\n"
    )
    w(
        f"events: {hooks['expected']:,} changes expected, {hooks['received']:,} POSTs received "
        f"({hooks['unique']:,} distinct ids); missing {hooks['missing']}, duplicates {hooks['duplicates']}, "
        f"unexpected {hooks['unexpected']}, signature failures {hooks['signature_failures']}; endpoint queued "
        f"{hooks['endpoint'].get('queued')}, dropped {hooks['endpoint'].get('dropped')}; all in "
        f"{hooks['drain_seconds']:.1f} s after the load ended\n"
    )
    w(f"by type: {json.dumps(hooks['by_type'])}\n")
    ceiling = result.get("receiver_ceiling")
    if ceiling:
        w(
            f"receiver ceiling (signed POSTs straight at it, {ceiling['connections']} connections): "
            f"{ceiling['requests_per_second']:,.0f}/s, p50 {ceiling['p50_ms']:.2f} ms, p99 {ceiling['p99_ms']:.2f} ms; "
            f"the webhook load is {100 * hooks['events_per_second'] / ceiling['requests_per_second']:.0f}% of it\n"
        )
    w(
        f"receiver CPU during load: {load['receiver_cpu_percent'] or 0:.0f}% of one core; load generator CPU: "
        f"{result['client_cpu_percent']:.0f}% of one core (whole run)\n"
    )
    for label, figures in (("no webhooks", base), ("webhooks", load)):
        if figures and figures["cpu_percent_by_process"]:
            shares = ", ".join(f"{name} {pct:.0f}%" for name, pct in figures["cpu_percent_by_process"].items())
            w(f"CPU by process, {label}: {shares}\n")
    inv = load["invariants"]
    w(f"messages: {inv['accepted']:,} accepted, final states {inv['final_states']}, lost {inv['lost']}\n")
    wrong = result["wrong"]
    w(f"\nwebhooks {'OK' if not wrong else 'BROKEN: ' + '; '.join(wrong)}\n")
    if wrong:
        w(f"examples: {json.dumps(hooks['examples'])}\n")


STARTED = time.monotonic()


async def main_async(args: argparse.Namespace) -> int:
    main = asyncio.current_task()
    assert main is not None
    for number in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(number, main.cancel)
    extra = {
        "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
        **dict(setting.split("=", 1) for setting in args.server_setting),
    }
    local = LocalServer(workers=args.workers, time_scale=args.time_scale, extra=extra)
    receiver = ReceiverProcess()
    receiver.start()
    monitoring: asyncio.Task[None] | None = None
    result: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "phones": args.phones,
        "time_scale": args.time_scale,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "command": " ".join(sys.argv),
        "webhook_poll_ms": int(extra.get("CONNECFY_WEBHOOK_POLL_MS", "200")),
        "server_settings": extra,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
    }
    try:
        deployment = await asyncio.to_thread(local.start)
        monitor = Monitor(deployment, receiver, args.progress)
        monitoring = asyncio.create_task(monitor.run())
        print(f"bench: connecfy serve at {deployment.base_url}, receiver at {receiver.url}", file=sys.stderr)
        if args.baseline:
            baseline = await run_phase("no-webhooks", args, deployment, args.baseline_seconds, None, monitor)
            result["baseline"] = phase_figures(baseline)
            ceiling_secret = secrets.token_urlsafe(24)
            await receiver.set_secret(ceiling_secret)
            result["receiver_ceiling"] = await receiver_ceiling(receiver, ceiling_secret, args.ceiling_seconds)
        loaded = await run_phase("webhooks", args, deployment, args.seconds, receiver, monitor)
        result["load"] = phase_figures(loaded)
        result["webhooks"] = webhook_figures(loaded, await receiver.records())
    finally:
        if monitoring is not None:
            monitoring.cancel()
        await receiver.stop()
        status = await asyncio.to_thread(local.stop, Path(args.server_log) if args.server_log else None)
        if status not in (0, None):
            print(f"bench: connecfy serve exited with {status}", file=sys.stderr)
    result["client_cpu_percent"] = 100 * time.process_time() / max(time.monotonic() - STARTED, 1e-9)
    result["wrong"] = verdict(result)
    result["ok"] = not result["wrong"]
    print_table(result)
    if args.json:
        report.write_json(Path(args.json), result)
    return 0 if result["ok"] else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.webhook_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="status changes per second planned (default 1000: 250 messages/s)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of sending (default 60)")
    parser.add_argument("--phones", type=int, default=50, help="the account's phones (default 50)")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=120.0,
        help="how long the phones and then the webhooks may take to finish after the load (default 120)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=2.0,
        help="wait this long after the last expected event, for late duplicates (default 2)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        help="phone intervals (15 s heartbeat, 20 s poll) times this (default 0.05)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=10, help="messages per batch send; half the messages go by batch (default 10)"
    )
    parser.add_argument("--connections", type=int, default=256, help="the load generator's HTTP connections")
    parser.add_argument("--workers", type=int, default=2, help="workers of the server (default 2)")
    parser.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CONNECFY_* setting for the server (repeatable)",
    )
    parser.add_argument("--server-log", help="keep the server's log at this path")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the no-webhooks run and the receiver's ceiling",
    )
    parser.add_argument(
        "--baseline-seconds", type=float, default=None, help="seconds of the no-webhooks run (default --seconds)"
    )
    parser.add_argument("--ceiling-seconds", type=float, default=3.0, help="seconds of the receiver's ceiling")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress line")
    args = parser.parse_args(argv)
    if args.baseline_seconds is None:
        args.baseline_seconds = args.seconds
    if args.rate <= 0 or args.seconds <= 0 or args.phones < 1:
        parser.error("--rate, --seconds and --phones must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_async(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
