"""Conversations: a sender's messages filtered by direction and by the number at the
other end (``phone``), alone and with the status and device filters, paged; the inbox's
one thread per number that wrote, and what is new in it; over Redis alone, across the Redis / history store
boundary, and a history store of schema version 1 brought to version 2."""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa

from broker import Broker, errors, keys
from broker.history import SCHEMA_VERSION, HistoryStore, metadata
from broker.inbox import InboxVisit
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


async def test_one_thread_per_number_that_wrote_newest_first(broker: Broker) -> None:
    account, _, ids = await a_conversation(broker)
    log = broker.message_log
    page = await log.conversations(account)
    assert [(r.sender, r.id) for r in page.items] == [(ANN, ids["ann-2"]), ("BANK", ids["bank"]), (CAT, ids["cat-1"])]
    assert page.next_cursor is None
    first = await log.conversations(account, limit=2)
    assert [r.sender for r in first.items] == [ANN, "BANK"] and first.next_cursor == ids["bank"]
    rest = await log.conversations(account, limit=2, cursor=first.next_cursor)
    assert [r.sender for r in rest.items] == [CAT] and rest.next_cursor is None
    other, _ = await self_managed(broker, "other@example.com")
    assert (await log.conversations(other)).items == []
    with pytest.raises(errors.InvalidInput):
        await log.conversations(account, cursor="../x")


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
    # One thread per number, at its newest received SMS, wherever that is kept.
    newest: dict[str, str] = {}
    for record in inbound:
        newest.setdefault(record.sender, record.id)
    for limit in (1, 2, 50):
        threads, cursor = [], None
        while True:
            page = await hbroker.message_log.conversations(account, limit=limit, cursor=cursor)
            threads += [(r.sender, r.id) for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert threads == sorted(newest.items(), key=lambda kv: kv[1], reverse=True), limit


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
            assert await store.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
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
        assert [r.id for r in await store.conversations("acct", limit=10, before=None)] == ["01E", "01B"]
        assert [r.id for r in await store.conversations("acct", limit=10, before="01E")] == ["01B"]
    finally:
        await store.close()


async def test_a_new_store_starts_at_the_current_version(history_store: HistoryStore) -> None:
    assert await history_store.get_meta("schema_version") == str(SCHEMA_VERSION)
    async with history_store.engine.connect() as conn:
        columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("messages")})
    assert {"direction", "counterpart"} <= columns
