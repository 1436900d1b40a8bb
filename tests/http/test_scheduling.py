"""Scheduled sends over real HTTP (serve's private Redis, and a Redis Cluster): a message
with a ``send_at`` ahead answers 202 ``scheduled``, is not claimable before its time and
reaches a waiting phone within a second or so after it; cancelled while scheduled it
never goes out; ``valid_for`` sets ``expires_at``; a SIM slot reaches the phone's task;
bad times, expiries and SIMs are 400 naming the field, and a batch with one queues
nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.e2e_server import ServerProcess, describe, expect, expect_error
from tests.support.http_world import TO, World

SETTINGS = {
    "CONNECFY_AUTH_BURST": "1000",
    "CONNECFY_SENDS_BURST": "10000",
    "CONNECFY_TASKS_BURST": "10000",
    "CONNECFY_POOL_SKIP_SECONDS": "3",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_redis: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("connecfy-scheduling"), settings={**SETTINGS, **serve_redis}
    ).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()
        assert "Traceback" not in process.output(), process.output()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_scheduled_message_is_claimable_only_once_due_and_then_at_once(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    due = datetime.now(UTC) + timedelta(seconds=3)
    body = {"api_key": key, "to": TO, "message": "at three", "device_id": phone.device_id, "send_at": iso(due)}
    sent = expect(world.external(body), 202)
    assert sent["status"] == "scheduled"
    shown = expect(owner.get(f"/api/sms/{sent['id']}/"), 200)
    assert shown["status"] == "scheduled" and parse(shown["send_at"]) == due.replace(
        microsecond=due.microsecond // 1000 * 1000
    )
    assert phone.claim() == []  # not before its time
    response = phone.api.get(f"/api/devices/{phone.device_id}/tasks/", params={"wait": 20}, timeout=35)
    answered = datetime.now(UTC)
    assert [t["id"] for t in expect(response, 200)] == [sent["id"]], describe(response)
    assert due <= answered < due + timedelta(seconds=5)  # released and woken, not the wait's end
    timeline = [e["status"] for e in expect(owner.get(f"/api/sms/{sent['id']}/"), 200)["timeline"]]
    assert timeline == ["scheduled", "queued", "claimed"]


def test_a_message_cancelled_while_scheduled_never_goes_out(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    due = datetime.now(UTC) + timedelta(seconds=1)
    body = {"to": TO, "message": "never", "device_id": phone.device_id, "send_at": iso(due)}
    sent = expect(owner.post("/api/sms/send/", json=body), 202)
    assert sent["status"] == "scheduled" and sent["send_at"] is not None
    assert expect(owner.post(f"/api/sms/{sent['id']}/cancel/"), 200)["status"] == "cancelled"
    time.sleep(2.0)
    assert phone.claim() == []
    assert expect(owner.get(f"/api/sms/{sent['id']}/"), 200)["status"] == "cancelled"


def test_valid_for_sets_expires_at_and_a_sim_slot_reaches_the_task(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    body = {"to": TO, "message": "SIM 2, for a minute", "device_id": phone.device_id, "valid_for": 60, "sim_slot": 2}
    sent = expect(owner.post("/api/sms/send/", json=body), 202)
    assert sent["status"] == "queued"
    assert parse(sent["expires_at"]) - parse(sent["created_at"]) == timedelta(seconds=60)
    [task] = expect(phone.tasks(), 200)
    assert task == {"id": sent["id"], "to": TO, "message": "SIM 2, for a minute", "sim_slot": 2}
    assert expect(owner.get(f"/api/sms/{sent['id']}/"), 200)["sim_slot"] == 2


def test_a_sent_report_names_the_sim_that_sent_it_and_a_bad_slot_is_400(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    sent = expect(
        owner.post("/api/sms/send/", json={"to": TO, "message": "any SIM", "device_id": phone.device_id}), 202
    )
    expect(phone.tasks(), 200)
    assert expect(owner.get(f"/api/sms/{sent['id']}/"), 200)["sim_slot"] is None
    assert expect_error(phone.report(sent["id"], "sent", sim_slot=5), 400).get("field") == "sim_slot"
    assert expect(phone.report(sent["id"], "sent", sim_slot=2), 200)["status"] == "sent"
    assert expect(owner.get(f"/api/sms/{sent['id']}/"), 200)["sim_slot"] == 2


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"send_at": "next tuesday"}, "send_at"),
        ({"send_at": "2026-12-05T09:00:00"}, "send_at"),
        ({"send_at": iso(datetime.now(UTC) + timedelta(days=31))}, "send_at"),
        ({"valid_for": 10}, "valid_for"),
        ({"valid_for": 100_000}, "valid_for"),
        ({"sim_slot": 7}, "sim_slot"),
    ],
)
def test_a_bad_time_expiry_or_sim_is_a_400_naming_the_field(world: World, extra: dict[str, Any], field: str) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    body = {"to": TO, "message": "x", "device_id": phone.device_id, **extra}
    error = expect_error(owner.post("/api/sms/send/", json=body), 400)
    assert error.get("field") == field, error
    assert expect(owner.get("/api/sms/"), 200)["items"] == []


def test_a_batch_with_one_bad_item_queues_nothing_and_names_it(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    later = iso(datetime.now(UTC) + timedelta(minutes=5))
    messages = [
        {"to": TO, "message": "fine", "device_id": phone.device_id, "send_at": later},
        {"to": TO, "message": "pool with a SIM", "sim_slot": 1},
    ]
    response = world.batch(key, messages)
    assert response.status_code == 400, describe(response)
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(1, "sim_slot")]
    assert expect(owner.get("/api/sms/"), 200)["items"] == []
    reply = expect(world.batch(key, messages[:1]), 202)
    assert [m["status"] for m in reply["messages"]] == ["scheduled"]


def test_high_priority_is_claimed_first_and_shown(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    normal = expect(world.external({"api_key": key, "to": TO, "message": "news", "device_id": phone.device_id}), 202)
    urgent = expect(
        world.external(
            {"api_key": key, "to": TO, "message": "code 1234", "device_id": phone.device_id, "priority": "high"}
        ),
        202,
    )
    assert [t["id"] for t in expect(phone.tasks(limit=2), 200)] == [urgent["id"], normal["id"]]
    assert expect(owner.get(f"/api/sms/{urgent['id']}/"), 200)["priority"] == "high"
    assert expect(owner.get(f"/api/sms/{normal['id']}/"), 200)["priority"] == "normal"


@pytest.mark.parametrize("priority", ["urgent", "HIGH", 2, None])
def test_an_unknown_priority_is_a_400_naming_it_and_a_batch_item_too(world: World, priority: Any) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    key = world.api_key(owner)["api_key"]
    body = {"to": TO, "message": "x", "device_id": phone.device_id, "priority": priority}
    if priority is None:
        body["priority"] = "low"
    error = expect_error(owner.post("/api/sms/send/", json=body), 400)
    assert error.get("field") == "priority" or "priority" in error.get("detail", ""), error
    response = world.batch(key, [{"to": TO, "message": "fine", "device_id": phone.device_id}, body])
    assert response.status_code == 400, describe(response)
    assert expect(owner.get("/api/sms/"), 200)["items"] == []


def test_a_send_window_holds_new_messages_back_and_null_lifts_it(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    now = datetime.now(UTC)
    # A one-minute window that opened two hours ago (UTC): closed now, whatever the time.
    start = (now - timedelta(hours=2)).strftime("%H:%M")
    end = (now - timedelta(hours=2) + timedelta(minutes=1)).strftime("%H:%M")
    window = {"start": start, "end": end, "timezone": "UTC"}
    shown = expect(owner.patch(f"/api/devices/{phone.device_id}/", json={"send_window": window}), 200)
    assert shown["send_window"] == window
    sent = expect(owner.post("/api/sms/send/", json={"to": TO, "message": "held", "device_id": phone.device_id}), 202)
    assert expect(phone.tasks(), 200) == []
    # Another change leaves the window as it is.
    expect(owner.patch(f"/api/devices/{phone.device_id}/", json={"device_name": "Night phone"}), 200)
    assert expect(phone.tasks(), 200) == []
    shown = expect(owner.patch(f"/api/devices/{phone.device_id}/", json={"send_window": None}), 200)
    assert shown["send_window"] is None
    assert [t["id"] for t in expect(phone.tasks(), 200)] == [sent["id"]]


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"start": "08:00", "end": "21:00", "timezone": "Mars/Olympus"}, "send_window.timezone"),
        ({"start": "25:00", "end": "21:00", "timezone": "UTC"}, "send_window.start"),
        ({"start": "08:00", "end": "08:00", "timezone": "UTC"}, "send_window.end"),
    ],
)
def test_a_bad_send_window_is_a_400_naming_the_field_and_changes_nothing(
    world: World, window: dict[str, str], field: str
) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    body = {"device_name": "renamed", "send_window": window}
    error = expect_error(owner.patch(f"/api/devices/{phone.device_id}/", json=body), 400)
    assert error.get("field") == field, error
    [device] = [d for d in expect(owner.get("/api/devices/"), 200) if d["device_id"] == phone.device_id]
    assert device["device_name"] != "renamed" and device["send_window"] is None


def test_a_failing_phone_is_skipped_by_the_pool_shown_why_and_back_after_the_pause(world: World) -> None:
    owner = world.signup()
    broken, working = world.pair(owner), world.pair(owner)
    key = world.api_key(owner)["api_key"]
    for i in range(5):  # the account's own pool: no device_id
        sent = expect(world.external({"api_key": key, "to": TO, "message": f"fails {i}"}), 202)
        assert [t["id"] for t in expect(broken.tasks(limit=1), 200)] == [sent["id"]]
        expect(broken.report(sent["id"], "failed", error="RESULT_ERROR_GENERIC_FAILURE"), 200)
    shown = {d["device_id"]: d for d in expect(owner.get("/api/devices/"), 200)}
    assert shown[broken.device_id]["pool_pause_reason"] == (
        "5 failed reports in a row, the last: RESULT_ERROR_GENERIC_FAILURE"
    )
    assert parse(shown[broken.device_id]["pool_paused_until"]) > datetime.now(UTC)
    assert shown[working.device_id]["pool_paused_until"] is None
    sent = expect(world.external({"api_key": key, "to": TO, "message": "to a working phone"}), 202)
    assert expect(broken.tasks(), 200) == []
    assert [t["id"] for t in expect(working.tasks(), 200)] == [sent["id"]]
    later = expect(world.external({"api_key": key, "to": TO, "message": "after the pause"}), 202)
    deadline = time.monotonic() + 10
    while not (got := expect(broken.tasks(), 200)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert [t["id"] for t in got] == [later["id"]]
