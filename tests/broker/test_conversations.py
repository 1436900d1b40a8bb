"""Conversations: a sender's messages filtered by direction and by the number at the
other end (``phone``), alone and with the status and device filters, paged; the inbox's
one thread per number that wrote, at its newest message either way (a reply moves it up),
whatever lies between it and the newest message, and what is new in it; over Redis
alone, across the Redis / history store boundary (a thread whose messages are past the
store's retention goes), and a history store of schema version 1 brought to version 2."""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa

from broker import Broker, errors, keys
from broker.history import SCHEMA_VERSION, HistoryStore, counterpart, messages, metadata
from broker.inbox import InboxVisit
from broker.message_log import MAX_PAGE
from broker.records import Account, MessageRecord, OutgoingMessage, RegisteredDevice
from broker.snapshotter import Snapshotter
from tests.support.backends import history_broker
from tests.support.fleet import pair, self_managed

WHEN = 1_800_000_000_000
ANN, BOB, CAT = "+15550000001", "+15550000002", "+15550000003"
HOT_MS = 60_000


async def receive(broker: Broker, phone: RegisteredDevice, sender: str, text: str) -> str:
    broker.clock.advance(1)  # type: ignore[attr-defined]
    return (await broker.inbound.receive(phone.ref, sender, text, WHEN, f"ref-{broker.clock()}")).id


async def send(broker: Broker, account: Account, phone: RegisteredDevice, to: str, text: str) -> str:
    broker.clock.advance(1)  # type: ignore[attr-defined]
    [mid] = (await broker.messages.enqueue(account, [OutgoingMessage(to, text, phone.device_id)])).ids
    return mid


async def everything(broker: Broker, account: Account, limit: int, **filters: str | None) -> list[MessageRecord]:
    """Every page of a filtered listing, in order."""
    seen: list[MessageRecord] = []
    cursor = None
    while True:
        page = await broker.message_log.page(account, limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            return seen


async def a_conversation(broker: Broker) -> tuple[Account, list[RegisteredDevice], dict[str, str]]:
    """Two phones; Ann writes, gets an answer and writes again; Bob is sent to and never
    writes; Cat writes to the second phone; a bank writes by name."""
    account, phones = await self_managed(broker, devices=2)
    one, two = phones
    ids = {
        "ann-1": await receive(broker, one, ANN, "Hi, is the shop open on Sunday?"),
        "to-ann-1": await send(broker, account, one, ANN, "Yes, 10 to 4."),
        "to-bob": await send(broker, account, two, BOB, "Your order is ready."),
        "cat-1": await receive(broker, two, CAT, "Wrong number?"),
        "bank": await receive(broker, one, "BANK", "Your code is 1234"),
        "ann-2": await receive(broker, one, ANN, "Thanks!"),
        "to-ann-2": await send(broker, account, two, ANN, "You're welcome."),
    }
    return account, phones, ids


async def test_direction_and_phone_filter_alone_together_and_with_the_others(broker: Broker) -> None:
    account, [_, two], ids = await a_conversation(broker)
    log = broker.message_log

    def named(records: list[MessageRecord]) -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        return [by_id[r.id] for r in records]

    for limit in (1, 2, 50):
        assert named(await everything(broker, account, limit, direction="inbound")) == [
            "ann-2",
            "bank",
            "cat-1",
            "ann-1",
        ]
        assert named(await everything(broker, account, limit, direction="outbound")) == [
            "to-ann-2",
            "to-bob",
            "to-ann-1",
        ]
        assert named(await everything(broker, account, limit, phone=ANN)) == ["to-ann-2", "ann-2", "to-ann-1", "ann-1"]
        assert named(await everything(broker, account, limit, phone=ANN, direction="inbound")) == ["ann-2", "ann-1"]
        assert named(await everything(broker, account, limit, phone=ANN, device_id=two.device_id)) == ["to-ann-2"]
        assert named(await everything(broker, account, limit, phone=ANN, status="received")) == ["ann-2", "ann-1"]
        assert named(await everything(broker, account, limit, phone=BOB, status="queued")) == ["to-bob"]
        assert named(await everything(broker, account, limit, phone=CAT, direction="outbound")) == []
        assert named(await everything(broker, account, limit, phone="BANK")) == ["bank"]
    # Bob never wrote; Ann's conversation is to her and from her, whatever the phone.
    assert {r.direction for r in await everything(broker, account, 50, phone=BOB)} == {"outbound"}
    [only] = (await log.page(account, direction="inbound", device_id=two.device_id)).items
    assert only.id == ids["cat-1"]
    # Another account sees none of it.
    other, _ = await self_managed(broker, "other@example.com")
    assert (await log.page(other, phone=ANN)).items == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"direction": "sideways"}, "direction"),
        ({"direction": "Inbound"}, "direction"),
        ({"phone": "+1555"}, "phone"),
        ({"phone": "+15550000001 "}, "phone"),
        ({"phone": " 15550000001"}, "phone"),
        ({"phone": "a/b"}, "phone"),
        ({"phone": ""}, "phone"),
        ({"phone": "SIXTEEN-LETTERS-"}, "phone"),
        ({"phone": ANN, "status": "lost"}, "status"),
    ],
)
async def test_bad_filters_name_their_field(broker: Broker, kwargs: dict[str, str], field: str) -> None:
    account, _ = await self_managed(broker)
    with pytest.raises(errors.InvalidInput) as refused:
        await broker.message_log.page(account, **kwargs)  # type: ignore[arg-type]
    assert refused.value.field == field


async def test_a_sparse_conversation_pages_on_past_what_it_read(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    first = await receive(broker, phone, ANN, "hello")
    await broker.messages.enqueue(account, [OutgoingMessage(BOB, "x", phone.device_id)] * 30)
    seen, cursor, pages = [], None, 0
    while True:
        page = await broker.message_log.page(account, phone=ANN, cursor=cursor, scan_limit=10)
        seen += [m.id for m in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [first] and pages == 4


def threads_of(page) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """A page of threads as (the number at the other end, its newest message's id)."""
    return [(counterpart(r), r.id) for r in page.items]


async def test_one_thread_per_number_that_wrote_at_its_newest_message_either_way(broker: Broker) -> None:
    account, _, ids = await a_conversation(broker)
    log = broker.message_log
    page = await log.conversations(account)
    # Ann's thread is at the answer she was sent last; Bob was only sent to: no thread.
    assert threads_of(page) == [(ANN, ids["to-ann-2"]), ("BANK", ids["bank"]), (CAT, ids["cat-1"])]
    assert page.items[0].direction == "outbound" and page.next_cursor is None
    first = await log.conversations(account, limit=2)
    assert threads_of(first) == [(ANN, ids["to-ann-2"]), ("BANK", ids["bank"])]
    assert first.next_cursor == ids["bank"]
    rest = await log.conversations(account, limit=2, cursor=first.next_cursor)
    assert threads_of(rest) == [(CAT, ids["cat-1"])] and rest.next_cursor is None
    other, _ = await self_managed(broker, "other@example.com")
    assert (await log.conversations(other)).items == []
    with pytest.raises(errors.InvalidInput):
        await log.conversations(account, cursor="../x")


async def test_a_reply_moves_its_thread_to_the_top_and_a_send_to_a_stranger_makes_none(broker: Broker) -> None:
    account, [phone] = await self_managed(broker)
    log = broker.message_log
    ann = await receive(broker, phone, ANN, "Is the shop open on Sunday?")
    bob = await receive(broker, phone, BOB, "Do you deliver?")
    assert threads_of(await log.conversations(account)) == [(BOB, bob), (ANN, ann)]
    reply = await send(broker, account, phone, ANN, "Yes, 10 to 4.")
    page = await log.conversations(account)
    assert threads_of(page) == [(ANN, reply), (BOB, bob)]
    assert (page.items[0].direction, page.items[0].message) == ("outbound", "Yes, 10 to 4.")
    # A batch: each thread at the last message of the batch to it; Cat never wrote.
    broker.clock.advance(1)  # type: ignore[attr-defined]
    batch = (
        await broker.messages.enqueue(
            account,
            [OutgoingMessage(to, f"news {i}", phone.device_id) for i, to in enumerate((BOB, CAT, BOB, ANN, CAT))],
        )
    ).ids
    assert threads_of(await log.conversations(account)) == [(ANN, batch[3]), (BOB, batch[2])]
    # A send replayed by its idempotency key moves nothing; neither does a refused one.
    broker.clock.advance(1)  # type: ignore[attr-defined]
    [once] = (
        await broker.messages.enqueue(account, [OutgoingMessage(ANN, "once", phone.device_id)], idempotency_key="k")
    ).ids
    to_bob = await send(broker, account, phone, BOB, "Tomorrow, yes.")
    broker.clock.advance(1)  # type: ignore[attr-defined]
    replay = await broker.messages.enqueue(
        account, [OutgoingMessage(ANN, "once", phone.device_id)], idempotency_key="k"
    )
    assert replay.duplicate and replay.ids == [once]
    assert threads_of(await log.conversations(account)) == [(BOB, to_bob), (ANN, once)]
    stop = await receive(broker, phone, ANN, "STOP")
    with pytest.raises(errors.RecipientOptedOut):
        await broker.messages.enqueue(account, [OutgoingMessage(ANN, "one more", phone.device_id)])
    assert threads_of(await log.conversations(account)) == [(ANN, stop), (BOB, to_bob)]
    # The index holds one member per thread, however often it moved.
    shard = broker.shard(account.shard)
    assert await broker.redis.zcard(shard.threads(account.id)) == 2
    assert await broker.redis.hlen(shard.thread_newest(account.id)) == 2


async def test_new_in_the_inbox_is_what_arrived_since_it_was_last_opened(broker: Broker, clock) -> None:
    account, [phone] = await self_managed(broker)
    inbox = broker.inbox
    assert await inbox.unread(account) == 0
    await receive(broker, phone, ANN, "one")
    await receive(broker, phone, BOB, "two")
    await send(broker, account, phone, ANN, "an answer is not news")
    assert await inbox.unread(account) == 2
    opened = clock()
    assert await inbox.open(account) == InboxVisit(previous_ms=0, received=2)
    assert await inbox.unread(account) == 0
    clock.advance(5_000)
    await receive(broker, phone, ANN, "three")
    assert await inbox.unread(account) == 1
    assert await inbox.open(account) == InboxVisit(previous_ms=opened, received=3)
    assert await inbox.unread(account) == 0
    # One account's inbox is its own; an API-only one's SMS come through the platform pool.
    other = await broker.accounts.create("other@example.com", "api_only")
    pool_phone = await pair(broker, None, "pool phone")
    [mid] = (await broker.messages.enqueue(other, [OutgoingMessage(CAT, "code 123")])).ids
    await broker.messages.claim(pool_phone.ref)
    await broker.messages.report_status(pool_phone.ref, mid, "sent")
    assert (await broker.inbound.receive(pool_phone.ref, CAT, "thanks", WHEN, "pool-1")).account == other.id
    assert (await inbox.unread(other), await inbox.unread(account)) == (1, 0)
    assert [r.sender for r in (await broker.message_log.conversations(other)).items] == [CAT]
    await inbox.open(other)
    assert await inbox.unread(other) == 0
    assert await broker.redis.hgetall(broker.shard(keys.account_shard(other.id)).inbox_seen())


# Across the Redis / history store boundary ------------------------------------------------


@pytest.fixture
async def hbroker(real_redis, scripts, clock, history_store: HistoryStore) -> Broker:
    return await history_broker(real_redis, scripts, clock, history_store, hot_retention_seconds=HOT_MS // 1000)


async def only_in_the_store(broker: Broker, account: Account, message_id: str) -> None:
    """What the trim does to a finished message, done by hand to a received one (which
    Redis keeps): the store has it, Redis no longer."""
    shard = broker.shard(account.shard)
    await broker.redis.hdel(shard.messages, message_id)
    await broker.redis.zrem(shard.sent(account.id), message_id)


async def test_filters_and_threads_cross_the_redis_store_boundary_without_gaps_or_repeats(
    hbroker: Broker, history_store: HistoryStore, clock
) -> None:
    account, [one, two] = await self_managed(hbroker, devices=2)
    snapshotter = Snapshotter(hbroker, history_store)
    numbers = [ANN, BOB, CAT]
    for round_ in range(3):
        for i in range(6):
            number = numbers[(i + round_) % 3]
            phone = (one, two)[i % 2]
            if i % 3 == 0:
                await receive(hbroker, phone, number, f"r{round_} from {number}")
            else:
                await send(hbroker, account, phone, number, f"r{round_} to {number}")
        for phone in (one, two):
            for m in await hbroker.messages.claim(phone.ref, 2):
                await hbroker.messages.report_status(phone.ref, m.id, "sent")
        await snapshotter.run_once()
        clock.advance(HOT_MS)  # each round's finished messages are trimmed by the next pass
    await snapshotter.run_once()
    every = await everything(hbroker, account, 500)
    inbound = [r for r in every if r.direction == "inbound"]
    for record in inbound[2:]:  # the older received ones now live in the store only
        await only_in_the_store(hbroker, account, record.id)
    shard = hbroker.shard(account.shard)
    assert await hbroker.redis.hlen(shard.messages) < len(every)
    assert await everything(hbroker, account, 500) == every
    for filters in (
        {"direction": "inbound"},
        {"direction": "outbound"},
        {"phone": ANN},
        {"phone": BOB, "direction": "inbound"},
        {"phone": CAT, "status": "sent"},
        {"phone": ANN, "device_id": two.device_id},
    ):
        expected = [
            r
            for r in every
            if all(
                getattr(r, {"phone": "sender" if r.direction == "inbound" else "to", "device_id": "device"}.get(k, k))
                == v
                for k, v in filters.items()
            )
        ]
        for limit in (1, 3, 50):
            assert [r.id for r in await everything(hbroker, account, limit, **filters)] == [r.id for r in expected], (
                filters,
                limit,
            )
    # When they were made, both ends included, wherever they are kept.
    made = sorted({r.created for r in every})
    middle = made[len(made) // 2]
    for since, until in ((made[1], made[-2]), (None, middle), (middle, None), (middle, middle), (made[-1] + 1, None)):
        expected = [
            r.id for r in every if (since is None or r.created >= since) and (until is None or r.created <= until)
        ]
        assert expected or since == made[-1] + 1
        for limit in (1, 3, 50):
            found = await everything(hbroker, account, limit, since_ms=since, until_ms=until)  # type: ignore[arg-type]
            assert [r.id for r in found] == expected, (since, until, limit)
    # One thread per number that wrote, at its newest message either way, wherever that is kept.
    wrote = {r.sender for r in inbound}
    newest: dict[str, str] = {}
    for record in every:
        if counterpart(record) in wrote:
            newest.setdefault(counterpart(record), record.id)
    for limit in (1, 2, 50):
        threads, cursor = [], None
        while True:
            page = await hbroker.message_log.conversations(account, limit=limit, cursor=cursor)
            threads += threads_of(page)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert threads == sorted(newest.items(), key=lambda kv: kv[1], reverse=True), limit


@pytest.mark.parametrize("between", ["sent to others", "received from another number"])
async def test_a_thread_is_listed_whatever_lies_between_it_and_the_newest_message(
    hbroker: Broker, history_store: HistoryStore, between: str
) -> None:
    """Nothing stored yet (the snapshotter has not run): the thread is found however many
    messages came after it (more than any page or scan of the history reads)."""
    account, [phone] = await self_managed(hbroker)
    ann = await receive(hbroker, phone, ANN, "Hi, any news?")
    hbroker.clock.advance(1)  # type: ignore[attr-defined]
    if between == "sent to others":
        for _ in range(6):  # 6,000: past SCAN_LIMIT (5,000) ids
            await hbroker.messages.enqueue(account, [OutgoingMessage(BOB, "newsletter", phone.device_id)] * 1_000)
        newest = [(ANN, ann)]
    else:
        chatty = [await receive(hbroker, phone, CAT, f"message {i}") for i in range(MAX_PAGE + 1)]
        newest = [(CAT, chatty[-1]), (ANN, ann)]
    assert await history_store.count_messages() == 0
    assert threads_of(await hbroker.message_log.conversations(account)) == newest
    assert threads_of(await hbroker.message_log.conversations(account, limit=1)) == newest[:1]


async def test_a_received_sms_not_yet_stored_is_its_threads_newest(
    hbroker: Broker, history_store: HistoryStore
) -> None:
    account, [phone] = await self_managed(hbroker)
    old = await receive(hbroker, phone, ANN, "first")
    await Snapshotter(hbroker, history_store).run_once()
    await only_in_the_store(hbroker, account, old)
    new = await receive(hbroker, phone, ANN, "second")  # in Redis only: not snapshotted yet
    assert [r.id for r in (await hbroker.message_log.conversations(account)).items] == [new]
    assert [r.id for r in (await hbroker.message_log.page(account, phone=ANN)).items] == [new, old]


async def test_a_thread_goes_once_its_messages_are_past_the_stores_retention(
    hbroker: Broker, history_store: HistoryStore
) -> None:
    account, [phone] = await self_managed(hbroker)
    log = hbroker.message_log
    kept = await receive(hbroker, phone, ANN, "still kept")
    gone = {f"+1555700{i:04d}": await receive(hbroker, phone, f"+1555700{i:04d}", "long ago") for i in range(10)}
    await Snapshotter(hbroker, history_store).run_once()
    for message_id in (kept, *gone.values()):
        await only_in_the_store(hbroker, account, message_id)
    async with history_store.engine.begin() as conn:  # what the retention does to old rows
        await conn.execute(sa.delete(messages).where(messages.c.id.in_(list(gone.values()))))
    # A page reads a bounded number of threads: past that many gone ones, it ends where
    # it stopped reading, and the next one goes on from there.
    first = await log.conversations(account, limit=1)
    assert first.items == [] and first.next_cursor is not None
    rest = await log.conversations(account, limit=1, cursor=first.next_cursor)
    assert threads_of(rest) == [(ANN, kept)] and rest.next_cursor is None
    # The gone threads were dropped as they were met.
    shard = hbroker.shard(account.shard)
    assert await hbroker.redis.hkeys(shard.thread_newest(account.id)) == [ANN.encode()]
    assert threads_of(await log.conversations(account)) == [(ANN, kept)]
    # A thread is dropped only while it is still at the message found gone.
    newer = await receive(hbroker, phone, ANN, "and again")
    keys_ = [shard.threads(account.id), shard.thread_newest(account.id)]
    assert await hbroker.ctx.call("thread-forget", keys_, [ANN, kept]) == 0
    assert threads_of(await log.conversations(account)) == [(ANN, newer)]


async def test_a_thread_never_moves_back_to_an_earlier_message(broker: Broker, clock) -> None:
    """Ids sort by time; a message whose id is earlier (another process's clock a little
    behind) stored after a later one leaves the thread at the later one."""
    account, [phone] = await self_managed(broker)
    later = await receive(broker, phone, ANN, "later")
    clock.advance(-10)
    await receive(broker, phone, ANN, "earlier, stored after")
    await send(broker, account, phone, ANN, "an answer, earlier too")
    assert threads_of(await broker.message_log.conversations(account)) == [(ANN, later)]


# Schema version 1 ----------------------------------------------------------------------------


def version_1_messages(meta: sa.MetaData) -> sa.Table:
    """The messages table as schema version 1 made it."""
    return sa.Table(
        "messages",
        meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("shard", sa.String(80), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("stored_at", sa.BigInteger, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Index("messages_account_id", "account", "id"),
        sa.Index("messages_updated", "updated"),
    )


def stored_record(message_id: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": message_id,
        "account": "acct",
        "to": BOB,
        "body": "x",
        "segments": 1,
        "route": "device",
        "device": "dev",
        "status": "sent",
        "created": 1,
        "expires": 2,
        "leases": 1,
        "lease_until": 0,
        "updated": 3,
        "error": "",
        "timeline": [],
    }
    return {**base, **fields}


async def test_a_version_1_store_gets_direction_and_counterpart_at_start(store_url: str, monkeypatch) -> None:
    monkeypatch.setattr("broker.history.MIGRATION_BATCH", 2)  # several batches
    records = [
        stored_record("01A", direction="outbound", **{"from": ""}),
        stored_record(
            "01B", route="inbound", status="received", to="+15559999999", direction="inbound", **{"from": ANN}
        ),
        stored_record("01C"),  # stored before received SMS existed: no direction, no from
        stored_record("01D", to=ANN),
        stored_record("01E", route="inbound", status="received", to="", direction="inbound", **{"from": "BANK"}),
    ]
    store = HistoryStore(store_url)
    try:
        old = sa.MetaData()
        table = version_1_messages(old)
        meta = sa.Table(
            "connecfy_meta", old, sa.Column("name", sa.String(64), primary_key=True), sa.Column("value", sa.Text)
        )
        async with store.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(old.create_all)
            await conn.execute(meta.insert(), [{"name": "schema_version", "value": "1"}])
            await conn.execute(
                table.insert(),
                [
                    {
                        "id": r["id"],
                        "shard": "a:acct",
                        "account": "acct",
                        "device": "dev",
                        "status": r["status"],
                        "created": 1,
                        "updated": 3,
                        "version": 0,
                        "stored_at": 4,
                        "record": msgspec.json.encode(r).decode(),
                    }
                    for r in records
                ],
            )
        for _ in range(2):  # a second start (another worker) finds nothing left to do
            await store.start()
            assert await store.get_meta("schema_version") == str(SCHEMA_VERSION) == "3"
            async with store.engine.connect() as conn:
                rows = (
                    await conn.execute(sa.text("SELECT id, direction, counterpart FROM messages ORDER BY id"))
                ).all()
                indexes = await conn.run_sync(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("messages")})
            assert [tuple(r) for r in rows] == [
                ("01A", "outbound", BOB),
                ("01B", "inbound", ANN),
                ("01C", "outbound", BOB),
                ("01D", "outbound", ANN),
                ("01E", "inbound", "BANK"),
            ]
            assert {"messages_account_direction_id", "messages_account_counterpart_id"} <= indexes
        listed = await store.list_messages("acct", limit=10, before=None, status=None, device=None, phone=ANN)
        assert [r.id for r in listed] == ["01D", "01B"]
        inbound = await store.list_messages(
            "acct", limit=10, before=None, status=None, device=None, direction="inbound"
        )
        assert [r.id for r in inbound] == ["01E", "01B"]
        # The threads restore writes back: who wrote, at the newest message either way.
        threads = [thread async for chunk in store.threads(chunk=1) for thread in chunk]
        assert sorted(threads) == [("a:acct", "acct", ANN, "01D"), ("a:acct", "acct", "BANK", "01E")]
    finally:
        await store.close()


async def test_a_new_store_starts_at_the_current_version(history_store: HistoryStore) -> None:
    assert await history_store.get_meta("schema_version") == str(SCHEMA_VERSION)
    async with history_store.engine.connect() as conn:
        columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("messages")})
    assert {"direction", "counterpart"} <= columns
