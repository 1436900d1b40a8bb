"""Scheduling, expiry and SIM from the dashboard, in headless Chromium against a real
``connecfy serve``: a send time typed in the browser's own time zone reaches the server
with that zone's offset, the message is ``scheduled`` and its row on the Messages page
turns ``queued`` by itself once the time has come, and the phone's task carries the SIM;
a scheduled or queued message is cancelled from its row, which shows what it became
without a reload (``claimed`` when a phone took it first); a send time or expiry the
server refuses is said next to the field, by its label, and nothing is queued; the
Overview and Devices pages name a phone that is offline while messages wait for it, and
not one that is online; a high-priority send is claimed before a normal one sent first;
a send window set on the Devices page holds the phone's messages until it is removed.

Screenshots go to ``tests/.screenshots/`` like the other dashboard tests'.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

try:
    from playwright.sync_api import expect as see
except ImportError:  # the browser fixture then fails under CI and skips elsewhere
    see = None

from tests.support.browser import SERVER_SETTINGS, Person, shoot
from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import PASSWORD, TO, Phone, World
from tests.support.people import email, paired

# A phone is offline 4 s after its last sign of life here (45 s by default).
PRESENCE_TTL = 4
# +05:45 all year: an offset that no whole-hour slip, and no UTC reading, can match.
ZONE = "Asia/Kathmandu"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    settings = {**SERVER_SETTINGS, "CONNECFY_PRESENCE_TTL_SECONDS": str(PRESENCE_TTL)}
    process = ServerProcess(tmp_path_factory.mktemp("scheduling"), settings=settings).start()
    try:
        yield process
    finally:
        process.stop()


def wall_clock(moment: datetime) -> str:
    """``moment`` as a person in ZONE types it into a datetime-local field."""
    return moment.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def messages(person: Person) -> list[dict[str, Any]]:
    status, page = person.api("GET", "/api/sms/", None)
    assert status == 200
    items: list[dict[str, Any]] = page["items"]
    return items


def at_the_send_page(people: Any, world: World, who: str, phone_name: str) -> tuple[Person, Phone, Any]:
    """Someone in ZONE, signed up with one phone paired, on the Send page."""
    person: Person = people(timezone_id=ZONE)
    person.signup(email(who), PASSWORD)
    phone = paired(person, world, phone_name)
    return person, phone, person.open("/send/")


def fill_send_form(page: Any, phone: Phone, text: str) -> None:
    page.get_by_label("From device").select_option(phone.device_id)
    page.get_by_label("To").fill(TO)
    page.get_by_label("Message").fill(text)


def press_send(page: Any) -> str:
    """Press Send and wait for the answer to this press: the new message's id."""
    shown = page.locator("[data-sent-id]")
    before = shown.inner_text() if shown.count() else ""
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "(before) => { const id = document.querySelector('[data-sent-id]'); return id && id.textContent !== before; }",
        arg=before,
    )
    return str(shown.inner_text())


def test_a_send_scheduled_on_the_send_page_waits_then_turns_queued_on_its_own(people: Any, world: World) -> None:
    carol, phone, page = at_the_send_page(people, world, "schedule", "Pixel 8")
    assert page.evaluate("() => new Date(2026, 0, 1).getTimezoneOffset()") == -345, "the browser is in Kathmandu"
    fill_send_form(page, phone, "Doors open in ten minutes.")
    due = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    page.get_by_label("Send time").fill(wall_clock(due))
    page.get_by_label("Expires after").fill("2")
    assert page.get_by_label("Unit of the expiry").input_value() == "3600", "hours unless minutes are chosen"
    page.get_by_label("SIM").select_option("2")
    message_id = press_send(page)
    outcome = page.locator("[data-sent-status]")
    assert outcome.get_attribute("data-sent-status") == "scheduled"
    assert outcome.inner_text().startswith("Scheduled for ")
    assert outcome.locator("time").get_attribute("datetime") is not None
    shoot(page, "send-scheduled")

    status, sent = carol.api("GET", f"/api/sms/{message_id}/", None)
    assert status == 200
    assert sent["status"] == "scheduled"
    assert parse(sent["send_at"]) == due, "the local time was sent with the browser's offset"
    assert parse(sent["expires_at"]) == due + timedelta(hours=2), "two hours from when it is due"
    assert sent["sim_slot"] == 2
    assert expect(phone.tasks(), 200) == [], "not before its time"

    page = carol.open("/messages/?status=scheduled")
    page.evaluate("() => { window.stillTheSamePage = true; }")
    row = page.locator(f"[data-message-id='{message_id}']")
    assert row.locator("summary .status").inner_text() == "scheduled"
    assert row.locator("[data-field=when]").inner_text().startswith("sends in ")
    row.locator("summary").click()
    assert row.locator("[data-field=sim_slot]").inner_text() == "SIM 2"
    assert row.locator("[data-field=send_at] time").get_attribute("datetime") == sent["send_at"]
    assert row.locator("[data-field=expires_at] time").get_attribute("datetime") == sent["expires_at"]
    see(row.get_by_role("button", name="Cancel")).to_be_visible()
    shoot(page, "messages-scheduled")

    seconds_left = (due - datetime.now(UTC)).total_seconds()
    see(row.locator("summary .status")).to_have_text("queued", timeout=(seconds_left + 10) * 1000)
    assert datetime.now(UTC) >= due
    assert page.evaluate("() => window.stillTheSamePage") is True, "the row changed, the page was not reloaded"
    assert row.locator(".timeline .status").all_inner_texts() == ["scheduled", "queued"]
    see(row.get_by_role("button", name="Cancel")).to_be_visible()  # still cancellable while queued
    tasks = expect(phone.tasks(), 200)
    assert tasks == [{"id": message_id, "to": TO, "message": "Doors open in ten minutes.", "sim_slot": 2}]


def test_cancel_on_the_messages_page_updates_the_row(people: Any, world: World) -> None:
    dave, phone, page = at_the_send_page(people, world, "cancel", "Pixel 6a")
    fill_send_form(page, phone, "See you tomorrow.")
    page.get_by_label("Send time").fill(wall_clock(datetime.now(UTC) + timedelta(hours=1)))
    later = press_send(page)
    assert page.locator("[data-sent-status]").get_attribute("data-sent-status") == "scheduled"
    page.get_by_label("Send time").fill("")
    page.get_by_label("Message").fill("Right now.")
    now = press_send(page)
    assert page.locator("[data-sent-status]").inner_text() == "Queued."

    page = dave.open("/messages/")
    page.evaluate("() => { window.stillTheSamePage = true; }")
    row = page.locator(f"[data-message-id='{later}']")
    row.locator("summary").click()
    row.get_by_role("button", name="Cancel").click()
    see(row.locator("summary .status")).to_have_text("cancelled")
    page.get_by_text("Cancelled", exact=True).wait_for()
    assert row.get_by_role("button", name="Cancel").count() == 0
    assert row.locator(".timeline .status").all_inner_texts() == ["scheduled", "cancelled"]
    assert {m["id"]: m["status"] for m in messages(dave)}[later] == "cancelled"

    # The phone takes the other one while the page is open: the cancel is refused, and
    # the row says why and shows what it is now.
    [task] = expect(phone.tasks(), 200)
    assert task["id"] == now
    row = page.locator(f"[data-message-id='{now}']")
    row.locator("summary").click()
    assert row.locator("summary .status").inner_text() == "queued"
    row.get_by_role("button", name="Cancel").click()
    see(row.locator("summary .status")).to_have_text("claimed")
    assert row.get_by_role("button", name="Cancel").count() == 0
    assert "claimed" in page.locator(".toast").inner_text()
    assert row.locator(".timeline .status").all_inner_texts() == ["queued", "claimed"]
    assert row.locator(".timeline li").last.inner_text().endswith("on Pixel 6a")
    assert page.evaluate("() => window.stillTheSamePage") is True
    shoot(page, "messages-cancelled")


def test_a_bad_send_time_or_expiry_is_named_and_nothing_is_queued(people: Any, world: World) -> None:
    erin, phone, page = at_the_send_page(people, world, "bad-input", "Moto G")
    fill_send_form(page, phone, "Too far ahead.")
    send_time = page.get_by_label("Send time")
    send_time.fill(wall_clock(datetime.now(UTC) + timedelta(days=40)))
    page.get_by_role("button", name="Send").click()
    error = page.locator("form .error")
    see(error).to_be_visible()
    assert error.inner_text() == "Send time: send_at may be at most 30 days ahead"
    assert send_time.get_attribute("aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.id") == "send_at"
    assert messages(erin) == []

    send_time.fill("")
    expiry = page.get_by_label("Expires after")
    expiry.fill("30")  # hours
    page.get_by_role("button", name="Send").click()
    see(error).to_contain_text("Expires after")
    assert error.inner_text() == "Expires after: valid_for must be a whole number from 30 to 86400 (30 s to 24 h)"
    assert expiry.get_attribute("aria-invalid") == "true"
    assert send_time.get_attribute("aria-invalid") is None, "the field put right is no longer marked"
    assert page.locator("[data-sent]").is_hidden()
    shoot(page, "send-error")
    assert messages(erin) == []

    expiry.fill("90")
    page.get_by_label("Unit of the expiry").select_option("60")
    page.get_by_role("button", name="Send").click()
    see(page.locator("[data-sent-status]")).to_have_attribute("data-sent-status", "queued")
    assert error.is_hidden() and expiry.get_attribute("aria-invalid") is None
    [sent] = messages(erin)
    assert sent["status"] == "queued" and sent["sim_slot"] is None
    assert parse(sent["expires_at"]) - parse(sent["created_at"]) == timedelta(minutes=90)


class KeptAlive:
    """A phone that sends a heartbeat every second, as long as the block lasts."""

    def __init__(self, phone: Phone) -> None:
        self.phone = phone
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.is_set():
            expect(self.phone.heartbeat(), 200)
            self.stop.wait(1.0)

    def __enter__(self) -> KeptAlive:
        expect(self.phone.heartbeat(), 200)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def banner_after_next_read(page: Any) -> Any:
    """The offline banner once the page has read the devices again from the server."""
    banner = page.locator("[data-offline-banner]")
    reads = int(banner.get_attribute("data-reads") or 0)
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-offline-banner]').dataset.reads || 0) > {reads}"
    )
    return banner


def test_a_phone_offline_with_messages_waiting_is_named_in_a_banner(people: Any, world: World) -> None:
    fay = people()
    fay.signup(email("offline"), PASSWORD)
    kitchen = paired(fay, world, "Kitchen phone")
    shop = paired(fay, world, "Shop phone")
    spare = paired(fay, world, "Spare phone")  # offline too, with nothing waiting
    for phone, count in ((kitchen, 1), (shop, 2)):
        for n in range(count):
            status, _ = fay.api("POST", "/api/sms/send/", {"device_id": phone.device_id, "to": TO, "message": f"{n}"})
            assert status == 202

    with KeptAlive(kitchen), KeptAlive(shop):
        page = fay.open("/")
        banner = banner_after_next_read(page)
        assert banner.is_hidden(), "online phones with messages waiting: no banner"
        assert banner.inner_text() == ""

    # The shop phone falls silent; the kitchen phone keeps beating.
    with KeptAlive(kitchen):
        see(page.locator(f"[data-offline-device='{shop.device_id}']")).to_be_visible(timeout=(PRESENCE_TTL + 10) * 1000)
        text = page.locator(f"[data-offline-device='{shop.device_id}']").inner_text()
        assert text.startswith("Shop phone is offline (last seen ") and text.endswith(
            "): 2 messages wait for it. See them"
        )
        assert page.locator("[data-offline-banner] > p").count() == 1, "only the offline phone with messages waiting"
        assert page.locator(f"[data-offline-device='{kitchen.device_id}']").count() == 0
        assert page.locator(f"[data-offline-device='{spare.device_id}']").count() == 0
        link = page.locator("[data-offline-banner] a").get_attribute("href")
        assert link == f"/messages/?device_id={shop.device_id}&status=queued"
        shoot(page, "overview-offline")

        page = fay.open("/devices/")
        banner = banner_after_next_read(page)
        assert banner.is_visible()
        assert [p.get_attribute("data-offline-device") for p in banner.locator("p").all()] == [shop.device_id]
        assert banner.locator("p").inner_text().endswith("2 messages wait for it. See them")
        card = page.locator(f"li[data-device-id='{kitchen.device_id}']")
        assert card.locator("[data-field=presence]").inner_text() == "Online"
        shoot(page, "devices-offline")

        # Back online: the banner goes without a reload.
        page.evaluate("() => { window.stillTheSamePage = true; }")
        expect(shop.heartbeat(), 200)
        see(banner).to_be_hidden(timeout=10_000)
        assert page.evaluate("() => window.stillTheSamePage") is True


def test_a_high_priority_send_is_claimed_before_the_normal_one(people: Any, world: World) -> None:
    gus, phone, page = at_the_send_page(people, world, "priority", "Pixel 9")
    assert page.get_by_label("Priority").input_value() == "normal"
    fill_send_form(page, phone, "This month's newsletter.")
    normal = press_send(page)
    page.get_by_label("Message").fill("Your code is 123456.")
    page.get_by_label("Priority").select_option("high")
    high = press_send(page)

    assert {m["id"]: m["priority"] for m in messages(gus)} == {normal: "normal", high: "high"}
    assert [t["id"] for t in expect(phone.tasks(limit=1), 200)] == [high], "sent second, claimed first"

    page = gus.open("/messages/")
    row = page.locator(f"[data-message-id='{high}']")
    row.locator("summary").click()
    assert row.locator("[data-field=priority]").inner_text() == "high"


def test_a_send_window_set_on_the_devices_page_holds_messages_until_it_opens(people: Any, world: World) -> None:
    hal = people(timezone_id=ZONE)
    hal.signup(email("window"), PASSWORD)
    phone = paired(hal, world, "Depot phone")

    page = hal.open("/devices/")
    card = page.locator(f"li[data-device-id='{phone.device_id}']")
    note = card.locator("[data-window-note]")
    remove = card.get_by_role("button", name="Remove the send window of Depot phone")
    assert note.inner_text() == "any time (no window)"
    assert remove.is_hidden()
    zone = card.get_by_label("Time zone")
    # The browser's own zone to begin with, by the name its ICU gives (Asia/Katmandu, the old spelling, here).
    assert zone.input_value() == page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert zone.input_value() in ("Asia/Kathmandu", "Asia/Katmandu")

    # An hour that has not come yet in Berlin: the window is closed now.
    berlin = datetime.now(ZoneInfo("Europe/Berlin"))
    opens, closes = ((berlin + timedelta(hours=h)).strftime("%H:%M") for h in (2, 3))
    card.get_by_label("Window opens").fill(opens)
    card.get_by_label("Window closes").fill(closes)
    zone.fill("Mars/Olympus_Mons")
    card.get_by_role("button", name="Save the send window of Depot phone").click()
    error = card.locator("form.send-window .error")
    see(error).to_have_text("Time zone: timezone must be an IANA time zone name, e.g. Europe/Berlin")
    assert zone.get_attribute("aria-invalid") == "true"
    status, [device] = hal.api("GET", "/api/devices/", None)
    assert status == 200 and device["send_window"] is None, "nothing changed"

    zone.fill("Europe/Berlin")
    card.get_by_role("button", name="Save the send window of Depot phone").click()
    page.get_by_text("Send window saved").wait_for()
    assert error.is_hidden() and zone.get_attribute("aria-invalid") is None
    assert note.inner_text() == f"new messages go out from {opens} to {closes} (Europe/Berlin) only"
    see(remove).to_be_visible()
    status, [device] = hal.api("GET", "/api/devices/", None)
    assert device["send_window"] == {"start": opens, "end": closes, "timezone": "Europe/Berlin"}
    shoot(page, "devices-send-window")

    status, sent = hal.api("POST", "/api/sms/send/", {"device_id": phone.device_id, "to": TO, "message": "Later."})
    assert status == 202
    assert expect(phone.tasks(), 200) == [], "outside the window the phone is handed nothing"

    page = hal.open("/devices/")
    assert card.get_by_label("Window opens").input_value() == opens, "the page shows the window it has"
    assert card.get_by_label("Time zone").input_value() == "Europe/Berlin"
    remove.click()
    page.get_by_text("Send window removed").wait_for()
    assert note.inner_text() == "any time (no window)"
    assert remove.is_hidden() and card.get_by_label("Window opens").input_value() == ""
    status, [device] = hal.api("GET", "/api/devices/", None)
    assert device["send_window"] is None
    assert [t["id"] for t in expect(phone.tasks(), 200)] == [sent["id"]]
