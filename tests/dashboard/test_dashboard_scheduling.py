"""Scheduling, expiry and SIM from the dashboard, in headless Chromium against a real
``connecfy serve``: a send time or expiry the server refuses is said next to the field, by its label, and nothing is queued.

Screenshots go to ``tests/.screenshots/`` like the other dashboard tests'.
"""

from __future__ import annotations

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
from tests.support.e2e_server import ServerProcess
from tests.support.http_world import PASSWORD, TO, Phone, World
from tests.support.people import email, paired

# +05:45 all year: an offset that no whole-hour slip, and no UTC reading, can match.
ZONE = "Asia/Kathmandu"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("scheduling"), settings=SERVER_SETTINGS).start()
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
