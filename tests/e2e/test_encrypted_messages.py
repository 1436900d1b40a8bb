"""End-to-end encrypted messages against a real ``connecfy serve`` (its private Redis)
with its history in PostgreSQL, over real HTTP.

- The contract: each send endpoint takes ``"encrypted": true`` with an envelope from a
  self-managed account, charges the most segments its plaintext's size allows, and shows
  ``"encrypted": true`` in the message's views and its phone's task; a malformed envelope
  is a 400 naming ``message`` (in a batch an item error, nothing queued), an API-only
  account's is a 400 naming ``encrypted``.
- The server never holds the text: encrypted messages sent through all three endpoints
  are claimed, decrypted by the phone's passphrase and reported sent, the history is
  snapshotted into PostgreSQL, and then every key and value of Redis, every file of the
  data directory (the append-only files, the log) and every row of PostgreSQL is searched
  for each text: none has it, while the envelopes are there.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
from connecfy_client import e2e

from broker.envelopes import most_segments
from tests.support.e2e_server import ServerProcess, expect, expect_error
from tests.support.http_world import TO, Phone, World
from tests.support.redis_dump import redis_bytes

PASSPHRASE = "family passphrase 🔑 Ölberg"
SETTINGS = {
    "CONNECFY_SNAPSHOT_INTERVAL_MS": "200",
    "CONNECFY_SENDS_PER_SECOND": "10000",
    "CONNECFY_SENDS_BURST": "10000",
    "CONNECFY_TASKS_PER_MINUTE": "100000",
    "CONNECFY_TASKS_BURST": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "100000",
    "CONNECFY_AUTH_BURST": "1000",
}


def _database(postgres_url: str) -> str:
    """A database of its own on the session's PostgreSQL: the URL ``connecfy serve`` takes."""
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")

    async def create() -> None:
        conn = await asyncpg.connect(plain)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return plain.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def database_url(postgres_server: Any) -> str:
    return _database(postgres_server.url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("connecfy-e2e"), settings={**SETTINGS, "CONNECFY_DATABASE_URL": database_url}
    ).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


def batch_error(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["status_code"] == 400 and body["detail"], body
    return body


def tasks_of(phone: Phone) -> list[dict[str, Any]]:
    found = expect(phone.tasks(limit=100), 200)
    assert isinstance(found, list)
    return found


# The contract ------------------------------------------------------------------------


def test_each_send_endpoint_takes_an_envelope_and_shows_it_encrypted(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    text = "Ж" * 100 + " ✓"  # 203 bytes of UTF-8: at most 4 segments; really 2
    sent = {
        "external": expect(
            world.external({"api_key": key, "to": TO, "message": e2e.encrypt(text, PASSPHRASE), "encrypted": True}),
            202,
        )["id"],
        "dashboard": expect(
            owner.post(
                "/api/sms/send/",
                json={
                    "to": TO,
                    "message": e2e.encrypt(text, PASSPHRASE),
                    "device_id": phone.device_id,
                    "encrypted": True,
                },
            ),
            202,
        )["id"],
    }
    batch = expect(
        world.batch(
            key,
            [
                {"to": TO, "message": e2e.encrypt(text, PASSPHRASE), "encrypted": True, "device_id": phone.device_id},
                {"to": TO, "message": "plain text"},
            ],
        ),
        202,
    )
    sent["batch"], plain_id = (m["id"] for m in batch["messages"])
    for where, message_id in sent.items():
        shown = expect(owner.get(f"/api/sms/{message_id}/"), 200)
        assert shown["encrypted"] is True, where
        assert shown["message"].startswith("v1:") and text not in shown["message"], where
        assert e2e.decrypt(shown["message"], PASSPHRASE) == text
        assert shown["segments"] == most_segments(len(text.encode())) == 4, where
    plain = expect(owner.get(f"/api/sms/{plain_id}/"), 200)
    assert plain["encrypted"] is False and plain["message"] == "plain text" and plain["segments"] == 1
    listed = {m["id"]: m["encrypted"] for m in expect(owner.get("/api/sms/"), 200)["items"]}
    assert listed == {**dict.fromkeys(sent.values(), True), plain_id: False}
    # The phone is told which tasks to decrypt; a plain task says nothing new.
    tasks = {t["id"]: t for t in tasks_of(phone)}
    assert set(tasks) == {*sent.values(), plain_id}
    assert all(tasks[i]["encrypted"] is True for i in sent.values())
    assert "encrypted" not in tasks[plain_id]
    assert e2e.decrypt(tasks[sent["external"]]["message"], PASSPHRASE) == text


def test_the_phone_reports_the_real_segment_count_of_an_encrypted_message(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    text = "Ж" * 100  # 200 bytes: charged at most 4 segments; really 2
    sealed = expect(
        world.external({"api_key": key, "to": TO, "message": e2e.encrypt(text, PASSPHRASE), "encrypted": True}), 202
    )["id"]
    plain = expect(world.external({"api_key": key, "to": TO, "message": text}), 202)["id"]
    assert expect(owner.get(f"/api/sms/{sealed}/"), 200)["segments"] == 4
    assert {t["id"] for t in tasks_of(phone)} == {sealed, plain}
    # A count with failed, or out of range, changes nothing / is refused.
    expect_error(phone.report(sealed, "sent", segments=0), 400)
    expect_error(phone.report(sealed, "sent", segments=256), 400)
    assert expect(phone.report(sealed, "sent", segments=2), 200)["status"] == "sent"
    assert expect(owner.get(f"/api/sms/{sealed}/"), 200)["segments"] == 2
    # The server counted the plain one itself: a phone's count does not replace it.
    assert expect(phone.report(plain, "sent", segments=7), 200)["status"] == "sent"
    assert expect(owner.get(f"/api/sms/{plain}/"), 200)["segments"] == 2


def test_a_malformed_envelope_is_refused_naming_message_and_nothing_is_queued(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    good = e2e.encrypt("hello", PASSPHRASE)
    for bad in ("hello", "v1:not base64!", "v1:" + good[3:40], "v2" + good[2:], good + "AAAA" * 3000):
        body = expect_error(world.external({"api_key": key, "to": TO, "message": bad, "encrypted": True}), 400)
        assert body["field"] == "message", body
        assert "envelope" in body["detail"] or "base64" in body["detail"] or "ciphertext" in body["detail"], body
    body = expect_error(
        owner.post("/api/sms/send/", json={"to": TO, "message": "hi", "device_id": phone.device_id, "encrypted": True}),
        400,
    )
    assert body["field"] == "message"
    item = {"to": TO, "message": good, "encrypted": True}
    body = batch_error(world.batch(key, [item, {**item, "message": "plain"}, item, {**item, "message": "v1:x"}]))
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "message"), (3, "message")], body
    assert "nothing was queued" in body["detail"]
    assert expect(owner.get("/api/stats/"), 200)["total_messages"] == 0
    assert tasks_of(phone) == []


def test_an_api_only_account_cannot_encrypt(world: World) -> None:
    sender = world.signup("api_only")
    key = world.api_key(sender)["api_key"]
    envelope = e2e.encrypt("hello", PASSPHRASE)
    body = expect_error(world.external({"api_key": key, "to": TO, "message": envelope, "encrypted": True}), 400)
    assert body["field"] == "encrypted" and "API-only" in body["detail"], body
    body = expect_error(sender.post("/api/sms/send/", json={"to": TO, "message": envelope, "encrypted": True}), 400)
    assert body["field"] == "encrypted", body
    body = batch_error(
        world.batch(key, [{"to": TO, "message": "plain"}, {"to": TO, "message": envelope, "encrypted": True}])
    )
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "encrypted")], body
    assert expect(sender.get("/api/stats/"), 200)["total_messages"] == 0


def test_an_idempotent_repeat_of_an_encrypted_send_is_the_same_message(world: World) -> None:
    owner = world.signup()
    world.pair(owner)
    key = world.api_key(owner)["api_key"]
    body = {"api_key": key, "to": TO, "message": e2e.encrypt("once", PASSPHRASE), "encrypted": True}
    first = expect(world.external(body, headers={"Idempotency-Key": "e2e-1"}), 202)
    assert expect(world.external(body, headers={"Idempotency-Key": "e2e-1"}), 202)["id"] == first["id"]
    # The same bytes sent as plain text are another request.
    expect_error(world.external({**body, "encrypted": False}, headers={"Idempotency-Key": "e2e-1"}), 409)


# The server never holds the text -------------------------------------------------------


async def _store_text(url: str, ids: list[str]) -> tuple[str, int]:
    """Every row of every table of the history store as text, and how many of ``ids`` it
    holds as sent."""
    conn = await asyncpg.connect(url)
    try:
        tables = [
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        assert "messages" in tables
        dump = []
        for table in tables:
            dump += [str(tuple(row.values())) for row in await conn.fetch(f'SELECT * FROM "{table}"')]
        rows = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent' AND id = ANY($1)", ids)
        return "\n".join(dump), int(rows)
    finally:
        await conn.close()


def test_the_server_never_holds_the_plaintext(world: World, server: ServerProcess, database_url: str) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    texts = [
        f"secret-{uuid.uuid4().hex} ascii marker",
        f"Tajne hasło {uuid.uuid4().hex[:8]}: zażółć gęślą jaźń",
        f"Пароль {uuid.uuid4().hex[:8]} 🔐 не говори никому",
        f"{uuid.uuid4().hex[:8]} 秘密のメッセージ 😀",
    ]

    def seal(text: str) -> str:
        return e2e.encrypt(text, PASSPHRASE)

    ids = [
        expect(world.external({"api_key": key, "to": TO, "message": seal(texts[0]), "encrypted": True}), 202)["id"],
        expect(
            owner.post(
                "/api/sms/send/",
                json={"to": TO, "message": seal(texts[1]), "device_id": phone.device_id, "encrypted": True},
            ),
            202,
        )["id"],
        *(
            m["id"]
            for m in expect(
                world.batch(key, [{"to": TO, "message": seal(t), "encrypted": True} for t in texts[2:]]), 202
            )["messages"]
        ),
    ]
    # The phone claims, decrypts with its passphrase and reports each sent.
    tasks = tasks_of(phone)
    assert sorted(t["id"] for t in tasks) == sorted(ids)
    decrypted = {t["id"]: e2e.decrypt(t["message"], PASSPHRASE) for t in tasks if t["encrypted"]}
    assert sorted(decrypted.values()) == sorted(texts)
    for message_id in ids:
        assert expect(phone.report(message_id, "sent"), 200)["status"] == "sent"
    # The snapshotter writes them to PostgreSQL.
    deadline = time.monotonic() + 30
    while True:
        dump, rows = asyncio.run(_store_text(database_url, ids))
        if rows >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows == len(ids), "the history store never got the sent messages"

    with redis.Redis(unix_socket_path=str(server.data_dir / "redis" / "redis.sock")) as client:
        held = redis_bytes(client)
    files = b"\n".join(p.read_bytes() for p in Path(server.data_dir).rglob("*") if p.is_file() and not p.is_socket())
    envelopes = [expect(owner.get(f"/api/sms/{i}/"), 200)["message"] for i in ids]
    for envelope in envelopes:  # the scans do see what the server holds (Redis's cjson writes "/" as "\/")
        assert envelope.replace("/", "\\/").encode() in held and envelope in dump
    for text in texts:
        words = {text, text.split()[0], text.split()[-1]}
        # As written, and as JSON with every non-ASCII character escaped.
        for needle in words | {json.dumps(w)[1:-1] for w in words}:
            assert needle.encode() not in held, f"Redis holds {needle!r}"
            assert needle not in dump, f"the history store holds {needle!r}"
            assert needle.encode() not in files, f"a file of the data directory holds {needle!r}"
