"""Priority in the claim order, on every backend: a device's high messages are claimed
before its normal ones; in a pool a sender's high messages go first within that sender's
own turns while the other senders keep theirs; priority survives a return to the pool, a
cancel and a restore; an unknown priority is refused naming the field.

Then property-based (hypothesis) runs over random sends (senders, priorities, schedules)
and random claim sizes, on fakeredis and a real Redis: every message is claimed exactly
once; a device claim hands exactly the head of its queue (high first, then time order); a
pool claim never hands a sender's normal message while one of that sender's high
messages waits; and senders take turns: while a sender has messages waiting, no other
sender gets more than two claims ahead of it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Broker, errors, keys
from broker.records import Account, OutgoingMessage
from tests.support.backends import NEWEST_REAL, roomy_settings
from tests.support.fleet import TO, pair, self_managed

SECOND = 1000


def send(text: str, device_id: str | None = None, priority: str | None = None, **kw: object) -> OutgoingMessage:
    return OutgoingMessage(TO, text, device_id, priority=priority, **kw)  # type: ignore[arg-type]


async def ids_of(broker: Broker, account: Account, messages: list[OutgoingMessage]) -> list[str]:
    return (await broker.messages.enqueue(account, messages)).ids


async def test_a_device_claims_its_high_messages_first_each_kind_in_time_order(broker: Broker) -> None:
    account, [device] = await self_managed(broker)
    d = device.device_id
    n1, h1, n2, h2 = await ids_of(
        broker, account, [send("n1", d), send("h1", d, "high"), send("n2", d), send("h2", d, "high")]
    )
    assert [m.id for m in await broker.messages.claim(device.ref, 3)] == [h1, h2, n1]
    assert [m.id for m in await broker.messages.claim(device.ref, 3)] == [n2]
    record = await broker.message_log.get(account.shard, h1)
    assert record.priority == "high"
    assert (await broker.message_log.get(account.shard, n1)).priority == "normal"


async def test_in_a_pool_a_senders_high_message_takes_its_own_turn_not_anothers(broker: Broker) -> None:
    newsletter = await broker.accounts.create("news@example.com", "api_only")
    shop = await broker.accounts.create("shop@example.com", "api_only")
    phone = await pair(broker, None)
    letters = await ids_of(broker, newsletter, [send(f"letter {i}") for i in range(4)])
    [receipt] = await ids_of(broker, shop, [send("receipt")])
    [code] = await ids_of(broker, newsletter, [send("code", priority="high")])
    got = [m.id for m in await broker.messages.claim(phone.ref, 1)]
    got += [m.id for m in await broker.messages.claim(phone.ref, 1)]
    # The newsletter's first turn goes to its one-time code, the shop keeps its turn (in
    # which order the two turns of the first round go is a tie).
    assert sorted(got) == sorted([code, receipt])
    rest = [m.id for m in await broker.messages.claim(phone.ref, 10)]
    assert sorted(rest) == sorted(letters)
    assert await broker.redis.zcard(broker.shard(keys.pool_shard()).pool) == 0
    assert await broker.redis.exists(broker.shard(keys.pool_shard()).pool_high) == 0


async def test_high_messages_of_a_pool_go_first_in_one_large_claim_too(broker: Broker) -> None:
    a = await broker.accounts.create("a@example.com", "api_only")
    b = await broker.accounts.create("b@example.com", "api_only")
    phone = await pair(broker, None)
    a_normal = await ids_of(broker, a, [send(f"a{i}") for i in range(3)])
    b_normal = await ids_of(broker, b, [send(f"b{i}") for i in range(3)])
    a_high = await ids_of(broker, a, [send(f"A{i}", priority="high") for i in range(2)])
    got = [m.id for m in await broker.messages.claim(phone.ref, 100)]
    assert sorted(got) == sorted(a_normal + b_normal + a_high)
    a_order = [i for i in got if i in a_normal + a_high]
    assert a_order[:2] == a_high
    # Turns alternate between the senders as before (who goes first in a round is a tie).
    owners = ["a" if i in a_normal + a_high else "b" for i in got]
    assert all(sorted(owners[k : k + 2]) == ["a", "b"] for k in (0, 2, 4)), owners


async def test_priority_is_kept_through_a_return_to_the_pool_and_cancel_clears_it(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    first = await pair(broker, None, "first")
    [urgent] = await ids_of(broker, sender, [send("urgent", priority="high")])
    assert [m.id for m in await broker.messages.claim(first.ref, 1)] == [urgent]
    await broker.messages.report_status(first.ref, urgent, "failed", "no service", retryable=True)
    later = await ids_of(broker, sender, [send("later")])
    second = await pair(broker, None, "second")
    assert [m.id for m in await broker.messages.claim(second.ref, 1)] == [urgent]
    pool = broker.shard(keys.pool_shard())
    [cancelled] = await ids_of(broker, sender, [send("never", priority="high")])
    assert await broker.redis.zcard(pool.pool_high) == 1
    await broker.messages.cancel(sender, cancelled)
    assert await broker.redis.zcard(pool.pool_high) == 0
    assert [m.id for m in await broker.messages.claim(second.ref, 5)] == later


async def test_an_expired_high_message_is_not_handed_and_leaves_the_high_set(broker: Broker, clock) -> None:
    sender = await broker.accounts.create("api@example.com", "api_only")
    phone = await pair(broker, None)
    [normal] = await ids_of(broker, sender, [send("normal")])
    [short] = await ids_of(broker, sender, [send("short", priority="high", valid_for=30)])
    clock.advance(31 * SECOND)
    await broker.presence.heartbeat(phone.ref)
    assert [m.id for m in await broker.messages.claim(phone.ref, 1)] == [normal]
    pool = broker.shard(keys.pool_shard())
    assert (await broker.message_log.get(pool.tag, short)).status == "expired"
    assert await broker.redis.exists(pool.pool_high) == 0


@pytest.mark.parametrize("priority", ["urgent", "HIGH", "", 1])
async def test_an_unknown_priority_is_refused_naming_the_field_and_nothing_is_queued(
    broker: Broker, priority: object
) -> None:
    account, [device] = await self_managed(broker)
    with pytest.raises(errors.BrokerError) as refused:
        await broker.messages.enqueue(
            account,
            [send("fine", device.device_id), send("bad", device.device_id, priority)],  # type: ignore[arg-type]
        )
    assert [(p.index, p.field) for p in refused.value.problems] == [(1, "priority")]
    assert await broker.redis.zcard(broker.shard(account.shard).queue) == 0


# -- properties ----------------------------------------------------------------------------

SENDERS = 3
Send = tuple[int, bool, int]  # (sender, high, due after this many seconds)

sends = st.lists(
    st.tuples(st.integers(0, SENDERS - 1), st.booleans(), st.sampled_from([0, 0, 0, 1, 2])), min_size=1, max_size=30
)
claim_sizes = st.lists(st.integers(1, 4), min_size=1, max_size=8)

PROPERTY_RUNS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


async def _client(url: str | None) -> aioredis.Redis:
    if url is None:
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    client = aioredis.from_url(url)
    await client.flushall()
    return client


class Run:
    """One example: a broker of its own on a clean Redis, and a model of what waits."""

    def __init__(self, broker: Broker, clock: list[int]) -> None:
        self.broker = broker
        self.clock = clock
        self.due: dict[str, int] = {}  # id -> when it becomes claimable (ms)
        self.high: dict[str, bool] = {}
        self.owner: dict[str, int] = {}
        self.claimed: list[str] = []

    def waiting(self) -> list[str]:
        """Queued (due) and not claimed, in id order."""
        taken = set(self.claimed)
        return sorted(i for i, at in self.due.items() if at <= self.clock[0] and i not in taken)

    async def enqueue(self, sender: Account, index: int, items: list[Send], device: str | None) -> None:
        now = self.clock[0]
        messages = [
            send(f"m{n}", device, "high" if high else None, send_at=now + later * SECOND if later else None)
            for n, (_, high, later) in enumerate(items)
        ]
        for mid, (_, high, later) in zip(await ids_of(self.broker, sender, messages), items, strict=True):
            self.due[mid] = now + later * SECOND
            self.high[mid] = high
            self.owner[mid] = index


def run_example(url: str | None, body) -> None:
    async def main() -> None:
        client = await _client(url)
        clock = [1_800_000_000_000]
        broker = Broker(client, roomy_settings(quota_api_only=1_000), clock=lambda: clock[0])
        try:
            await body(Run(broker, clock))
        finally:
            await broker.wakeups.close()
            await client.aclose()

    asyncio.run(main())


async def _tick(run: Run, phone_ref, sizes: list[int], check) -> None:
    """Claims of the given sizes, each checked against the model, a second passing after
    each (scheduled messages come due), until everything is claimed."""
    for step in range(40):
        before = run.waiting()
        size = sizes[step % len(sizes)]
        got = [m.id for m in await run.broker.messages.claim(phone_ref, size)]
        check(before, got, size)
        run.claimed += got
        if len(run.claimed) == len(run.due):
            return
        run.clock[0] += SECOND
        await run.broker.presence.heartbeat(phone_ref)
        await run.broker.schedule.release_due()
    raise AssertionError("messages left unclaimed")


def device_queue_property(url: str | None, items: list[Send], sizes: list[int]) -> None:
    async def body(run: Run) -> None:
        account, [device] = await self_managed(run.broker)
        await run.enqueue(account, 0, items, device.device_id)

        def check(before: list[str], got: list[str], size: int) -> None:
            head = sorted(before, key=lambda i: (not run.high[i], i))[:size]
            assert got == head

        await _tick(run, device.ref, sizes, check)
        assert Counter(run.claimed) == Counter(run.due.keys())

    run_example(url, body)


def pool_property(url: str | None, items: list[Send], sizes: list[int]) -> None:
    async def body(run: Run) -> None:
        senders = [await run.broker.accounts.create(f"s{i}@example.com", "api_only") for i in range(SENDERS)]
        phone = await pair(run.broker, None)
        # The sends arrive in runs of one sender, in the order drawn.
        start = 0
        for end in range(1, len(items) + 1):
            if end == len(items) or items[end][0] != items[start][0]:
                index = items[start][0]
                await run.enqueue(senders[index], index, items[start:end], None)
                start = end
        ahead: dict[tuple[int, int], int] = {}  # (x, y) -> x's claims since y began waiting, minus y's

        def check(before: list[str], got: list[str], size: int) -> None:
            assert len(got) == min(size, len(before))
            assert set(got) <= set(before)
            left = set(before) - set(got)
            for mid in got:
                if not run.high[mid]:
                    assert not any(run.high[o] and run.owner[o] == run.owner[mid] for o in left), (
                        "a sender's normal message went while its high one waited"
                    )
            # A claim hands in turn order. A sender waits while it has a message queued:
            # from the claim that finds one until the message that empties it is handed,
            # and its count starts again when a scheduled message of its own comes due.
            queued = Counter(run.owner[i] for i in before)
            for pair_ in [p for p in ahead if queued[p[1]] == 0]:
                del ahead[pair_]
            for mid in got:
                x = run.owner[mid]
                for y in range(SENDERS):
                    if y != x and queued[y]:
                        lead = ahead.get((x, y), 0) + 1
                        ahead[(x, y)] = lead
                        assert lead <= 2, f"sender {x} went {lead} turns ahead of waiting sender {y}"
                    ahead[(y, x)] = ahead.get((y, x), 0) - 1
                queued[x] -= 1
                if not queued[x]:
                    for pair_ in [p for p in ahead if p[1] == x]:
                        del ahead[pair_]

        await _tick(run, phone.ref, sizes, check)
        assert Counter(run.claimed) == Counter(run.due.keys())

    run_example(url, body)


def _url(backend: str, request: pytest.FixtureRequest) -> str | None:
    return None if backend == "fakeredis" else request.getfixturevalue("real_servers")[backend].url


@pytest.mark.parametrize("backend", ["fakeredis", NEWEST_REAL])
def test_property_a_device_queue_hands_high_first_then_time_order(backend: str, request) -> None:
    url = _url(backend, request)

    @PROPERTY_RUNS
    @given(items=sends, sizes=claim_sizes)
    def prop(items: list[Send], sizes: list[int]) -> None:
        device_queue_property(url, items, sizes)

    prop()


@pytest.mark.parametrize("backend", ["fakeredis", NEWEST_REAL])
def test_property_a_pool_keeps_turns_and_high_first_within_a_sender(backend: str, request) -> None:
    url = _url(backend, request)

    @PROPERTY_RUNS
    @given(items=sends, sizes=claim_sizes)
    def prop(items: list[Send], sizes: list[int]) -> None:
        pool_property(url, items, sizes)

    prop()
