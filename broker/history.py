"""The history store: messages past and present, and the directory (accounts, devices,
API keys) that ``connecfy restore`` needs to rebuild Redis after a total loss.

SQLAlchemy Core over asyncio: a SQLite file in the data directory by default
(``aiosqlite``), PostgreSQL when ``CONNECFY_DATABASE_URL`` names one (``asyncpg``). The
schema is created, or brought up to :data:`SCHEMA_VERSION`, at start-up.

A message row keeps the Redis record as it was last seen (``record``, JSON with its
status timeline) beside the columns the history pages filter on: among them
``direction`` (``outbound`` or ``inbound``) and ``counterpart``, the other end of the
conversation (an outbound message's ``to``, an inbound one's ``from``), which the
conversation filter (``?phone=``) reads, and restore when it writes the inbox's threads
back. ``version`` is the length of the record's timeline: every status change adds one
entry, so an upsert only replaces a row with a record that has moved further (or as far,
changed later: a Redis that lost its last second and took another path to the same
length), and an old event read again after a crash never moves a stored status
backwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from broker.records import MessageRecord
from broker.settings import Settings

SCHEMA_VERSION = 3
"""1: the first. 2: ``messages.direction`` and ``messages.counterpart``, with their
indexes; a version 1 store gets them at start-up, filled in from each row's record.
3: ``messages.campaign`` (the campaign a message was queued for, ""), with its index;
no message of an older store belongs to a campaign, so it is added empty."""
MIGRATION_BATCH = 1_000
SQLITE_FILE = "history.sqlite3"
FINISHED: frozenset[str] = frozenset({"sent", "delivered", "failed", "expired", "cancelled", "received"})

metadata = sa.MetaData()

meta = sa.Table(
    "connecfy_meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # a ULID: sorts by creation time
    sa.Column("shard", sa.String(80), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("updated", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("stored_at", sa.BigInteger, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    # Since schema version 2 (a store of version 1 gets them by ALTER TABLE, filled in from
    # ``record``): "outbound" or "inbound", and the number (or sender name) at the other end.
    sa.Column("direction", sa.String(8), nullable=False, server_default="outbound"),
    sa.Column("counterpart", sa.String(32), nullable=False, server_default=""),
    # Since schema version 3: the campaign the message was queued for, "" for none.
    sa.Column("campaign", sa.String(32), nullable=False, server_default=""),
    sa.Index("messages_account_id", "account", "id"),
    sa.Index("messages_updated", "updated"),
    sa.Index("messages_account_direction_id", "account", "direction", "id"),
    sa.Index("messages_account_counterpart_id", "account", "counterpart", "id"),
    sa.Index("messages_account_campaign_id", "account", "campaign", "id"),
)
ADDED_IN_2 = ("direction", "counterpart")
ADDED_IN_3 = ("campaign",)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("fields", sa.Text, nullable=False),  # the account hash as JSON (password hash included)
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("shard", sa.String(80), nullable=False, index=True),
    sa.Column("fields", sa.Text, nullable=False),  # the device hash as JSON: token SHA-256, never the token
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("record", sa.Text, nullable=False),  # id, name, created_ms, sha256 of the key
)


def counterpart(record: MessageRecord) -> str:
    """The other end of a message's conversation: whom it went to, or whom it came from."""
    return record.sender if record.direction == "inbound" else record.to


def database_url(settings: Settings, data_dir: str | None = None) -> str:
    """The store's SQLAlchemy URL: ``CONNECFY_DATABASE_URL`` (a plain ``postgresql://``
    gets the asyncpg driver), else a SQLite file in the data directory.

    Query parameters go to ``asyncpg.connect`` as keyword arguments, which knows no
    libpq ``sslmode``: it becomes asyncpg's ``ssl``, which takes the same values
    (disable, allow, prefer, require, verify-ca, verify-full)."""
    if settings.database_url:
        url = make_url(settings.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+asyncpg")
        elif url.drivername == "sqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        if url.drivername == "postgresql+asyncpg" and "sslmode" in url.query:
            query = dict(url.query)
            query.setdefault("ssl", query.pop("sslmode"))
            url = url.set(query=query)
        return url.render_as_string(hide_password=False)
    directory = Path(data_dir or settings.data_dir).resolve()
    return f"sqlite+aiosqlite:///{directory / SQLITE_FILE}"


class HistoryStore:
    """One engine per process; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @property
    def is_local(self) -> bool:
        """Whether the store is a file of this host (SQLite), which another host cannot share."""
        return self.dialect == "sqlite"

    @classmethod
    def from_settings(cls, settings: Settings, data_dir: str | None = None) -> HistoryStore:
        url = database_url(settings, data_dir)
        if url.startswith("sqlite"):
            Path(make_url(url).database or ".").parent.mkdir(parents=True, exist_ok=True)
        return cls(url)

    async def start(self) -> None:
        """Create the schema, or migrate it; several workers may start at once (each
        step is idempotent: a worker that meets another's half-done migration does the
        rest of it again)."""
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                    await conn.run_sync(_add_missing_columns)
                break
            except DBAPIError:
                # Another worker created the same table or column a moment before this one.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        stored = await self.get_meta("schema_version")
        if stored is not None and int(stored) < 2:
            await self._fill_counterparts()
        await self.set_meta("schema_version", str(SCHEMA_VERSION))

    async def _fill_counterparts(self) -> None:
        """Version 1 to 2: each row's direction and counterpart, read from its record
        (``MIGRATION_BATCH`` rows per transaction, so a long history holds no long lock)."""
        after = ""
        while True:
            query = sa.select(messages.c.id).where(messages.c.id > after).order_by(messages.c.id).limit(MIGRATION_BATCH)
            async with self.engine.begin() as conn:
                found = (await conn.execute(query)).scalars().all()
                if not found:
                    return
                inbound = sa.func.coalesce(self._record_field("direction"), "outbound") == "inbound"
                await conn.execute(
                    sa.update(messages)
                    .where(messages.c.id >= found[0], messages.c.id <= found[-1])
                    .values(
                        direction=sa.case((inbound, "inbound"), else_="outbound"),
                        counterpart=sa.func.coalesce(
                            sa.case((inbound, self._record_field("from")), else_=self._record_field("to")), ""
                        ),
                    )
                )
            after = found[-1]

    def _record_field(self, name: str) -> Any:
        """A top-level string of the ``record`` JSON, as SQL of this store's dialect."""
        if self.dialect == "postgresql":
            return sa.cast(messages.c.record, postgresql.JSONB)[name].astext
        return sa.func.json_extract(messages.c.record, f"$.{name}")

    async def close(self) -> None:
        await self.engine.dispose()

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _upsert(self, table: sa.Table, keys: list[str], columns: Iterable[str], where: Any = None) -> Any:
        stmt = self._insert(table)
        return stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in columns}, where=where)

    # Bookkeeping ---------------------------------------------------------------------

    async def get_meta(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(meta.c.value).where(meta.c.name == name))).scalar()

    async def set_meta(self, name: str, value: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self._upsert(meta, ["name"], {"value"}), [{"name": name, "value": value}])

    # Messages ------------------------------------------------------------------------

    async def upsert_messages(self, shard: str, records: Sequence[MessageRecord], now_ms: int) -> None:
        """Store the records; a stored row is replaced only by a record further along."""
        if not records:
            return
        rows = [
            {
                "id": r.id,
                "shard": shard,
                "account": r.account,
                "device": r.device,
                "status": r.status,
                "created": r.created,
                "updated": r.updated,
                "version": len(r.timeline),
                "stored_at": now_ms,
                "record": msgspec.json.encode(r).decode(),
                "direction": r.direction,
                "counterpart": counterpart(r),
                "campaign": r.campaign,
            }
            for r in records
        ]
        stmt = self._insert(messages)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={c: stmt.excluded[c] for c in ("device", "status", "updated", "version", "stored_at", "record")},
            where=sa.or_(
                messages.c.version < stmt.excluded.version,
                sa.and_(messages.c.version == stmt.excluded.version, messages.c.updated < stmt.excluded.updated),
            ),
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def message(self, shard: str, message_id: str) -> MessageRecord | None:
        query = sa.select(messages.c.record).where(messages.c.id == message_id, messages.c.shard == shard)
        async with self.engine.connect() as conn:
            raw = (await conn.execute(query)).scalar()
        return None if raw is None else msgspec.json.decode(raw, type=MessageRecord)

    async def list_messages(
        self,
        account: str,
        *,
        limit: int,
        before: str | None,
        status: str | None,
        device: str | None,
        direction: str | None = None,
        phone: str | None = None,
        campaign: str | None = None,
        lowest: str | None = None,
    ) -> list[MessageRecord]:
        """An account's stored messages, newest first, ids below ``before`` and from
        ``lowest`` up; ``phone``:
        only those of the conversation with that number (to it, or from it);
        ``campaign``: only those queued for that campaign."""
        query = sa.select(messages.c.record).where(messages.c.account == account)
        if before is not None:
            query = query.where(messages.c.id < before)
        if lowest is not None:
            query = query.where(messages.c.id >= lowest)
        if status is not None:
            query = query.where(messages.c.status == status)
        if device is not None:
            query = query.where(messages.c.device == device)
        if direction is not None:
            query = query.where(messages.c.direction == direction)
        if phone is not None:
            query = query.where(messages.c.counterpart == phone)
        if campaign is not None:
            query = query.where(messages.c.campaign == campaign)
        query = query.order_by(messages.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            raws = (await conn.execute(query)).scalars().all()
        return [msgspec.json.decode(raw, type=MessageRecord) for raw in raws]

    async def messages_by_id(self, shard: str, message_ids: Sequence[str]) -> dict[str, MessageRecord]:
        """The stored records of ``message_ids`` in ``shard`` (those it holds), in one query."""
        if not message_ids:
            return {}
        query = sa.select(messages.c.record).where(messages.c.shard == shard, messages.c.id.in_(list(message_ids)))
        async with self.engine.connect() as conn:
            raws = (await conn.execute(query)).scalars().all()
        records = (msgspec.json.decode(raw, type=MessageRecord) for raw in raws)
        return {r.id: r for r in records}

    async def threads(self, chunk: int = 1_000) -> AsyncIterator[list[tuple[str, str, str, str]]]:
        """The inbox threads the stored messages make, ``chunk`` at a time, as (shard,
        account, counterpart, newest id): one per number (or sender name) that wrote to an
        account, at its conversation's newest message either way, in that message's shard.
        For restore, which writes them back; read once, as one streamed query."""
        grouped = (
            sa.select(sa.func.max(messages.c.id).label("id"))
            .where(messages.c.account != "")
            .group_by(messages.c.account, messages.c.counterpart)
            # "inbound" sorts before "outbound": the conversations someone wrote in.
            .having(sa.func.min(messages.c.direction) == "inbound")
            .subquery()
        )
        query = sa.select(messages.c.shard, messages.c.account, messages.c.counterpart, messages.c.id).join(
            grouped, messages.c.id == grouped.c.id
        )
        async with self.engine.connect() as conn:
            result = await conn.stream(query)
            async for rows in result.partitions(chunk):
                yield [(row.shard, row.account, row.counterpart, row.id) for row in rows]

    async def message_rows(self, shard: str | None = None) -> list[tuple[str, MessageRecord]]:
        """Every stored message (of one shard), oldest first, with its shard, all in memory:
        for tests and small tools (restore reads :meth:`unfinished_messages`)."""
        query = sa.select(messages.c.shard, messages.c.record).order_by(messages.c.id)
        if shard is not None:
            query = query.where(messages.c.shard == shard)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.shard, msgspec.json.decode(row.record, type=MessageRecord)) for row in rows]

    async def unfinished_messages(self, chunk: int = 1_000) -> AsyncIterator[list[tuple[str, MessageRecord]]]:
        """The stored messages that are not finished, oldest first, with their shard, in
        pages of ``chunk`` rows (keyset by id, one short query each): for restore, which
        so never holds more than a page, however long the history."""
        after: str | None = None
        while True:
            query = (
                sa.select(messages.c.id, messages.c.shard, messages.c.record)
                .where(messages.c.status.not_in(sorted(FINISHED)))
                .order_by(messages.c.id)
                .limit(chunk)
            )
            if after is not None:
                query = query.where(messages.c.id > after)
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            if rows:
                yield [(row.shard, msgspec.json.decode(row.record, type=MessageRecord)) for row in rows]
                after = rows[-1].id
            if len(rows) < chunk:
                return

    async def message_counts(self) -> list[tuple[str, str, str, str, str, int]]:
        """Stored messages per (shard, account, device, campaign, status), counted by the database."""
        columns = (messages.c.shard, messages.c.account, messages.c.device, messages.c.campaign, messages.c.status)
        query = sa.select(*columns, sa.func.count()).group_by(*columns)
        async with self.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in (await conn.execute(query)).all()]

    async def lag_ms(self) -> list[int]:
        """Per stored message, how long after its last status change its row was written."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(messages.c.stored_at - messages.c.updated))).scalars().all()
        return [int(x) for x in rows]

    async def count_messages(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(messages))).scalar() or 0)

    async def delete_older_than(self, cutoff_ms: int, batch: int = 1_000, budget_s: float = 1.0) -> tuple[int, bool]:
        """Delete finished messages last changed before ``cutoff_ms``, ``batch`` rows per
        transaction, so a large backlog never holds one long lock; batch after batch
        until one comes back short, or ``budget_s`` has passed (one batch at least).
        Returns how many were deleted and whether that was all of them."""
        deleted = 0
        started = time.monotonic()
        while True:
            chosen = (
                sa.select(messages.c.id)
                .where(messages.c.updated < cutoff_ms, messages.c.status.in_(sorted(FINISHED)))
                .limit(batch)
                .scalar_subquery()
            )
            async with self.engine.begin() as conn:
                result = await conn.execute(sa.delete(messages).where(messages.c.id.in_(chosen)))
            deleted += result.rowcount
            if result.rowcount < batch:
                return deleted, True
            if time.monotonic() - started >= budget_s:
                return deleted, False

    # Directory -----------------------------------------------------------------------

    async def mirror_shard(
        self,
        shard: str,
        account: dict[str, str] | None,
        account_id: str | None,
        device_hashes: dict[str, dict[str, str]],
        key_records: dict[str, str],
    ) -> None:
        """Make the store's copy of one shard's account, devices and API keys match Redis."""
        async with self.engine.begin() as conn:
            if account is not None and account_id is not None:
                await conn.execute(
                    self._upsert(accounts, ["id"], {"fields"}),
                    [{"id": account_id, "fields": msgspec.json.encode(account).decode()}],
                )
            await self._replace(
                conn,
                devices,
                devices.c.shard == shard,
                [
                    {"id": d, "shard": shard, "fields": msgspec.json.encode(f).decode()}
                    for d, f in device_hashes.items()
                ],
            )
            if account_id is not None:
                await self._replace(
                    conn,
                    api_keys,
                    api_keys.c.account == account_id,
                    [{"id": k, "account": account_id, "record": r} for k, r in key_records.items()],
                )

    async def _replace(self, conn: Any, table: sa.Table, owner: Any, rows: list[dict[str, str]]) -> None:
        """Make the owner's rows of ``table`` exactly ``rows`` (by id)."""
        gone = sa.delete(table).where(owner)
        if rows:
            gone = gone.where(table.c.id.not_in([row["id"] for row in rows]))
        await conn.execute(gone)
        if rows:
            await conn.execute(self._upsert(table, ["id"], set(rows[0]) - {"id"}), rows)

    async def directory(
        self,
    ) -> tuple[dict[str, dict[str, str]], list[tuple[str, dict[str, str]]], list[tuple[str, str]]]:
        """Accounts (id -> hash), devices ((shard, hash)), API keys ((account, record JSON))."""
        async with self.engine.connect() as conn:
            found_accounts = {
                r.id: msgspec.json.decode(r.fields)
                for r in await conn.execute(sa.select(accounts.c.id, accounts.c.fields))
            }
            found_devices = [
                (r.shard, msgspec.json.decode(r.fields))
                for r in await conn.execute(sa.select(devices.c.shard, devices.c.fields))
            ]
            found_keys = [
                (r.account, r.record) for r in await conn.execute(sa.select(api_keys.c.account, api_keys.c.record))
            ]
        return found_accounts, found_devices, found_keys


def _add_missing_columns(conn: sa.Connection) -> None:
    """Bring an older ``messages`` table to this version: the columns it lacks (those of
    version 2 empty until :meth:`HistoryStore._fill_counterparts` fills them) and their
    indexes."""
    present = {column["name"] for column in sa.inspect(conn).get_columns("messages")}
    for name in (*ADDED_IN_2, *ADDED_IN_3):
        if name not in present:
            column = messages.c[name]
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE messages ADD COLUMN {ddl}"))
    for index in messages.indexes:
        index.create(conn, checkfirst=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: API workers read while the snapshotter writes; wait for a lock instead of failing.
    ``synchronous=FULL``: a commit is on disk when it returns (NORMAL in WAL mode waits
    for the next checkpoint), since Redis may forget a message as soon as it is stored."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
