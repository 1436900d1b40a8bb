"""The Python SDK (``sdk/python``, import ``connecfy_client``) against a real ``connecfy serve``.

- sends and batches with every field the API takes, read back through the history pager;
- a send whose answer is lost is retried with the same ``Idempotency-Key``: one message,
  the first id (a loopback proxy swallows the first answer);
- a 429 is waited out for its ``Retry-After``, or raised as ``RateLimited`` when no
  attempt is left;
- typed errors for 400, 401, 404, 409 and no answer at all;
- webhook signatures made by the server's own delivery are accepted; a changed body, a
  changed or old timestamp and a wrong secret are refused; after a rotation both
  secrets work.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from connecfy_client import (
    AsyncClient,
    AsyncSessionClient,
    AuthenticationFailed,
    Client,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    Outgoing,
    RateLimited,
    Retries,
    SessionClient,
    e2e,
)
from connecfy_client.webhooks import WebhookVerificationError, verify

from tests.support.dropping_proxy import DroppingProxy
from tests.support.e2e_server import Api, ServerProcess, expect, free_port
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PASSWORD, TO, World
from tests.support.webhook_receiver import Receiver

SETTINGS = {
    "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
    "CONNECFY_WEBHOOK_POLL_MS": "50",
    "CONNECFY_AUTH_BURST": "1000",
}
EXAMPLE = Path(__file__).resolve().parents[2] / "sdk" / "python" / "examples" / "send.py"
FAST = Retries(backoff=0.05, max_backoff=0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = ServerProcess(tmp_path_factory.mktemp("sdk"), settings=SETTINGS).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()[-3000:]


@pytest.fixture
def world(server: ServerProcess) -> Any:
    w = World(server)
    yield w
    w.close()


class Sender:
    """A self-managed account with an online phone, an API key and a logged-in session."""

    def __init__(self, world: World) -> None:
        self.user = world.signup()
        self.phone = world.pair(self.user)
        self.key = world.api_key(self.user)["api_key"]
        self.session = SessionClient(world.server.base_url)
        self.session.login(self.user.account["email"], PASSWORD)

    def texts(self) -> list[str]:
        return [m.message for m in self.session.messages(page_size=500)]


@pytest.fixture
def sender(world: World) -> Any:
    made = Sender(world)
    yield made
    made.session.close()


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def test_send_and_batch_with_every_field(server: ServerProcess, sender: Sender) -> None:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    with Client(sender.key, server.base_url) as client:
        plain = client.send(TO, "Hello")
        full = client.send(
            TO,
            "Later, from SIM 2",
            device_id=sender.phone.device_id,
            send_at=due,
            valid_for=timedelta(minutes=10),
            sim_slot=2,
            priority="high",
            idempotency_key="order-1001",
        )
        batch = client.send_batch(
            [
                Outgoing(TO, "One"),
                {"to": "+15557654321", "message": "Two", "device_id": sender.phone.device_id, "priority": "high"},
                Outgoing(TO, "Three", send_at=due.isoformat(), valid_for=60),
            ]
        )
    assert (plain.status, plain.replayed) == ("queued", False) and len(plain.idempotency_key) == 32
    assert (full.status, full.idempotency_key) == ("scheduled", "order-1001")
    assert batch.count == 3 and [m.status for m in batch.messages] == ["queued", "queued", "scheduled"]
    assert len({plain.id, full.id, *(m.id for m in batch.messages)}) == 5

    stored = sender.session.message(full.id)
    assert (stored.device_id, stored.sim_slot, stored.priority) == (sender.phone.device_id, 2, "high")
    assert stored.send_at is not None and datetime.fromisoformat(stored.send_at) == due
    assert stored.expires_at is not None
    assert datetime.fromisoformat(stored.expires_at) == due + timedelta(minutes=10)
    assert [t.status for t in stored.timeline] == ["scheduled"]
    two = sender.session.message(batch.messages[1].id)
    assert (two.to, two.device_id, two.priority) == ("+15557654321", sender.phone.device_id, "high")


def test_a_passphrase_encrypts_end_to_end_and_a_retry_sends_the_same_envelope(
    server: ServerProcess, sender: Sender
) -> None:
    passphrase = "shared with my phones ✓"
    proxy = DroppingProxy(server.port, drop=1)
    try:
        with Client(sender.key, proxy.url, retries=FAST) as client:
            one = client.send(TO, "Ваш код: 1234", passphrase=passphrase)  # its answer is lost once
        assert one.replayed and proxy.connections == 2
    finally:
        proxy.close()
    with Client(sender.key, server.base_url) as client:
        batch = client.send_batch([Outgoing(TO, "batch secret 😀", passphrase=passphrase), Outgoing(TO, "plain")])
    stored = [sender.session.message(i) for i in (one.id, *(m.id for m in batch.messages))]
    assert [m.encrypted for m in stored] == [True, True, False]
    assert [e2e.decrypt(m.message, passphrase) for m in stored[:2]] == ["Ваш код: 1234", "batch secret 😀"]
    assert stored[2].message == "plain"
    assert sorted(sender.texts()).count("plain") == 1 and len(sender.texts()) == 3  # the retry queued nothing more
    with pytest.raises(e2e.DecryptionFailed):
        e2e.decrypt(stored[0].message, "another passphrase")


def test_the_history_pager_walks_every_page(server: ServerProcess, sender: Sender) -> None:
    with Client(sender.key, server.base_url) as client:
        ids = [client.send(TO, f"page test {i}").id for i in range(5)]
    pages = list(sender.session.pages(page_size=2))
    assert [len(p.items) for p in pages] == [2, 2, 1] and pages[-1].next_cursor is None
    assert [m.id for p in pages for m in p.items] == ids[::-1]  # newest first
    assert [m.id for m in sender.session.messages(page_size=3, status="queued")] == ids[::-1]
    assert list(sender.session.messages(status="sent")) == []
    # When they were made: an aware datetime or an ISO-8601 string, both ends included.
    every = [(m.id, m.created_at) for m in sender.session.messages()]  # newest first
    middle = dict(every)[ids[2]]
    since = [m.id for m in sender.session.messages(page_size=2, since=middle)]
    assert since == [i for i, made in every if made >= middle] and ids[2] in since
    until = datetime.fromisoformat(middle)
    assert [m.id for m in sender.session.messages(until=until)] == [i for i, made in every if made <= middle]
    with pytest.raises(ValueError, match="aware datetime"):
        list(sender.session.messages(until=until.replace(tzinfo=None)))

    async def walk() -> list[str]:
        async with AsyncSessionClient(server.base_url) as session:
            await session.login(sender.user.account["email"], PASSWORD)
            return [m.id async for m in session.messages(page_size=2)]

    assert asyncio.run(walk()) == ids[::-1]


def test_a_lost_answer_is_retried_with_the_same_key_and_queues_once(server: ServerProcess, sender: Sender) -> None:
    proxy = DroppingProxy(server.port, drop=1)
    try:
        text = unique("lost answer")
        with Client(sender.key, proxy.url, retries=FAST) as client:
            queued = client.send(TO, text)
        assert proxy.swallowed[0].startswith(b"HTTP/1.1 202"), proxy.swallowed  # the server had queued it
        assert queued.replayed and proxy.connections == 2
        assert sender.texts().count(text) == 1
        assert sender.session.message(queued.id).message == text  # the first attempt's id

        proxy.drop = 2  # the batch's first answer is lost too, through the async client
        batch_texts = [unique("lost batch"), unique("lost batch")]

        async def batch() -> Any:
            async with AsyncClient(sender.key, proxy.url, retries=FAST) as client:
                return await client.send_batch([Outgoing(TO, t) for t in batch_texts])

        sent = asyncio.run(batch())
        assert sent.replayed and sent.count == 2 and proxy.connections == 4
        texts = sender.texts()
        assert [texts.count(t) for t in batch_texts] == [1, 1]
    finally:
        proxy.close()


def test_a_rate_limit_is_waited_out_for_its_retry_after(world: World, server: ServerProcess, sender: Sender) -> None:
    operator = world.api()
    expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    account = sender.user.account["id"]
    limits = {"sends_per_second": 1, "sends_burst": 1}
    expect(operator.patch(f"/api/operator/accounts/{account}/limits/", json=limits), 200)

    answers: list[tuple[int, str | None]] = []

    def note(response: httpx.Response) -> None:
        answers.append((response.status_code, response.headers.get("retry-after")))

    http = httpx.Client(base_url=server.base_url, event_hooks={"response": [note]})
    with Client(sender.key, http_client=http) as client:
        client.send(TO, "first")
        started = time.monotonic()
        second = client.send(TO, "second")
        waited = time.monotonic() - started
    http.close()
    assert [status for status, _ in answers] == [202, 429, 202], answers
    retry_after = float(answers[1][1] or 0)
    assert retry_after >= 1 and waited >= retry_after - 0.05, (answers, waited)
    assert second.status == "queued" and sender.texts().count("second") == 1

    with (
        Client(sender.key, server.base_url, retries=Retries(max_attempts=1)) as client,
        pytest.raises(RateLimited) as limited,
    ):
        client.send(TO, "third")
    error = limited.value
    assert (error.status_code, error.code, error.attempts) == (429, "rate_limited", 1)
    assert error.retry_after is not None and 0 < error.retry_after <= 1
    # A Retry-After longer than the client will wait is raised at once.
    with (
        Client(sender.key, server.base_url, retries=Retries(max_retry_after=0.01)) as client,
        pytest.raises(RateLimited),
    ):
        client.send(TO, "fourth")
    assert "third" not in sender.texts() and "fourth" not in sender.texts()


def test_typed_errors(server: ServerProcess, sender: Sender) -> None:
    with pytest.raises(AuthenticationFailed) as wrong_key, Client("not-a-key", server.base_url) as client:
        client.send(TO, "Hello")
    assert (wrong_key.value.status_code, wrong_key.value.code, wrong_key.value.attempts) == (
        401,
        "not_authenticated",
        1,
    )

    with Client(sender.key, server.base_url) as client:
        with pytest.raises(InvalidRequest) as bad_number:
            client.send("555-1234", "Hello")
        assert (bad_number.value.status_code, bad_number.value.field) == (400, "to")
        assert bad_number.value.detail

        with pytest.raises(InvalidRequest) as bad_items:
            client.send_batch([Outgoing(TO, "fine"), Outgoing(TO, ""), Outgoing(TO, "x", sim_slot=9)])
        assert bad_items.value.status_code == 400
        assert [(e.index, e.field) for e in bad_items.value.errors] == [(1, "message"), (2, "sim_slot")]

        with pytest.raises(NotFound) as no_device:
            client.send(TO, "Hello", device_id="nosuchdevice1")
        assert (no_device.value.status_code, no_device.value.code) == (404, "device_not_found")

        client.send(TO, "first body", idempotency_key="reused-key")
        with pytest.raises(Conflict) as reused:
            client.send(TO, "another body", idempotency_key="reused-key")
        assert (reused.value.status_code, reused.value.code) == (409, "idempotency_key_reused")

    with pytest.raises(ValueError, match="time zone"), Client(sender.key, server.base_url) as client:
        client.send(TO, "naive", send_at=datetime(2030, 1, 1, 9, 0))

    with pytest.raises(AuthenticationFailed) as wrong_password, SessionClient(server.base_url) as session:
        session.login(sender.user.account["email"], "not the password")
    assert wrong_password.value.status_code == 401

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed) as nobody, Client(sender.key, closed, retries=FAST) as client:
        client.send(TO, "Hello")
    assert nobody.value.status_code is None and nobody.value.attempts == FAST.max_attempts


def wait_for_event(receiver: Receiver, message_id: str) -> Any:
    def arrived() -> list[Any]:
        return [r for r in receiver.delivered() if r.event["data"].get("message_id") == message_id]

    receiver.wait_for(arrived, timeout=20)
    return arrived()[0]


def test_webhook_signatures(server: ServerProcess, sender: Sender) -> None:
    receiver = Receiver()
    try:
        run_webhook_checks(server, sender.user, sender.key, receiver)
    finally:
        receiver.close()


def run_webhook_checks(server: ServerProcess, user: Api, key: str, receiver: Receiver) -> None:
    hook = expect(user.post("/api/webhooks/", json={"url": receiver.url, "events": ["message.queued"]}), 201)
    secret = hook["secret"]
    with Client(key, server.base_url) as client:
        first = client.send(TO, "signed")
    delivery = wait_for_event(receiver, first.id)

    event = verify(delivery.body, delivery.headers, secret)
    assert (event.type, event.data.message_id, event.data.status) == ("message.queued", first.id, "queued")
    assert event.id == delivery.headers["Connecfy-Event-Id"]
    lowered = {name.lower(): value for name, value in delivery.headers.items()}
    assert verify(delivery.body.decode(), lowered, secret) == event
    assert verify(delivery.body, delivery.headers, secret.encode()) == event

    header = delivery.headers["Connecfy-Signature"]
    stamp = int(header.split(",")[0].removeprefix("t="))
    refused: dict[str, tuple[bytes, dict[str, str], str, float | None]] = {
        "changed body": (delivery.body.replace(b"queued", b"failed"), delivery.headers, secret, None),
        "changed timestamp": (
            delivery.body,
            {**delivery.headers, "Connecfy-Signature": header.replace(f"t={stamp}", f"t={stamp + 1}")},
            secret,
            None,
        ),
        "wrong secret": (delivery.body, delivery.headers, secret + "x", None),
        "no signature": (delivery.body, {"Content-Type": "application/json"}, secret, None),
        "old": (delivery.body, delivery.headers, secret, stamp + 301.0),
        "from the future": (delivery.body, delivery.headers, secret, stamp - 301.0),
    }
    for case, (body, headers, with_secret, now) in refused.items():
        with pytest.raises(WebhookVerificationError):
            verify(body, headers, with_secret, now=now)
            pytest.fail(f"{case} was accepted")
    assert verify(delivery.body, delivery.headers, secret, now=stamp + 299.0) == event
    assert verify(delivery.body, delivery.headers, secret, now=stamp + 30.0, tolerance=60) == event

    rotated = expect(user.post(f"/api/webhooks/{hook['id']}/rotate-secret/"), 200)
    with Client(key, server.base_url) as client:
        second = client.send(TO, "signed after a rotation")
    after = wait_for_event(receiver, second.id)
    assert after.headers["Connecfy-Signature"].count("v1=") == 2
    assert verify(after.body, after.headers, rotated["secret"]).data.message_id == second.id
    assert verify(after.body, after.headers, secret).data.message_id == second.id  # the previous secret, for a day
    assert verify(after.body, after.headers, ["whsec_unknown", rotated["secret"]]).id
    with pytest.raises(WebhookVerificationError):
        verify(after.body, after.headers, "whsec_unknown")
    with pytest.raises(WebhookVerificationError):  # the new secret never signed the first delivery
        verify(delivery.body, delivery.headers, rotated["secret"])


def test_the_example_runs_as_written(server: ServerProcess, sender: Sender) -> None:
    env = {**os.environ, "CONNECFY_URL": server.base_url, "CONNECFY_API_KEY": sender.key}
    for run in range(2):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "+15557654321"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert [line.split(" ")[0] for line in lines] == ["queued", "batch:", "batch:"], done.stdout
        assert ("(a repeat)" in done.stdout) == (run == 1), done.stdout
    texts = sender.texts()
    # Two single sends (a new key each run), one batch (its key repeats on the second run).
    assert texts.count("Hello from Connecfy") == 2
    assert texts.count("Your order has shipped") == 1
    assert texts.count("Reminder: your appointment is tomorrow") == 1
