"""The Inbox and Suppressions pages in headless Chromium against a real ``connecfy serve``:
a simulated phone posts the SMS it received (over HTTP, with its token), the navigation
counts it as new until the Inbox is opened (following it while a page stays open, and
not while the page is hidden), the conversation shows both ways, and a reply typed in
the thread goes out through the phone that number wrote to (the platform pool for an
API-only account), which claims it and moves the conversation to the top; numbers are
put on the suppression list, seen, exported as CSV and taken off again.

Screenshots go to ``tests/.screenshots/`` like the other dashboard tests'.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

try:
    from playwright.sync_api import expect as see
except ImportError:  # the browser fixture then fails under CI and skips elsewhere
    see = None

from tests.support.browser import SERVER_SETTINGS, shoot
from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PASSWORD, Phone, World
from tests.support.people import duplicate_button_names, email, paired

ANN, BEN = "+15553330001", "+15553330002"
WHEN = "2026-12-05T12:00:00.123Z"
POLL_MS = 300  # how often an open page reads the count of new SMS here (20 s by default)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    settings = {**SERVER_SETTINGS, "CONNECFY_INBOX_POLL_MS": str(POLL_MS)}
    process = ServerProcess(tmp_path_factory.mktemp("inbox"), settings=settings).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        process.stop()


def texts(phone: Phone, sender: str, message: str) -> str:
    """The phone reports an SMS it received, as the app does; the id it was stored under."""
    body = {"from": sender, "message": message, "received_at": WHEN, "ref": uuid.uuid4().hex}
    return expect(phone.api.post(f"/api/devices/{phone.device_id}/inbound/", json=body), 201)["id"]


def new_count(page: Any) -> str | None:
    """The navigation's count of new SMS, or None when there is none."""
    badge = page.locator("nav[aria-label=Main] [data-unread]")
    return badge.get_attribute("data-unread") if badge.count() else None


def bubbles(page: Any) -> list[tuple[str, str]]:
    return [
        (b.get_attribute("data-direction"), b.locator(".text").inner_text())
        for b in page.locator("ol.thread > li").all()
    ]


def test_a_conversation_in_the_inbox_is_answered_through_the_phone_it_came_to(people: Any, world: World) -> None:
    alice = people()
    alice.signup(email("inbox"), PASSWORD)
    front = paired(alice, world, "Front desk")
    back = paired(alice, world, "Back office")
    page = alice.open("/inbox/")
    assert page.get_by_text("No SMS received yet.").is_visible()

    # Ann texts the back office phone: the navigation counts it on every page.
    texts(back, ANN, "Hi! Is my order ready for pick-up?")
    page = alice.open("/")
    assert new_count(page) == "1"
    assert page.get_by_role("link", name="Inbox 1 new").is_visible()
    texts(front, BEN, "Wrong number, sorry")
    page = alice.open("/devices/")
    assert new_count(page) == "2"

    # Opening the Inbox clears the count; the conversations are marked new, newest first.
    page.get_by_role("link", name=re.compile(r"^Inbox")).click()
    page.wait_for_url(re.compile(r"/inbox/$"))
    page.wait_for_selector("body[data-ready=true]")
    assert new_count(page) is None
    threads = page.locator("ul.threads > li")
    assert [t.get_attribute("data-thread") for t in threads.all()] == [BEN, ANN]
    assert page.locator("li.thread-item.new").count() == 2
    ann = page.locator(f"li[data-thread='{ANN}']")
    assert "Is my order ready" in ann.locator(".preview").inner_text()
    assert ann.locator(".via").inner_text() == "to Back office"
    shoot(page, "inbox")
    assert new_count(alice.open("/messages/")) is None, "seen stays seen"

    # The thread: Ann's SMS, and a reply form that sends from the phone she wrote to.
    page = alice.open("/inbox/")
    page.locator(f"li[data-thread='{ANN}'] a").click()
    page.wait_for_url(re.compile(r"/inbox/thread/\?phone=%2B15553330001$"))
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("h1").inner_text() == ANN
    assert bubbles(page) == [("inbound", "Hi! Is my order ready for pick-up?")]
    assert page.locator("[data-reply-device]").get_attribute("data-reply-device") == back.device_id
    assert "Back office" in page.locator("[data-reply-device]").inner_text()
    assert page.locator("select[name=device_id]").count() == 0
    page.get_by_label("Message").fill("Yes, it's ready. See you soon!")
    assert page.locator("[data-seg-count]").inner_text() == "1"
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_selector("ol.thread > li[data-direction=outbound]")
    assert bubbles(page) == [
        ("inbound", "Hi! Is my order ready for pick-up?"),
        ("outbound", "Yes, it's ready. See you soon!"),
    ]
    reply = page.locator("ol.thread > li[data-direction=outbound]")
    assert reply.locator(".status").inner_text() == "queued"
    reply_id = reply.get_attribute("data-message-id")

    # The phone Ann wrote to claims the reply; the other one is handed nothing.
    assert front.claim() == []
    assert back.claim() == [{"id": reply_id, "to": ANN, "message": "Yes, it's ready. See you soon!"}]
    expect(back.report(reply_id, "sent"), 200)

    # Ann answers: new again, until the Inbox is opened; the thread reads in order.
    texts(back, ANN, "Great, thanks!")
    page = alice.open(f"/inbox/thread/?phone={ANN.replace('+', '%2B')}")
    assert new_count(page) == "1", "a thread is not the Inbox: the count stays"
    assert [d for d, _ in bubbles(page)] == ["inbound", "outbound", "inbound"]
    assert page.locator("ol.thread > li[data-direction=outbound] .status").inner_text() == "sent"
    shoot(page, "inbox-thread")
    page = alice.open("/inbox/")
    assert new_count(page) is None
    assert [t.get_attribute("data-thread") for t in page.locator("ul.threads > li").all()] == [ANN, BEN]
    assert page.locator("li.thread-item.new").get_attribute("data-thread") == ANN, "only what came since"
    assert new_count(alice.open("/")) is None

    # Messages shows who wrote, and filters by direction and by number.
    page = alice.open("/messages/?direction=inbound")
    assert page.locator(".messages > li").count() == 3
    assert page.locator(".messages > li .to").first.inner_text() == f"from {ANN}"
    page.get_by_label("Number").fill(BEN)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"phone=%2B15553330002"))
    assert page.locator(".messages > li .preview").all_inner_texts() == ["Wrong number, sorry"]
    page = alice.open("/messages/?phone=%2B12")
    assert "is not a phone number" in page.locator("p.error").inner_text()
    # And by the UTC days they were made in, both included (a day either side: the test
    # may cross midnight).
    today = datetime.now(UTC).date()
    days = {n: (today + timedelta(days=n)).isoformat() for n in (-2, -1, 1)}
    page = alice.open("/messages/?direction=inbound")
    page.get_by_label("From (UTC day)").fill(days[-1])
    page.get_by_label("To (UTC day)").fill(days[1])
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf"since={days[-1]}&until={days[1]}"))
    assert page.locator(".messages > li").count() == 3
    page.get_by_label("From (UTC day)").fill("")
    page.get_by_label("To (UTC day)").fill(days[-2])
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf"until={days[-2]}"))
    assert page.locator(".messages > li").count() == 0 and page.get_by_text("No messages match").is_visible()
    page = alice.open("/messages/?since=12/05/2026")
    assert "a day is written YYYY-MM-DD" in page.locator("p.error").inner_text()

    # A reply to a number on the suppression list is refused, and the thread says why.
    texts(front, BEN, "STOP")
    page = alice.open(f"/inbox/thread/?phone={BEN.replace('+', '%2B')}")
    assert "suppression list (replied STOP)" in page.locator("#reply .alert").inner_text()
    page.get_by_label("Message").fill("Sorry to bother you")
    page.get_by_role("button", name="Send reply").click()
    see(page.locator("#reply form .error")).to_contain_text("opted out")
    assert [d for d, _ in bubbles(page)] == ["inbound", "inbound"]

    # Another account sees none of it.
    carol = people()
    carol.signup(email("stranger"), PASSWORD)
    page = carol.open("/inbox/")
    assert page.get_by_text("No SMS received yet.").is_visible() and ANN not in page.content()
    page = carol.open(f"/inbox/thread/?phone={ANN.replace('+', '%2B')}")
    assert page.locator("ol.thread > li").count() == 0 and "order" not in page.content()


def set_hidden(page: Any, hidden: bool) -> None:
    """The tab hidden (another tab in front, the window minimised) or shown again, as the
    page's script sees it: document.hidden and a visibilitychange event."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_the_count_of_new_sms_follows_while_a_page_stays_open(people: Any, world: World) -> None:
    fay = people()
    fay.signup(email("live-count"), PASSWORD)
    phone = paired(fay, world, "Counter phone")
    page = fay.open("/devices/")
    badge = page.locator("nav[aria-label=Main] [data-unread]")
    assert page.locator("[data-new-sms]").get_attribute("data-poll-ms") == str(POLL_MS)
    assert new_count(page) is None
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/api/inbox/") else None)

    # SMS arrive while the page is open: the count appears and grows, with no reload.
    texts(phone, ANN, "Are you open?")
    see(badge).to_have_attribute("data-unread", "1")
    see(page.get_by_role("link", name="Inbox 1 new")).to_be_visible()
    texts(phone, BEN, "Hello")
    see(badge).to_have_attribute("data-unread", "2")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload"

    # Hidden, the page asks nothing; shown again, it asks at once.
    set_hidden(page, True)
    page.wait_for_timeout(POLL_MS)  # a read already sent comes back
    asked = len(polls)
    texts(phone, ANN, "Hello?")
    page.wait_for_timeout(4 * POLL_MS)
    assert len(polls) == asked and new_count(page) == "2"
    set_hidden(page, False)
    see(badge).to_have_attribute("data-unread", "3")
    assert badge.text_content() == "3 new"  # as the page renders it

    # The Inbox opened in another tab: the count goes here too.
    other = fay.context.new_page()
    other.goto("/inbox/")
    see(badge).to_have_count(0)
    other.close()


def thread_order(page: Any) -> list[str | None]:
    return [t.get_attribute("data-thread") for t in page.locator("ul.threads > li").all()]


def test_a_reply_moves_its_conversation_to_the_top_of_the_inbox(people: Any, world: World) -> None:
    erin = people()
    erin.signup(email("reply-order"), PASSWORD)
    phone = paired(erin, world, "Shop phone")
    texts(phone, ANN, "Do you have it in blue?")
    texts(phone, BEN, "Is the shop open today?")
    page = erin.open("/inbox/")
    assert thread_order(page) == [BEN, ANN]

    page.locator(f"li[data-thread='{ANN}'] a").click()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Message").fill("Yes, in blue and in red.")
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_selector("ol.thread > li[data-direction=outbound]")
    page.get_by_role("link", name="← Inbox").click()
    page.wait_for_url(re.compile(r"/inbox/$"))
    assert thread_order(page) == [ANN, BEN], "the conversation answered last comes first"
    ann = page.locator(f"li[data-thread='{ANN}']")
    assert ann.locator(".preview").inner_text() == "You: Yes, in blue and in red."
    assert ann.locator(".preview").get_attribute("data-direction") == "outbound"
    assert ann.locator(".via").inner_text() == "from Shop phone"
    assert "new" not in (ann.get_attribute("class") or "").split()

    # Ben writes again: his conversation is back on top, with his SMS as its preview.
    texts(phone, BEN, "Hello?")
    page = erin.open("/inbox/")
    assert thread_order(page) == [BEN, ANN]
    assert page.locator(f"li[data-thread='{BEN}'] .preview").inner_text() == "Hello?"
    assert page.locator("li.thread-item.new").get_attribute("data-thread") == BEN


def test_an_api_only_accounts_reply_goes_through_the_platform_pool(people: Any, world: World) -> None:
    operator = world.api()
    expect(operator.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    pool_phone = world.pair(operator, "Pool phone", pool=True)
    bob = people()
    bob.signup(email("pool-sender"), PASSWORD, "api_only")
    page = bob.open("/inbox/")
    assert page.get_by_text("When someone answers a message you sent").is_visible()
    status, sent = bob.api("POST", "/api/sms/send/", {"to": ANN, "message": "Your table is booked for 8 pm."})
    assert status == 202
    [task] = pool_phone.claim()
    assert task["id"] == sent["id"]
    expect(pool_phone.report(task["id"], "sent"), 200)
    texts(pool_phone, ANN, "Could we make it 9?")
    page = bob.open("/inbox/")
    page.locator(f"li[data-thread='{ANN}'] a").click()
    page.wait_for_selector("body[data-ready=true]")
    assert bubbles(page) == [("outbound", "Your table is booked for 8 pm."), ("inbound", "Could we make it 9?")]
    assert page.get_by_text("Sent through the platform pool of phones.").is_visible()
    assert page.locator("#reply select, #reply input[name=device_id]").count() == 0
    page.get_by_label("Message").fill("9 pm it is.")
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_selector("ol.thread > li[data-direction=outbound] >> nth=1")
    [task] = pool_phone.claim()
    assert (task["to"], task["message"]) == (ANN, "9 pm it is.")
    page = bob.open(f"/inbox/thread/?phone={ANN.replace('+', '%2B')}")
    assert pool_phone.device_id not in page.content(), "the operator's phones stay the operator's"
    shoot(page, "inbox-thread-api-only")


def test_suppressions_are_added_seen_exported_and_removed(people: Any, world: World, tmp_path: Path) -> None:
    dana = people()
    dana.signup(email("suppressions"), PASSWORD)
    phone = paired(dana, world, "Shop phone")
    page = dana.open("/suppressions/")
    assert page.get_by_text("No numbers on the list").is_visible()

    # Added on the page; and by a reply of STOP.
    page.get_by_label("Number").fill("+15557770001")
    page.get_by_label("Reason").fill('=HYPERLINK("http://example.com")')
    page.get_by_role("button", name="Add").click()
    page.get_by_text("Added +15557770001 to the list").wait_for()
    see(page.locator("#suppression-list tr[data-phone='+15557770001']")).to_be_visible()
    assert page.locator("[data-suppression-count]").inner_text() == "(1)"
    page.get_by_label("Number").fill("+15557770001")
    page.get_by_role("button", name="Add").click()
    see(page.locator("form .error")).to_contain_text("already")
    page.get_by_label("Number").fill("not a number")
    page.get_by_role("button", name="Add").click()
    see(page.locator("form .error")).to_contain_text("E.164")
    texts(phone, "+15557770002", "stop")
    page = dana.open("/suppressions/")
    rows = page.locator("#suppression-list tbody tr")
    assert [r.get_attribute("data-phone") for r in rows.all()] == ["+15557770001", "+15557770002"]
    assert page.locator("tr[data-phone='+15557770002'] td[data-label=Reason]").inner_text() == "replied STOP"
    assert duplicate_button_names(page) == []
    shoot(page, "suppressions")

    # Sends to them are refused; the export holds every entry, a formula kept as text.
    status, refused = dana.api(
        "POST", "/api/sms/send/", {"to": "+15557770002", "message": "x", "device_id": phone.device_id}
    )
    assert (status, refused["code"]) == (400, "recipient_opted_out")
    for i in range(50):
        assert dana.api("POST", "/api/suppressions/", {"phone": f"+1555888{i:04d}"})[0] == 201
    page = dana.open("/suppressions/")
    assert page.locator("#suppression-list tbody tr").count() == 50
    assert page.locator("[data-suppression-count]").inner_text() == "(52)"
    page.get_by_role("link", name="Next →").click()
    page.wait_for_url(re.compile(r"cursor="))
    assert [r.get_attribute("data-phone") for r in page.locator("#suppression-list tbody tr").all()] == [
        "+15558880048",
        "+15558880049",
    ], "in number order"
    page.get_by_role("link", name="← First").click()
    page.wait_for_url(re.compile(r"/suppressions/$"))
    assert page.locator("#suppression-list tbody tr").first.get_attribute("data-phone") == "+15557770001"
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert re.fullmatch(r"suppressions-\d{4}-\d\d-\d\d\.csv", download.value.suggested_filename)
    target = tmp_path / "export.csv"
    download.value.save_as(target)
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert rows[0] == ["phone", "reason", "added_at"]
    assert len(rows) == 53
    by_phone = {r[0]: r for r in rows[1:]}
    assert by_phone["+15557770001"][1] == '\'=HYPERLINK("http://example.com")'
    assert by_phone["+15557770002"][1] == "replied STOP"
    assert by_phone["+15558880049"][1] == "added by the sender"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r[2]) for r in rows[1:])

    # Removed on the page (after a confirmation): sends to it are taken again.
    page.locator("tr[data-phone='+15557770002']").get_by_role("button", name="Remove +15557770002").click()
    page.wait_for_load_state("load")
    see(page.locator("tr[data-phone='+15557770002']")).to_have_count(0)
    assert dana.dialogs[-1] == "Take +15557770002 off the list? Sends to it are taken again."
    status, _ = dana.api(
        "POST", "/api/sms/send/", {"to": "+15557770002", "message": "welcome back", "device_id": phone.device_id}
    )
    assert status == 202
    status, listed = dana.api("GET", "/api/suppressions/?limit=500", None)
    assert "+15557770002" not in [e["phone"] for e in listed["items"]] and len(listed["items"]) == 51
    with httpx.Client(base_url=world.server.base_url) as anonymous:
        assert anonymous.get("/suppressions/export.csv").status_code == 303
