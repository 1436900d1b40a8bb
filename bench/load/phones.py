"""The phone swarm: each simulated phone is paired through the real API, then claims its
work in one of two ways, both times the time scale:

- polling (the default): a poll every ~20 s and a heartbeat every ~15 s, each on its
  own jittered schedule;
- long polling (``PhoneBehaviour.long_poll``): ``GET .../tasks/?wait=30``, asked again
  at once after every answer, and a heartbeat every ~5 min (a waiting phone counts as
  online; the heartbeat only carries battery and versions), as the app does.

It "sends" each claimed message after a simulated SmsManager delay and reports it:
``sent``, a share ``failed``, and a share of the sent ones ``delivered`` later.

A phone behaves like the real app where the invariants depend on it: it de-duplicates
claims by message id, keeps a report that could not be delivered (5xx, 429, no answer,
or the phone being offline) and retries it until the server takes it, and honours
``Retry-After`` on a 429. A full page of tasks makes it poll again at once.

With ``connection_per_phone`` each phone holds connections of its own, from its own
source address (``PhoneCredentials.address``), as real phones do: the poll's, and a
second for heartbeats and reports while a poll is held, each kept alive until the server
closes it. Without, the phones share the swarm's pool.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from bench.load.accounts import Account, expect
from bench.load.client import Http, retry_after
from bench.load.ledger import Ledger

HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 20.0
LONG_POLL_WAIT_SECONDS = 30
LONG_POLL_HEARTBEAT_SECONDS = 300.0
ANSWER_GRACE_SECONDS = 15.0  # a held poll counts as lost this long after its wait
JITTER = 0.1
POLL_BACKOFF_SECONDS = (5.0, 300.0)  # the app's after failed polls: 5 s doubling to 5 min
CONNECTIONS_PER_PHONE = 2  # the poll's, and one for heartbeats and reports meanwhile


class PhoneCredentials(msgspec.Struct, array_like=True):
    """A paired phone, as the parent hands it to a generator process."""

    device_id: str
    token: str
    pool: bool
    address: str | None = None  # the source address of its connections


@dataclass(frozen=True)
class PhoneBehaviour:
    time_scale: float = 1.0
    send_delay: float = 1.0  # seconds a send takes at scale 1 (times 0.5–1.5)
    delivery_delay: float = 5.0  # seconds from sent to delivered at scale 1
    failed_share: float = 0.02
    delivered_share: float = 0.5
    claim_limit: int = 10
    long_poll: bool = False

    @property
    def wait_seconds(self) -> int:
        """What a long poll asks the server to wait (whole seconds, at least 1)."""
        return max(1, round(LONG_POLL_WAIT_SECONDS * self.time_scale))

    @property
    def heartbeat_seconds(self) -> float:
        return (LONG_POLL_HEARTBEAT_SECONDS if self.long_poll else HEARTBEAT_SECONDS) * self.time_scale

    @property
    def poll_seconds(self) -> float:
        return POLL_SECONDS * self.time_scale

    @property
    def first_poll_spread(self) -> float:
        """The first polls are spread over this many seconds: one poll interval, or one
        wait (each long-polling phone then keeps its own phase, as a fleet running for a
        while does)."""
        return float(self.wait_seconds) if self.long_poll else self.poll_seconds

    @property
    def warm_up_seconds(self) -> float:
        """Until every phone is claiming: its first poll (and a polling phone's first
        heartbeat) comes at a random point of its spread."""
        spread = self.first_poll_spread if self.long_poll else max(self.poll_seconds, self.heartbeat_seconds)
        return max(1.0, 1.1 * spread)


class Phone:
    def __init__(self, swarm: PhoneSwarm, credentials: PhoneCredentials) -> None:
        self.swarm = swarm
        self.device_id = credentials.device_id
        self.pool = credentials.pool
        self.headers = {"X-Device-Token": credentials.token}
        behaviour = swarm.behaviour
        self.http = (
            Http(
                swarm.http.base_url,
                swarm.http.recorder,
                connections=CONNECTIONS_PER_PHONE,
                timeout=max(30.0, behaviour.wait_seconds + ANSWER_GRACE_SECONDS),
                local_address=credentials.address,
            )
            if swarm.connection_per_phone
            else swarm.http
        )
        self.online = asyncio.Event()
        self.online.set()
        self.tasks: list[asyncio.Task[None]] = []
        self.poller: asyncio.Task[None] | None = None
        self.failures = 0  # long polls in a row without an answer

    def start(self) -> None:
        behaviour = self.swarm.behaviour
        self.tasks = [asyncio.create_task(self._every(behaviour.heartbeat_seconds, self.heartbeat))]
        self._start_polling(behaviour.first_poll_spread)

    def _start_polling(self, spread: float) -> None:
        behaviour = self.swarm.behaviour
        if behaviour.long_poll:
            self.poller = asyncio.create_task(self._long_polls(spread))
        else:
            self.poller = asyncio.create_task(self._every(behaviour.poll_seconds, self.poll))
        self.tasks.append(self.poller)

    async def _every(self, interval: float, action) -> None:  # type: ignore[no-untyped-def]
        """Run ``action(planned, ready)`` on a schedule of its own: a random phase, then
        every ``interval`` ± 10 %, measured from the planned times, so a slow answer
        shows as latency of the requests after it too. ``ready`` is when the previous
        answer came (the phone could not ask before). ``action`` returns how long to wait
        instead (a 429's Retry-After, or 0 for "again at once"), or None for the usual
        interval."""
        recorder = self.http.recorder
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

    async def _long_polls(self, spread: float) -> None:
        """Long polls one after another, the first after a random part of ``spread``;
        the next at once after an answer, after Retry-After after a 429, and after the
        app's pause when it failed (no answer, or an error): 5 s doubling to 5 min,
        each jittered down to half, never sooner than a Retry-After, times the scale."""
        await asyncio.sleep(random.uniform(0, spread))
        while True:
            await self.online.wait()
            pause = await self.long_poll(self.http.recorder.now())
            if pause:
                await asyncio.sleep(pause)

    async def heartbeat(self, planned: float, ready: float) -> float | None:
        status, _, headers = await self.http.call(
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
        status, tasks, headers = await self.http.call(
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
        self._claimed(tasks)
        return 0.0 if len(tasks) >= limit else None

    async def long_poll(self, planned: float) -> float:
        """One long poll; returns the seconds to pause before the next."""
        behaviour = self.swarm.behaviour
        wait = behaviour.wait_seconds
        status, tasks, headers = await self.http.call(
            "long poll",
            "GET",
            f"/api/devices/{self.device_id}/tasks/",
            planned=planned,
            ready=planned,
            headers=self.headers,
            params={"limit": str(behaviour.claim_limit), "wait": str(wait)},
            timeout=wait + ANSWER_GRACE_SECONDS,
        )
        if status == 429:
            return retry_after(headers, 1.0)
        if status != 200 or not isinstance(tasks, list):
            self.failures += 1
            base, cap = POLL_BACKOFF_SECONDS
            ceiling = min(cap, base * 2.0 ** (self.failures - 1)) * behaviour.time_scale
            return max(retry_after(headers, 0.0), ceiling * random.uniform(0.5, 1.0))
        self.failures = 0
        if tasks:
            self.swarm.long_polls_with_tasks += 1
            self._claimed(tasks)
        elif self.http.recorder.now() - planned < wait / 2:
            self.swarm.long_polls_answered_early += 1  # not held: a worker full of waits, or stopping
        return 0.0

    def _claimed(self, tasks: list[dict[str, str]]) -> None:
        now = self.http.recorder.now()
        for task in tasks:
            if self.swarm.ledger.claim(task["id"], self.device_id, now):
                self.swarm.spawn(self.deliver(task["id"]))

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
            status, _, headers = await self.http.call(
                "status", "POST", f"/api/sms/{message_id}/status/", headers=self.headers, json=body
            )
            if status == 200:
                self.swarm.ledger.reported(message_id, body["status"], self.http.recorder.now())
                return
            if 400 <= status < 500 and status != 429:
                self.swarm.rejected_reports += 1  # the server refused it for good
                return
            await asyncio.sleep(retry_after(headers, backoff) if status == 429 else backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)

    def go_offline(self) -> None:
        """No heartbeats, no polls, reports held; a held long poll is hung up (the server
        then claims nothing more for it)."""
        self.online.clear()
        if self.swarm.behaviour.long_poll and self.poller is not None:
            self.poller.cancel()
            self.tasks.remove(self.poller)
            self.poller = None

    def come_back(self) -> None:
        self.online.set()
        if self.swarm.behaviour.long_poll and self.poller is None:
            self._start_polling(0.0)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


async def pair(
    http: Http,
    owner: Account,
    count: int,
    *,
    pool: bool = False,
    concurrency: int = 32,
    budget: dict[str, int] | None = None,
) -> list[PhoneCredentials]:
    """Pair ``count`` phones to ``owner`` (the operator pairs pool phones) through the
    real pairing-code and register endpoints; ``budget`` (segments per minute and per
    day) replaces the server's default send budget of each."""
    semaphore = asyncio.Semaphore(concurrency)
    paired: list[PhoneCredentials] = []

    async def one(n: int) -> None:
        async with semaphore:
            code = await owner.pairing_code(pool=pool)
            body = None
            for _ in range(100):  # a target's per-address register limit: wait it out
                status, body, headers = await http.call(
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
            paired.append(PhoneCredentials(body["device_id"], body["device_token"], pool))

    await asyncio.gather(*(one(n) for n in range(count)))
    return paired


class PhoneSwarm:
    """The phones of one process."""

    def __init__(
        self, http: Http, ledger: Ledger, behaviour: PhoneBehaviour, *, connection_per_phone: bool = False
    ) -> None:
        self.http = http
        self.ledger = ledger
        self.behaviour = behaviour
        self.connection_per_phone = connection_per_phone
        self.phones: list[Phone] = []
        self.rejected_reports = 0
        self.long_polls_with_tasks = 0
        self.long_polls_answered_early = 0  # empty, in under half the wait asked for
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def adopt(self, credentials: Iterable[PhoneCredentials]) -> list[Phone]:
        phones = [Phone(self, c) for c in credentials]
        self.phones.extend(phones)
        return phones

    async def pair(
        self,
        owner: Account,
        count: int,
        *,
        pool: bool = False,
        concurrency: int = 32,
        budget: dict[str, int] | None = None,
    ) -> list[Phone]:
        """Pair ``count`` phones (see :func:`pair`) and make them phones of this swarm."""
        return self.adopt(await pair(self.http, owner, count, pool=pool, concurrency=concurrency, budget=budget))

    def start(self, phones: Iterable[Phone] | None = None) -> None:
        for phone in self.phones if phones is None else phones:
            phone.start()

    def in_flight(self) -> int:
        return len(self._background)

    async def stop(self) -> None:
        """Cancel every phone loop and pending send, and wait until they have ended
        (cancelling again any that went on, a few times, then leaving them); then close
        the phones' own connections."""
        pending = {t for p in self.phones for t in p.tasks} | set(self._background)
        for _ in range(5):
            pending = {t for t in pending if not t.done()}
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2)
        if self.connection_per_phone:
            for phone in self.phones:
                await phone.http.close()
