"""Campaigns over real HTTP against ``connecfy serve`` with its private Redis and its own
background process: a 10,000-row file with bad, duplicate and opted-out rows gets the
exact report; started, every valid row becomes exactly one message with its rendered
text, although the background process is killed with SIGKILL mid-way (and restarted by
serve); a daily quota that runs out pauses a campaign, which goes on by itself once the
operator raises it; cancel reaches every message no phone holds yet; and every file that
cannot make a campaign is a 400 (413 for size) that stores nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.support.e2e_server import Api, ServerProcess, expect, expect_error
from tests.support.http_world import World

OPERATOR_EMAIL, OPERATOR_PASSWORD = "operator@example.com", "operator password"
SETTINGS = {
    "CONNECFY_AUTH_BURST": "1000",
    "CONNECFY_SENDS_PER_SECOND": "800",
    "CONNECFY_SENDS_BURST": "500",
    "CONNECFY_TASKS_BURST": "10000",
}
TEMPLATE = "Hello {name}, your code is {code}. Reply STOP to opt out."
ROWS = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("connecfy-campaigns"), settings=SETTINGS).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()
        assert "Traceback" not in process.output(), process.output()[-5000:]


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


def upload(user: Api, body: bytes, **fields: str) -> Any:
    data = {"name": "spring sale", "template": TEMPLATE, **fields}
    return user.post("/api/campaigns/", files={"file": ("list.csv", body, "text/csv")}, data=data)


def wait_for(user: Api, campaign_id: str, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        campaign = expect(user.get(f"/api/campaigns/{campaign_id}/"), 200)
        if done(campaign):
            return campaign
        assert time.monotonic() < deadline, campaign
        time.sleep(0.1)


def campaign_messages(user: Api, campaign_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"campaign_id": campaign_id, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = expect(user.get("/api/sms/", params=params), 200)
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def background_of(server: ServerProcess) -> psutil.Process:
    assert server.process is not None
    found = [
        p
        for p in psutil.Process(server.process.pid).children()
        if "background" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert len(found) == 1, found
    return found[0]


def big_file() -> tuple[bytes, dict[int, tuple[str, str]], list[tuple[int, str]], list[str]]:
    """The 10,000-row file (semicolons, a BOM, national numbers in every third row): rows
    7 of each hundred have no number, 13 repeat the row before (written otherwise), 21
    of each 250 go to a number that opted out, 99 of each 500 have no name. Returns the
    file, the valid rows (row -> (number, text)), the invalid ones (row, field) and the
    opted-out numbers."""
    lines = ["phone;name;code"]
    valid: dict[int, tuple[str, str]] = {}
    invalid: list[tuple[int, str]] = []
    opted_out: list[str] = []
    for i in range(ROWS):
        row = i + 1
        digits = f"{2_000_000 + i:07d}"
        number, written = f"+1555{digits}", f"(555) {digits[:3]}-{digits[3:]}" if i % 3 == 0 else f"+1555{digits}"
        name = "N" * 150 if i == 4242 else f"Name{i}"
        code = f"C{i}"
        if i % 100 == 7:
            written = "12ab"
            invalid.append((row, "phone"))
        elif i % 100 == 13:
            previous = f"{2_000_000 + i - 1:07d}"
            written = f"+1 555 {previous}"
        elif i % 250 == 21:
            opted_out.append(number)
        elif i % 500 == 99:
            name = ""
            invalid.append((row, "name"))
        else:
            valid[row] = (number, TEMPLATE.format(name=name, code=code))
        lines.append(f"{written};{name};{code}")
    return ("\ufeff" + "\n".join(lines) + "\n").encode(), valid, invalid, opted_out


def test_a_10000_row_campaign_gets_its_exact_report_and_one_message_per_row_through_a_kill_9(
    server: ServerProcess, world: World
) -> None:
    body, valid, invalid, opted_out = big_file()
    owner = world.signup()
    for number in opted_out:
        expect(owner.post("/api/suppressions/", json={"phone": number, "reason": "replied STOP"}), 201)
    started_upload = time.monotonic()
    campaign = expect(upload(owner, body, default_country="US"), 201)
    took = time.monotonic() - started_upload
    report = campaign["report"]
    assert campaign["state"] == "draft"
    assert (report["rows"], report["valid"], report["invalid_rows"], report["duplicates"], report["opted_out"]) == (
        ROWS,
        len(valid),
        len(invalid),
        100,
        len(opted_out),
    )
    assert [(p["row"], p["field"]) for p in report["invalid"]] == invalid[:100]
    assert report["max_segments"] == 2  # the row with the long name; every other fits one
    assert expect(owner.get("/api/stats/"), 200)["total_messages"] == 0  # nothing queued yet

    started = expect(owner.post(f"/api/campaigns/{campaign['id']}/start/"), 202)
    assert started["state"] == "sending"
    wait_for(owner, campaign["id"], lambda c: c["counts"]["queued"] >= 1_000)
    os.kill(background_of(server).pid, signal.SIGKILL)
    killed_at = expect(owner.get(f"/api/campaigns/{campaign['id']}/"), 200)["counts"]["queued"]
    assert killed_at < len(valid), "the campaign was done before the kill: raise the rows or lower the rate"
    done = wait_for(owner, campaign["id"], lambda c: c["state"] == "done", timeout=90)
    assert done["counts"]["queued"] == len(valid)

    messages = campaign_messages(owner, campaign["id"])
    assert len(messages) == len(valid)
    assert sorted((m["to"], m["message"]) for m in messages) == sorted(valid.values())
    assert {m["campaign_id"] for m in messages} == {campaign["id"]}
    assert expect(owner.get("/api/stats/"), 200)["total_messages"] == len(valid)
    listed = expect(owner.get("/api/campaigns/"), 200)
    assert [c["id"] for c in listed["items"]] == [campaign["id"]]
    print(f"upload and validation of {ROWS:,} rows: {took:.2f} s; killed at {killed_at} queued")


def test_a_quota_that_runs_out_pauses_the_campaign_until_it_is_raised(world: World) -> None:
    sender = world.signup("api_only")  # a daily quota of 100 messages
    rows = "".join(f"+1555300{i:04d},Name{i},C{i}\n" for i in range(150))
    campaign = expect(upload(sender, f"phone,name,code\n{rows}".encode()), 201)
    expect(sender.post(f"/api/campaigns/{campaign['id']}/start/"), 202)
    paused = wait_for(sender, campaign["id"], lambda c: c["state"] == "paused")
    assert (paused["reason"], paused["counts"]["queued"]) == ("quota_exceeded", 100)
    operator = world.api()
    expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    expect(operator.patch(f"/api/operator/accounts/{sender.account['id']}/limits/", json={"daily_quota": 1000}), 200)
    done = wait_for(sender, campaign["id"], lambda c: c["state"] == "done", timeout=30)
    assert (done["counts"]["queued"], done["reason"]) == (150, None)
    assert len(campaign_messages(sender, campaign["id"])) == 150


def test_cancel_stops_what_no_phone_holds_yet(world: World) -> None:
    owner = world.signup()
    phone = world.pair(owner)
    rows = "".join(f"+1555400{i:04d},Name{i},C{i}\n" for i in range(20))
    campaign = expect(upload(owner, f"phone,name,code\n{rows}".encode(), device_id=phone.device_id), 201)
    expect(owner.post(f"/api/campaigns/{campaign['id']}/start/"), 202)
    wait_for(owner, campaign["id"], lambda c: c["state"] == "done")
    claimed = phone.claim(limit=5)
    assert len(claimed) == 5
    assert expect(owner.get(f"/api/sms/{claimed[0]['id']}/"), 200)["campaign_id"] == campaign["id"]
    page = owner.get(f"/messages/{claimed[0]['id']}/")  # the dashboard's message page names it
    assert page.status_code == 200 and 'data-field="campaign_id"' in page.text and campaign["id"] in page.text
    listed = owner.get("/messages/", params={"campaign_id": campaign["id"]})
    assert listed.status_code == 200 and listed.text.count('<li class="card message"') == 20, listed.text[-2000:]
    assert (
        owner.get("/messages/", params={"campaign_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}).text.count("data-message-id=")
        == 0
    )
    cancelled = expect(owner.post(f"/api/campaigns/{campaign['id']}/cancel/"), 200)
    assert cancelled["state"] == "cancelled"
    after = wait_for(owner, campaign["id"], lambda c: c["counts"]["cancelled"] == 15)
    assert after["counts"]["skipped"] == 15
    assert phone.claim(limit=20) == []
    statuses = sorted(m["status"] for m in campaign_messages(owner, campaign["id"]))
    assert statuses == ["cancelled"] * 15 + ["claimed"] * 5
    expect_error(owner.post(f"/api/campaigns/{campaign['id']}/cancel/"), 409, "invalid_campaign_state")
    expect_error(owner.post(f"/api/campaigns/{campaign['id']}/start/"), 409, "invalid_campaign_state")


BAD_FILES = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", {}, 400, "not_csv"),
    ("phone,name,code\n+15550000001,Jos\xe9,1\n".encode("latin-1"), {}, 400, "not_utf8"),
    (b"", {}, 400, "no_header"),
    (b"+15550000001,Ann,1\n", {}, 400, "no_header"),
    (b"number,name,code\n+15550000001,Ann,1\n", {}, 400, "no_phone_column"),
    (b"phone,name\n+15550000001,Ann\n", {}, 400, "unknown_template_column"),
    (b"phone,name,code\n+15550000001,Ann,1\n", {"template": "Hi {name"}, 400, "invalid_template"),
    (b"phone\n" + b"+15550000001\n" * 100_001, {"template": "hi"}, 400, "too_many_rows"),
    (b"phone\n" + b"1" * (10 * 1024 * 1024), {"template": "hi"}, 413, "file_too_large"),
]


def test_a_file_that_cannot_make_a_campaign_is_refused_and_stores_nothing(world: World) -> None:
    owner = world.signup()
    for body, fields, status, code in BAD_FILES:
        expect_error(upload(owner, body, **fields), status, code)
    assert expect(owner.get("/api/campaigns/"), 200)["items"] == []
    # Not multipart, and without the CSRF token.
    expect_error(owner.post("/api/campaigns/", json={"template": "x"}), 415, "unsupported_media_type")
    refused = owner.request(
        "POST",
        "/api/campaigns/",
        csrf=False,
        files={"file": ("a.csv", b"phone\n+15550000001\n")},
        data={"template": "x"},
    )
    expect_error(refused, 403, "forbidden")
    expect_error(owner.get("/api/campaigns/01ARZ3NDEKTSV4RRFFQ69G5FAV/"), 404, "campaign_not_found")
    expect_error(upload(owner, b"phone\n+15550000001\n", template="hi", default_country="XX"), 400, "invalid_input")
    assert expect(owner.get("/api/campaigns/"), 200)["items"] == []


def test_national_numbers_are_read_in_the_accounts_country_or_the_uploads(world: World) -> None:
    owner = world.signup()
    assert expect(owner.get("/api/account/settings/"), 200) == {"default_country": None, "server_default_country": None}
    expect_error(owner.patch("/api/account/settings/", json={"default_country": "ZZ"}), 400)
    expect(owner.patch("/api/account/settings/", json={"default_country": "DE"}), 200)
    national = b"phone\n030 1234567\n"
    assert expect(upload(owner, national, template="hi"), 201)["report"]["valid"] == 1
    made = expect(upload(owner, national, template="hi", default_country="CH"), 201)
    expect(owner.post(f"/api/campaigns/{made['id']}/start/"), 202)
    wait_for(owner, made["id"], lambda c: c["state"] == "done")
    assert [m["to"] for m in campaign_messages(owner, made["id"])] == ["+41301234567"]
    assert expect(owner.patch("/api/account/settings/", json={"default_country": None}), 200)["default_country"] is None
