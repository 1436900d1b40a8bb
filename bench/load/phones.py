"""The phone swarm: each simulated phone is paired through the real API, then heartbeats
every ~15 s and polls every ~20 s on its own jittered schedule (both times the time
scale), "sends" each claimed message after a simulated SmsManager delay and reports
it: ``sent``, a share ``failed``, and a share of the sent ones ``delivered`` later.

A phone behaves like the real app where the invariants depend on it: it de-duplicates
claims by message id, keeps a report that could not be delivered (5xx, 429, no answer,
or the phone being offline) and retries it until the server takes it, and honours
``Retry-After`` on a 429. A full page of tasks makes it poll again at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass

from bench.load.accounts import Account, expect
from bench.load.client import Http, retry_after
from bench.load.ledger import Ledger

HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 20.0
JITTER = 0.1


@dataclass(frozen=True)
class PhoneBehaviour:
    time_scale: float = 1.0
    send_delay: float = 1.0  # seconds a send takes at scale 1 (times 0.5–1.5)
    delivery_delay: float = 5.0  # seconds from sent to delivered at scale 1
    failed_share: float = 0.02
    delivered_share: float = 0.5
    claim_limit: int = 10


class Phone:
    def __init__(self, swarm: PhoneSwarm, device_id: str, token: str, pool: bool) -> None:
        self.swarm = swarm
        self.device_id = device_id
        self.pool = pool
        self.headers = {"X-Device-Token": token}
        self.online = asyncio.Event()
        self.online.set()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        scale = self.swarm.behaviour.time_scale
        self.tasks = [
            asyncio.create_task(self._every(HEARTBEAT_SECONDS * scale, self.heartbeat)),
            asyncio.create_task(self._every(POLL_SECONDS * scale, self.poll)),
        ]

    async def _every(self, interval: float, action) -> None:  # type: ignore[no-untyped-def]
        """Run ``action(planned, ready)`` on a schedule of its own: a random phase, then
        every ``interval`` ± 10 %, measured from the planned times, so a slow answer
        shows as latency of the requests after it too. ``ready`` is when the previous
        answer came (the phone could not ask before). ``action`` returns how long to wait
        instead (a 429's Retry-After, or 0 for "again at once"), or None for the usual
        interval."""
        recorder = self.swarm.http.recorder
        planned = recorder.now() + random.uniform(0, interval)
        ready = planned  # a phone waits for one answer before its next request
        while True:
            delay = planned - recorder.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.online.is_set():
                await self.online.wait()
                planned = ready = recorder.now()  # back from an offline spell: a fresh schedule
            wait = await action(planned, ready)
            ready = recorder.now()
            step = interval * random.uniform(1 - JITTER, 1 + JITTER) if wait is None else wait
            planned += step
            if wait is not None:
                planned = max(planned, recorder.now() + wait)

    async def heartbeat(self, planned: float, ready: float) -> float | None:
        status, _, headers = await self.swarm.http.call(
            "heartbeat",
            "POST",
            f"/api/devices/{self.device_id}/heartbeat/",
            planned=planned,
            ready=ready,
            headers=self.headers,
            json={"battery": 80, "android_version": "14", "app_version": "bench"},
        )
        return retry_after(headers, 1.0) if status == 429 else None

    async def poll(self, planned: float, ready: float) -> float | None:
        limit = self.swarm.behaviour.claim_limit
        status, tasks, headers = await self.swarm.http.call(
            "poll",
            "GET",
            f"/api/devices/{self.device_id}/tasks/",
            planned=planned,
            ready=ready,
            headers=self.headers,
            params={"limit": str(limit)},
        )
        if status == 429:
            return retry_after(headers, 1.0)
        if status != 200 or not isinstance(tasks, list):
            return None
        now = self.swarm.http.recorder.now()
        for task in tasks:
            if self.swarm.ledger.claim(task["id"], self.device_id, now):
                self.swarm.spawn(self.deliver(task["id"]))
        return 0.0 if len(tasks) >= limit else None

    async def deliver(self, message_id: str) -> None:
        behaviour = self.swarm.behaviour
        await asyncio.sleep(behaviour.send_delay * behaviour.time_scale * random.uniform(0.5, 1.5))
        if random.random() < behaviour.failed_share:
            await self.report(message_id, {"status": "failed", "error": "bench: simulated carrier error"})
            return
        await self.report(message_id, {"status": "sent"})
        if random.random() < behaviour.delivered_share:
            await asyncio.sleep(behaviour.delivery_delay * behaviour.time_scale * random.uniform(0.5, 1.5))
            await self.report(message_id, {"status": "delivered"})

    async def report(self, message_id: str, body: dict[str, str]) -> None:
        """Deliver one status report, keeping it until the server takes it."""
        backoff = 0.2
        while True:
            await self.online.wait()
            status, _, headers = await self.swarm.http.call(
                "status", "POST", f"/api/sms/{message_id}/status/", headers=self.headers, json=body
            )
            if status == 200:
                self.swarm.ledger.reported(message_id, body["status"], self.swarm.http.recorder.now())
                return
            if 400 <= status < 500 and status != 429:
                self.swarm.rejected_reports += 1  # the server refused it for good
                return
            await asyncio.sleep(retry_after(headers, backoff) if status == 429 else backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)

    def go_offline(self) -> None:
        self.online.clear()

    def come_back(self) -> None:
        self.online.set()

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


class PhoneSwarm:
    def __init__(self, http: Http, ledger: Ledger, behaviour: PhoneBehaviour) -> None:
        self.http = http
        self.ledger = ledger
        self.behaviour = behaviour
        self.phones: list[Phone] = []
        self.rejected_reports = 0
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def pair(
        self,
        owner: Account,
        count: int,
        *,
        pool: bool = False,
        concurrency: int = 32,
        budget: dict[str, int] | None = None,
    ) -> list[Phone]:
        """Pair ``count`` phones to ``owner`` (the operator pairs pool phones) through the
        real pairing-code and register endpoints; ``budget`` (segments per minute and per
        day) replaces the server's default send budget of each."""
        semaphore = asyncio.Semaphore(concurrency)
        paired: list[Phone] = []

        async def one(n: int) -> None:
            async with semaphore:
                code = await owner.pairing_code(pool=pool)
                body = None
                for _ in range(100):  # a target's per-address register limit: wait it out
                    status, body, headers = await self.http.call(
                        None,
                        "POST",
                        "/api/devices/register/",
                        json={
                            "code": code,
                            "device_name": f"bench-{'pool' if pool else owner.label}-{n}",
                            "phone_number": f"+1555{random.randrange(10**6, 10**7)}",
                        },
                    )
                    if status != 429:
                        break
                    await asyncio.sleep(retry_after(headers, 1.0))
                body = expect(status, body, 201, "register phone")
                if budget:
                    await owner.set_device_budget(body["device_id"], budget)
                paired.append(Phone(self, body["device_id"], body["device_token"], pool))

        await asyncio.gather(*(one(n) for n in range(count)))
        self.phones.extend(paired)
        return paired

    def start(self, phones: Iterable[Phone] | None = None) -> None:
        for phone in self.phones if phones is None else phones:
            phone.start()

    def in_flight(self) -> int:
        return len(self._background)

    async def stop(self) -> None:
        """Cancel every phone loop and pending send, and wait until they have ended
        (cancelling again any that went on, a few times, then leaving them)."""
        pending = {t for p in self.phones for t in p.tasks} | set(self._background)
        for _ in range(5):
            pending = {t for t in pending if not t.done()}
            if not pending:
                return
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2)
