"""The dashboard's Webhooks page in headless Chromium against a real ``connecfy serve``
and real local receivers: an endpoint added on the page gets events signed with the
secret the page showed once; a phone's status changes appear in the page's delivery log
and one is delivered again from there; a receiver that keeps failing gets its endpoint
disabled, the page says why, and Enable takes it back.

The server lets deliveries go to loopback over plain HTTP, retries after about 100 ms and
disables an endpoint after one second without a success, so all of it happens quickly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

try:
    from playwright.sync_api import expect as see
except ImportError:  # the browser fixture then fails under CI and skips elsewhere
    see = None

from broker.webhooks.events import EVENT_TYPES, verify
from tests.support.browser import SERVER_SETTINGS, Person, shoot
from tests.support.e2e_server import Api, ServerProcess, expect
from tests.support.http_world import PASSWORD, TO, World
from tests.support.people import duplicate_button_names, email, register
from tests.support.webhook_receiver import Received, Receiver

WEBHOOK_SETTINGS = {
    **SERVER_SETTINGS,
    "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",
    "CONNECFY_WEBHOOK_BACKOFF_FIRST_MS": "100",
    # Only failures count towards it: the receivers answering 204 never meet it.
    "CONNECFY_WEBHOOK_RETRY_SECONDS": "1",
}
MESSAGE_EVENTS = ["message.queued", "message.claimed", "message.sent"]
WAIT_MS = 15_000  # for what the page shows after a delivery (its log is read every 3 s)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("webhooks"), settings=WEBHOOK_SETTINGS).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def receivers() -> Iterator[Any]:
    opened: list[Receiver] = []

    def receiver(**kwargs: Any) -> Receiver:
        r = Receiver(**kwargs)
        opened.append(r)
        return r

    yield receiver
    for r in opened:
        r.close()


def header(request: Received, name: str) -> str:
    return next(v for k, v in request.headers.items() if k.lower() == name.lower())


def signed_with(secret: str, request: Received) -> bool:
    return verify(secret, header(request, "Connecfy-Signature"), request.body, int(time.time()))


def of_type(receiver: Receiver, event_type: str) -> list[Received]:
    return [r for r in receiver.delivered() if r.event["type"] == event_type]


def card_of(page: Any, url: str) -> Any:
    return page.locator(f"li.webhook[data-url='{url}']")


def open_log(card: Any) -> Any:
    card.locator("[data-delivery-log] > summary").click()
    log = card.locator("[data-delivery-log]")
    see(log).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    return log


def log_rows(log: Any) -> list[dict[str, str]]:
    """The delivery log as shown: one dict per line, cell label -> text."""
    return log.locator("tbody tr").evaluate_all("""(rows) => rows.map((tr) => Object.fromEntries(
        [...tr.querySelectorAll("td[data-label]")].map((td) => [td.dataset.label, td.textContent.trim()])))""")


def wait_for_endpoint(user: Api, endpoint_id: str, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        endpoint = expect(user.get(f"/api/webhooks/{endpoint_id}/"), 200)
        if predicate(endpoint) or time.monotonic() > deadline:
            return endpoint
        time.sleep(0.1)


def test_an_endpoint_added_on_the_page_gets_signed_events_and_one_is_delivered_again(
    people: Any, world: World, receivers: Any
) -> None:
    receiver = receivers()
    alice = people()
    alice.signup(email("hooks"), PASSWORD)
    page = alice.open("/webhooks/")
    assert page.get_by_role("link", name="Webhooks").get_attribute("aria-current") == "page"
    assert page.get_by_text("No endpoints yet").is_visible()
    boxes = page.locator("input[name=events]")
    assert [b.get_attribute("value") for b in boxes.all()] == list(EVENT_TYPES)
    assert all(b.is_checked() for b in boxes.all()), "every event type is ticked to begin with"

    # Add: the secret is shown once, with how to check a signature; the list never holds it.
    page.get_by_label("URL").fill(receiver.url)
    page.get_by_role("button", name="Add endpoint").click()
    card = card_of(page, receiver.url)
    card.wait_for()
    secret = page.locator("[data-new-secret] [data-secret-value]").inner_text()
    assert secret.startswith("whsec_") and len(secret) > 20
    assert "Connecfy-Signature" in page.locator("[data-new-secret]").inner_text()
    assert secret not in page.locator("#webhook-list").inner_html()
    endpoint_id = card.get_attribute("data-webhook-id")
    assert card.locator("[data-field=state]").inner_text() == "Enabled"
    assert card.locator("[data-field=events]").inner_text() == ", ".join(EVENT_TYPES)
    assert card.locator("[data-field=queued]").inner_text() == "0"
    assert page.get_by_label("URL").input_value() == "", "the form is cleared for the next one"
    status, listed = alice.api("GET", "/api/webhooks/", None)
    assert status == 200 and [e["id"] for e in listed] == [endpoint_id] and "secret" not in listed[0]

    # A test event from the page: its answer is shown, and it is signed with that secret.
    card.get_by_role("button", name=f"Send a test event to {receiver.url}").click()
    see(card.locator("[data-test-result]")).to_have_text(
        re.compile(r"Test event delivered: HTTP 204 in \d+ ms"), timeout=WAIT_MS
    )
    [test_event] = of_type(receiver, "webhook.test")
    assert test_event.event["data"] == {"endpoint_id": endpoint_id}
    assert signed_with(secret, test_event)
    assert not signed_with(secret[:-1] + ("A" if secret[-1] != "A" else "B"), test_event)

    # Real status changes: the page sends nothing here; a paired phone claims and reports.
    status, code = alice.api("POST", "/api/devices/pairing-codes/", None)
    assert status == 201
    phone = register(world, code["code"], "Pixel 7")
    expect(phone.heartbeat({"battery": 90}), 200)
    status, sent = alice.api(
        "POST", "/api/sms/send/", {"to": TO, "message": "Order 42 is on its way.", "device_id": phone.device_id}
    )
    assert status == 202, sent
    message_id = sent["id"]
    assert [t["id"] for t in phone.claim()] == [message_id]
    expect(phone.report(message_id, "sent"), 200)

    def message_events() -> list[Received]:
        return [r for r in receiver.delivered() if r.event["data"].get("message_id") == message_id]

    receiver.wait_for(lambda: len(message_events()) == len(MESSAGE_EVENTS))
    assert [r.event["type"] for r in message_events()] == MESSAGE_EVENTS, "a message's events arrive in order"
    assert all(signed_with(secret, r) for r in message_events())

    # The delivery log on the page: every attempt, newest first, Redeliver on message events only.
    log = open_log(card)
    see(log.locator("tbody tr[data-outcome=delivered]")).to_have_count(len(MESSAGE_EVENTS), timeout=WAIT_MS)
    rows = log_rows(log)
    assert [r["Event"] for r in rows] == [*reversed(MESSAGE_EVENTS), "webhook.test"]
    for row in rows[:-1]:
        assert (
            row["Message or phone"],
            row["Attempt"],
            row["Outcome"],
            row["Status"],
            row["Error"],
            row["Next retry"],
        ) == (
            message_id,
            "1",
            "delivered",
            "204",
            "–",
            "–",
        ), row
        assert re.fullmatch(r"\d+ ms", row["Latency"]), row
    assert (rows[-1]["Message or phone"], rows[-1]["Outcome"], rows[-1]["Status"]) == ("–", "test", "204")
    assert log.locator("tr[data-event-type='webhook.test'] button").count() == 0
    assert log.locator("button[data-action=redeliver]").count() == len(MESSAGE_EVENTS)
    assert duplicate_button_names(page) == []

    sent_row = log.locator("tr[data-event-type='message.sent']")
    event_id = sent_row.get_attribute("data-event-id")
    [first] = [r for r in message_events() if r.event["type"] == "message.sent"]
    assert header(first, "Connecfy-Event-Id") == first.event["id"] == event_id
    sent_row.get_by_role("button", name=f"Redeliver message.sent of {message_id}").click()
    page.get_by_text("Queued again with the same event id").wait_for(timeout=WAIT_MS)
    receiver.wait_for(lambda: len([r for r in receiver.delivered() if r.event["id"] == event_id]) == 2)
    again = [r for r in receiver.delivered() if r.event["id"] == event_id][1]
    assert again.body == first.body and signed_with(secret, again)
    see(log.locator(f"tr[data-event-id='{event_id}']")).to_have_count(2, timeout=WAIT_MS)
    assert "(redelivery)" in log.locator(f"tr[data-event-id='{event_id}']").first.inner_text()
    assert log.locator("button[data-action=redeliver]").count() == len(MESSAGE_EVENTS), "one per event"

    # Rotate: a new secret shown once; for a day deliveries carry signatures by both.
    card.get_by_role("button", name=f"Rotate the secret of {receiver.url}").click()
    rotated = card.locator("[data-rotated]")
    see(rotated).to_be_visible()
    assert alice.dialogs == [f"Rotate the secret of {receiver.url}? The current one keeps signing too, for one day."]
    new_secret = rotated.locator("[data-secret-value]").inner_text()
    assert new_secret.startswith("whsec_") and new_secret != secret
    card.get_by_role("button", name=f"Send a test event to {receiver.url}").click()
    receiver.wait_for(lambda: len(of_type(receiver, "webhook.test")) == 2)
    latest = of_type(receiver, "webhook.test")[1]
    assert signed_with(new_secret, latest) and signed_with(secret, latest)

    page = alice.open("/webhooks/")
    assert secret not in page.content() and new_secret not in page.content(), "secrets are shown only once"

    # Delete, after a question naming it: the endpoint is gone.
    card_of(page, receiver.url).get_by_role("button", name=f"Delete {receiver.url}").click()
    page.get_by_text("No endpoints yet").wait_for()
    assert alice.dialogs[-1] == f"Delete the endpoint {receiver.url}? Events waiting for it are dropped."
    assert alice.api("GET", "/api/webhooks/", None) == (200, [])


def test_a_failing_endpoint_shows_why_it_was_disabled_and_enable_takes_it_back(
    people: Any, world: World, receivers: Any
) -> None:
    good, failing = receivers(), receivers(status=500)
    user = world.signup("api_only")
    good_id = expect(user.post("/api/webhooks/", json={"url": good.url}), 201)["id"]
    bob = people()
    bob.login(user.account["email"], PASSWORD, "/webhooks/")
    page = bob.page
    page.wait_for_selector("body[data-ready=true]")

    # The form with no event type ticked is refused by the API, and says so.
    page.get_by_label("URL").fill(failing.url)
    for box in page.locator("input[name=events]").all():
        box.uncheck()
    page.get_by_role("button", name="Add endpoint").click()
    see(page.locator("form .error")).to_contain_text("events must be a non-empty list")
    page.get_by_label("message.queued").check()
    page.get_by_role("button", name="Add endpoint").click()
    card = card_of(page, failing.url)
    card.wait_for()
    failing_id = card.get_attribute("data-webhook-id")
    assert card.locator("[data-field=events]").inner_text() == "message.queued"

    # A message is queued; the failing receiver answers 500 until the endpoint is disabled.
    expect(user.post("/api/sms/send/", json={"to": TO, "message": "Your code is 123456"}), 202)
    endpoint = wait_for_endpoint(user, failing_id, lambda e: not e["enabled"])
    assert not endpoint["enabled"] and endpoint["disabled_reason"], endpoint
    assert "HTTP 500" in endpoint["disabled_reason"]
    good.wait_for(lambda: len(of_type(good, "message.queued")) == 1)
    assert len(failing.received) >= 2 and all(r.answered == 500 for r in failing.received)

    page = bob.open("/webhooks/")
    card = card_of(page, failing.url)
    assert card.locator("[data-field=state]").inner_text() == "Disabled"
    alert = card.locator("[data-disabled]")
    assert alert.locator("[data-disabled-reason]").inner_text() == endpoint["disabled_reason"].strip()
    assert alert.locator("time").get_attribute("datetime") == endpoint["disabled_at"]
    assert card.locator("[data-field=failing_since] time").count() == 1
    assert card.locator("[data-field=last_success]").inner_text() == "never"
    assert card.get_by_role("button", name=f"Enable {failing.url}").is_visible()
    assert card_of(page, good.url).locator("[data-field=state]").inner_text() == "Enabled"
    assert card_of(page, good.url).get_by_role("button", name=f"Enable {good.url}").count() == 0
    assert card_of(page, good.url).locator("[data-field=last_success] time").count() == 1

    log = open_log(card)
    see(log.locator("tbody tr[data-outcome=disabled]")).to_have_count(1, timeout=WAIT_MS)
    rows = log_rows(log)
    assert rows[0]["Outcome"] == "disabled" and rows[0]["Status"] == "500"
    failed = [r for r in rows if r["Outcome"] == "failed"]
    assert failed and all(r["Status"] == "500" and r["Error"].startswith("HTTP 500") for r in failed)
    assert all(r["Next retry"] != "–" for r in failed), "a failed attempt says when the next one is"
    assert [int(r["Attempt"]) for r in reversed(rows)] == list(range(1, len(rows) + 1))
    assert log.locator("button[data-action=redeliver]").count() == 0, "a disabled endpoint takes no redelivery"
    open_log(card_of(page, good.url))
    see(card_of(page, good.url).locator("tbody tr[data-outcome=delivered]")).to_have_count(1, timeout=WAIT_MS)
    assert duplicate_button_names(page) == []
    shoot(page, "webhooks")

    # A test event reaches a disabled endpoint too (to check the receiver), then Enable.
    card.get_by_role("button", name=f"Send a test event to {failing.url}").click()
    see(card.locator("[data-test-result]")).to_have_text(
        re.compile(r"Test event failed: HTTP 500 in \d+ ms"), timeout=WAIT_MS
    )
    card.get_by_role("button", name=f"Enable {failing.url}").click()
    page.wait_for_load_state("load")
    see(card_of(page, failing.url).locator("[data-field=state]")).to_have_text("Enabled")
    assert card_of(page, failing.url).locator("[data-disabled]").count() == 0
    endpoint = expect(user.get(f"/api/webhooks/{failing_id}/"), 200)
    assert (endpoint["enabled"], endpoint["disabled_reason"], endpoint["disabled_at"]) == (True, None, None)
    assert expect(user.get(f"/api/webhooks/{good_id}/"), 200)["enabled"] is True


def test_the_page_offers_device_events_and_its_log_names_the_phone(
    browser: Any, receivers: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On a server whose phones are offline 3 s after their last sighting: an endpoint for
    device.offline and device.online only, ticked on the page, gets a silent phone's
    offline and its return; the delivery log names the phone, and redelivers an event."""
    settings = {**WEBHOOK_SETTINGS, "CONNECFY_PRESENCE_TTL_SECONDS": "3"}
    process = ServerProcess(tmp_path_factory.mktemp("presence"), settings=settings).start()
    world, person = World(process), Person(browser, process.base_url)
    try:
        receiver = receivers()
        person.signup(email("presence"), PASSWORD)
        page = person.open("/webhooks/")
        page.get_by_label("URL").fill(receiver.url)
        for box in page.locator("input[name=events]").all():
            if not (box.get_attribute("value") or "").startswith("device."):
                box.uncheck()
        page.get_by_role("button", name="Add endpoint").click()
        card = card_of(page, receiver.url)
        card.wait_for()
        assert card.locator("[data-field=events]").inner_text() == "device.offline, device.online"
        secret = page.locator("[data-new-secret] [data-secret-value]").inner_text()

        status, code = person.api("POST", "/api/devices/pairing-codes/", None)
        assert status == 201
        phone = register(world, code["code"], "Pixel 7")
        expect(phone.heartbeat({"battery": 90}), 200)
        receiver.wait_for(lambda: len(of_type(receiver, "device.offline")) == 1)
        expect(phone.heartbeat(), 200)
        receiver.wait_for(lambda: len(of_type(receiver, "device.online")) == 1)
        offline, online = receiver.delivered()[:2]
        assert [offline.event["type"], online.event["type"]] == ["device.offline", "device.online"]
        assert all(r.event["device_id"] == phone.device_id and signed_with(secret, r) for r in (offline, online))

        log = open_log(card)
        see(log.locator("tbody tr[data-outcome=delivered]")).to_have_count(2, timeout=WAIT_MS)
        rows = log_rows(log)  # newest first; the phone may have gone silent again since
        assert [(r["Event"], r["Message or phone"], r["Outcome"]) for r in rows[-2:]] == [
            ("device.online", "Pixel 7", "delivered"),
            ("device.offline", "Pixel 7", "delivered"),
        ]
        event_id = offline.event["id"]
        row = log.locator(f"tr[data-event-id='{event_id}']")
        row.get_by_role("button", name=f"Redeliver device.offline of Pixel 7, event {event_id}").click()
        receiver.wait_for(lambda: len([r for r in receiver.delivered() if r.event["id"] == event_id]) == 2)
        assert [r.body for r in receiver.delivered() if r.event["id"] == event_id] == [offline.body] * 2
        assert duplicate_button_names(page) == []
    finally:
        person.close()
        world.close()
        process.stop()


def test_the_page_asks_for_a_session_first_and_is_no_api_path(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        for path in ("/webhooks/", "/webhooks"):
            response = anonymous.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == f"/login/?next={path.replace('/', '%2F')}", path
        assert "/webhooks/" not in anonymous.get("/schema/openapi.json").json()["paths"]
