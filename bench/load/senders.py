"""The sender swarm: an open-loop arrival rate through the session send, the external
send and the batch send, to the account's own devices and to the pools.

Open loop: the n-th request of a stream is planned at a fixed time in advance (one
every ``size / rate`` seconds, ``rate`` being the scenario's messages per second at
that moment) and fired then whether or not earlier ones were answered; its latency is
measured from that planned time. A server that slows down therefore shows its
slowness in the figures, instead of quietly receiving fewer requests. Requests still
unanswered beyond ``max_in_flight`` are not sent and count as ``client_overload``
errors, so a run stays bounded when the server stops answering.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.load.accounts import Account
from bench.load.client import Http
from bench.load.ledger import Ledger


@dataclass
class Sender:
    """A sending account: its dashboard session, its API key, its own devices."""

    account: Account
    api_key: str
    devices: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.account.label


@dataclass(frozen=True)
class Stream:
    """One kind of traffic: ``endpoint`` is session, external or batch; ``to_device``
    picks one of the sender's own devices per message, else the message goes to a pool
    (the platform pool for an API-only account, the account's own pool otherwise)."""

    name: str
    sender: Sender
    endpoint: str
    to_device: bool
    share: float  # of the scenario's message rate
    size: int = 1  # messages per request (batch only)

    @property
    def queue(self) -> str:
        """Where its messages wait for a phone (one of ``ledger.QUEUES``)."""
        if self.to_device:
            return "device queue"
        return "platform pool" if self.sender.account.account_type == "api_only" else "own pool"


def number() -> str:
    return f"+1555{random.randrange(10**6, 10**7)}"


class SenderSwarm:
    def __init__(
        self,
        http: Http,
        ledger: Ledger,
        streams: list[Stream],
        rate: Callable[[float], float],
        *,
        max_in_flight: int = 5000,
    ) -> None:
        self.http = http
        self.ledger = ledger
        self.streams = streams
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.in_flight: set[asyncio.Task[None]] = set()
        self.counter = 0

    async def run(self, start: float, until: float) -> None:
        """Fire every stream's planned requests from ``start`` to ``until`` (run seconds)."""
        await asyncio.gather(*(self._stream(s, start, until) for s in self.streams if s.share > 0))

    async def _stream(self, stream: Stream, start: float, until: float) -> None:
        recorder = self.http.recorder
        # A random phase, so that a stream of one request every 8 s still sends, on
        # average, its share in a 5 s run; then one request every size/rate seconds.
        per_second = self.rate(start) * stream.share / stream.size
        planned = start - random.uniform(0, 1 / per_second) if per_second > 0 else start
        while True:
            per_second = self.rate(planned) * stream.share / stream.size
            planned += 1 / per_second if per_second > 0 else 0.1
            if planned >= until:
                return
            if per_second <= 0:
                continue
            delay = planned - recorder.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(self.in_flight) >= self.max_in_flight:
                now = recorder.now()
                recorder.record("batch" if stream.endpoint == "batch" else "send", planned, now, now, "client_overload")
                continue
            task = asyncio.create_task(self.send(stream, planned))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    def _message(self, stream: Stream) -> dict[str, Any]:
        self.counter += 1
        item: dict[str, Any] = {"to": number(), "message": f"bench message {self.counter}"}
        if stream.to_device:
            item["device_id"] = random.choice(stream.sender.devices)
        return item

    async def send(self, stream: Stream, planned: float) -> None:
        sender = stream.sender
        if stream.endpoint == "batch":
            items = [self._message(stream) for _ in range(stream.size)]
            status, body, _ = await self.http.call(
                "batch",
                "POST",
                "/api/external/send-batch/",
                planned=planned,
                messages=stream.size,
                json={"api_key": sender.api_key, "messages": items},
            )
            ids = [m["id"] for m in body["messages"]] if status == 202 else []
        elif stream.endpoint == "external":
            status, body, _ = await self.http.call(
                "send",
                "POST",
                "/api/external/send/",
                planned=planned,
                messages=1,
                json={"api_key": sender.api_key, **self._message(stream)},
            )
            ids = [body["id"]] if status == 202 else []
        else:
            status, body, _ = await sender.account.call(
                "send", "POST", "/api/sms/send/", planned=planned, messages=1, json=self._message(stream)
            )
            ids = [body["id"]] if status == 202 else []
        at = self.http.recorder.now()
        for message_id in ids:
            self.ledger.accept(message_id, sender.label, planned, at, stream.queue)
        if status == 0:
            self.ledger.uncertain_sends += stream.size

    async def wait(self) -> None:
        await asyncio.gather(*list(self.in_flight), return_exceptions=True)
