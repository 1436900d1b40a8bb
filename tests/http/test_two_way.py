"""Two-way messaging over real HTTP: received SMS stored once however often the phone
retries, visible to their account only; STOP and START from a number change what may be
sent to it, for that account only; a platform pool phone's received SMS reaches the
account that last sent to that number through it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.e2e_server import ServerProcess, describe, expect, expect_error
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, TO, Phone, World

WHEN = "2026-12-05T12:00:00.123Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("connecfy-two-way"), settings={"CONNECFY_AUTH_BURST": "1000", **serve_redis}
    ).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


def receive(phone: Phone, text: str, sender: str = TO, ref: str | None = None) -> Any:
    body = {"from": sender, "message": text, "received_at": WHEN, "ref": ref or uuid.uuid4().hex}
    return phone.api.post(f"/api/devices/{phone.device_id}/inbound/", json=body)


def inbound(user: Any) -> list[dict[str, Any]]:
    return [m for m in expect(user.get("/api/sms/"), 200)["items"] if m["direction"] == "inbound"]


def test_a_received_sms_is_stored_once_under_ten_concurrent_retries_and_seen_by_its_account_only(
    world: World,
) -> None:
    owner = world.signup()
    phone = world.pair(owner, phone_number="+15550001111")
    stranger = world.signup()
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: receive(phone, "Is my order ready?", ref="same-ref"), range(10)))
    assert sorted(r.status_code for r in replies) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in replies}) == 1
    assert all(r.json()["direction"] == "inbound" for r in replies)
    [message] = inbound(owner)
    assert (message["from"], message["to"], message["message"], message["status"]) == (
        TO,
        "+15550001111",
        "Is my order ready?",
        "received",
    )
    assert (message["received_at"], message["device_id"], message["expires_at"]) == (WHEN, phone.device_id, None)
    stats = expect(owner.get("/api/stats/"), 200)
    assert (stats["received"], stats["total_messages"]) == (1, 0)
    assert inbound(stranger) == []
    expect_error(stranger.get(f"/api/sms/{message['id']}/"), 404)
    # Bad input is a 400 naming the field, and stores nothing.
    for bad, field in (
        ({"from": "not a sender!"}, "from"),
        ({"ref": "a/b"}, None),
        ({"received_at": "soon"}, "received_at"),
    ):
        body = {"from": TO, "message": "x", "received_at": WHEN, "ref": "fine", **bad}
        refused = expect_error(phone.api.post(f"/api/devices/{phone.device_id}/inbound/", json=body), 400)
        assert field is None or refused.get("field") == field, refused
    assert len(inbound(owner)) == 1


def test_stop_refuses_sends_to_that_number_and_start_allows_them_again_for_that_account_only(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    other = world.signup()
    other_phone = world.pair(other)
    expect(receive(phone, "STOP"), 201)
    assert expect(owner.get("/api/stats/"), 200)["opted_out"] == 1
    refused = expect_error(
        owner.post("/api/sms/send/", json={"to": TO, "message": "x", "device_id": phone.device_id}), 400
    )
    assert (refused["code"], refused["field"]) == ("recipient_opted_out", "to")
    key = world.api_key(owner)["api_key"]
    batch = [{"to": "+15557654321", "message": "fine"}, {"to": TO, "message": "not this one"}]
    response = world.batch(key, batch)
    assert response.status_code == 400, describe(response)
    refused = response.json()
    assert refused["code"] == "recipient_opted_out"
    assert [(e["index"], e["field"]) for e in refused["errors"]] == [(1, "to")]
    assert expect(owner.get("/api/stats/"), 200)["total_messages"] == 0  # nothing queued
    listed = expect(owner.get("/api/suppressions/"), 200)["items"]
    assert [(s["phone"], s["reason"]) for s in listed] == [(TO, "replied STOP")]
    # The other account still sends to that number.
    expect(other.post("/api/sms/send/", json={"to": TO, "message": "hi", "device_id": other_phone.device_id}), 202)
    expect(receive(phone, "Start"), 201)
    expect(owner.post("/api/sms/send/", json={"to": TO, "message": "welcome back", "device_id": phone.device_id}), 202)
    assert expect(owner.get("/api/suppressions/"), 200)["items"] == []


def test_a_pool_phones_received_sms_reaches_the_account_that_last_sent_to_that_number(world: World) -> None:
    operator = world.api()
    expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    pool_phone = world.pair(operator, "pool phone", pool=True)
    number = "+15553334444"
    senders = [world.signup("api_only"), world.signup("api_only")]
    for sender in senders:
        sent = expect(sender.post("/api/sms/send/", json={"to": number, "message": "your code: 1234"}), 202)
        assert [t["id"] for t in pool_phone.claim()] == [sent["id"]]
        expect(pool_phone.report(sent["id"], "sent"), 200)
    reply = expect(receive(pool_phone, "Thanks!", sender=number), 201)
    assert [m["id"] for m in inbound(senders[1])] == [reply["id"]]
    assert inbound(senders[0]) == []
    # From a number nobody sent to: the operator's.
    stray = expect(receive(pool_phone, "wrong number?", sender="+15556667777"), 201)
    assert stray["id"] in [m["id"] for m in inbound(operator)]


def test_history_filters_by_direction_and_by_conversation_with_the_cursor_and_names_a_bad_field(
    world: World,
) -> None:
    owner = world.signup()
    one = world.pair(owner, "front desk", phone_number="+15550001111")
    two = world.pair(owner, "back office", phone_number="+15550002222")
    ann, bob = "+15553330001", "+15553330002"
    got = [expect(receive(one, "Do you deliver?", sender=ann), 201)["id"]]
    got.append(
        expect(owner.post("/api/sms/send/", json={"to": ann, "message": "We do.", "device_id": one.device_id}), 202)[
            "id"
        ]
    )
    got.append(
        expect(owner.post("/api/sms/send/", json={"to": bob, "message": "Ready.", "device_id": two.device_id}), 202)[
            "id"
        ]
    )
    got.append(expect(receive(two, "Great, thanks", sender=ann), 201)["id"])
    ann_in_1, to_ann, to_bob, ann_in_2 = got

    def listed(**params: Any) -> list[str]:
        seen, cursor = [], None
        while True:
            page = expect(owner.get("/api/sms/", params={**params, **({"cursor": cursor} if cursor else {})}), 200)
            seen += [m["id"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    for limit in (1, 50):
        assert listed(limit=limit, direction="inbound") == [ann_in_2, ann_in_1]
        assert listed(limit=limit, direction="outbound") == [to_bob, to_ann]
        assert listed(limit=limit, phone=ann) == [ann_in_2, to_ann, ann_in_1]
        assert listed(limit=limit, phone=ann, direction="outbound") == [to_ann]
        assert listed(limit=limit, phone=ann, device_id=two.device_id) == [ann_in_2]
        assert listed(limit=limit, phone=ann, status="received") == [ann_in_2, ann_in_1]
        assert listed(limit=limit, phone=bob, status="received") == []
    # When they were made (since, until: both included), alone and with the other filters.
    made = {m["id"]: m["created_at"] for m in expect(owner.get("/api/sms/"), 200)["items"]}
    middle = made[to_bob]
    for limit in (1, 50):
        assert listed(limit=limit, since=middle) == [i for i in got[::-1] if made[i] >= middle]
        assert listed(limit=limit, until=middle) == [i for i in got[::-1] if made[i] <= middle]
        assert listed(limit=limit, since=made[to_ann], until=middle) == [
            i for i in got[::-1] if made[to_ann] <= made[i] <= middle
        ]
        assert listed(limit=limit, since=made[ann_in_1], phone=ann) == [ann_in_2, to_ann, ann_in_1]
        assert listed(limit=limit, until="2000-01-01T00:00:00+01:00") == []
        assert listed(limit=limit, since="2099-01-01T00:00:00Z") == []
    [message] = expect(owner.get("/api/sms/", params={"phone": ann, "direction": "outbound"}), 200)["items"]
    assert (message["to"], message["direction"], message["from"]) == (ann, "outbound", None)
    # The + of a number written plainly into the query string (a space once decoded) is refused.
    for query, field in (
        ("direction=sideways", "direction"),
        ("direction=", "direction"),
        ("phone=+15553330001", "phone"),
        ("phone=15553330001", "phone"),
        ("phone=%2B1555", "phone"),
        ("phone=BANK", "phone"),
        ("phone=%2B15553330001&status=bogus", "status"),
        ("since=yesterday", "since"),
        ("since=2026-12-05", "since"),
        ("until=2026-02-30T00:00:00Z", "until"),
        ("until=2026-12-05T10:00:00+01:00", "until"),  # the + read as a space
    ):
        refused = expect_error(owner.get(f"/api/sms/?{query}"), 400)
        assert refused["field"] == field, (query, refused)
        assert field in refused["detail"], refused
    # A stranger's conversation with the same number is empty.
    assert expect(world.signup().get("/api/sms/", params={"phone": ann}), 200)["items"] == []
