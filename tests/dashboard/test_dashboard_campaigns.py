"""The Campaigns page in headless Chromium against a real ``connecfy serve``: a CSV file
dropped on the page (a DataTransfer in a drop event) or chosen with the file input is read
in the browser for its columns and a live preview of the first rows (encoding and
segments); a template naming a column the file lacks is refused by the server and said in
the form, storing nothing; the upload shows the exact validation report with a CSV of the
rejected rows; Start on the report and the campaign page's progress bar and counts follow
the campaign to ``done`` and the phone's sends without a reload; Cancel on another
campaign; an API-only account's file over 10 MiB is refused in the form (413), and its
campaign over the daily quota shows as paused, with why and when it tries again. Screenshots go to ``tests/.screenshots/`` like the other dashboard tests'."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

try:
    from playwright.sync_api import expect as see
except ImportError:  # the browser fixture then fails under CI and skips elsewhere
    see = None

from tests.support.browser import Person, shoot
from tests.support.e2e_server import expect
from tests.support.http_world import PASSWORD, World
from tests.support.people import email, paired

LONG_CODE = "A" * 150
# Row 2 has no number, row 3 repeats row 1's number written otherwise, row 5's number
# opted out; row 1's text takes two GSM-7 segments, row 4's ("Zoë") is UCS-2.
LIST = (
    "name,cell,code\r\n"
    f"Ann,+15557000001,{LONG_CODE}\r\n"
    "Bob,12ab,B2\r\n"
    "Ann again,+1 555 700 0001,A3\r\n"
    "Zoë,+15557000004,Z4\r\n"
    "Eve,+15557000005,E5\r\n"
)
TEMPLATE = "Hi {name}, your code is {code}."
OPTED_OUT = "+15557000005"


def drop_file(page: Any, name: str, text: str) -> None:
    """What a person dragging a file onto the drop zone does: a drop event with a DataTransfer."""
    page.evaluate(
        """([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, { type: "text/csv" }));
            const zone = document.querySelector("[data-drop-zone]");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        [name, text],
    )


def campaigns(person: Person) -> list[dict[str, Any]]:
    status, page = person.api("GET", "/api/campaigns/", None)
    assert status == 200
    items: list[dict[str, Any]] = page["items"]
    return items


def test_upload_preview_report_start_progress_and_cancel(people: Any, world: World) -> None:
    erin: Person = people()
    erin.signup(email("campaign"), PASSWORD)
    phone = paired(erin, world, "Pixel 7")
    assert erin.api("POST", "/api/suppressions/", {"phone": OPTED_OUT})[0] == 201
    page = erin.open("/campaigns/")
    see(page.get_by_role("link", name="Campaigns")).to_have_attribute("aria-current", "page")
    see(page.locator("#campaign-list")).to_contain_text("No campaigns yet.")

    drop_file(page, "spring.csv", LIST)
    see(page.locator("[data-file-chosen]")).to_contain_text("spring.csv")
    column = page.get_by_label("Phone column")
    see(column).to_be_enabled()
    assert column.locator("option").all_inner_texts() == ["name", "cell", "code"]
    column.select_option("cell")
    area = page.get_by_label("Template")
    area.fill("Hi ")
    page.get_by_role("button", name="Insert the column name").click()
    area.press("End")
    area.type(", your code is ")
    page.get_by_role("button", name="Insert the column code").click()
    area.press("End")
    area.type(".")
    assert area.input_value() == TEMPLATE

    rows = page.locator("[data-preview-row]")
    see(rows).to_have_count(5)
    first = rows.nth(0)
    see(first.locator("td").nth(1)).to_have_text("+15557000001")
    see(first.locator("td").nth(2)).to_have_text(f"Hi Ann, your code is {LONG_CODE}.")
    see(first.locator("[data-preview-encoding]")).to_have_text("GSM-7")
    see(first.locator("[data-preview-segments]")).to_have_text("2")
    zoe = rows.nth(3)
    see(zoe.locator("td").nth(2)).to_have_text("Hi Zoë, your code is Z4.")
    see(zoe.locator("[data-preview-encoding]")).to_have_text("UCS-2")
    see(zoe.locator("[data-preview-segments]")).to_have_text("1")
    page.get_by_label("Name", exact=True).fill("Spring sale")
    shoot(page, "campaigns-new")

    # A column the file lacks: the preview warns, the server refuses it, nothing is stored.
    area.fill("Hi {nickname}")
    see(page.locator("[data-template-note]")).to_contain_text("no column \u201cnickname\u201d")
    page.get_by_role("button", name="Upload and check").click()
    error = page.locator("form [role=alert]")
    see(error).to_be_visible()
    assert error.inner_text().startswith("Template: "), error.inner_text()
    assert "nickname" in error.inner_text()
    see(area).to_have_attribute("aria-invalid", "true")
    assert page.locator("[data-upload-report]").is_hidden()
    assert campaigns(erin) == []

    area.fill(TEMPLATE)
    page.get_by_role("button", name="Upload and check").click()
    report = page.locator("[data-upload-report]")
    see(report).to_be_visible()
    facts = {
        key: report.locator(f"[data-report={key}]").inner_text()
        for key in ("rows", "valid", "invalid_rows", "duplicates", "opted_out", "max_segments")
    }
    assert facts == {
        "rows": "5",
        "valid": "2",
        "invalid_rows": "1",
        "duplicates": "1",
        "opted_out": "1",
        "max_segments": "2 segments",
    }
    assert report.locator("[data-invalid-row]").count() == 1
    bad = report.locator("[data-invalid-row='2'] td").all_inner_texts()
    assert bad == ["2", "cell", "'12ab' is not a phone number"], bad
    with page.expect_download() as download_info:
        report.get_by_role("link", name="Download rejected rows").click()
    rejected = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert rejected[0] == ["row", "field", "problem", "name", "cell", "code"]
    assert rejected[1:] == [["2", "cell", "'12ab' is not a phone number", "Bob", "12ab", "B2"]]
    see(page.locator("#campaign-list [data-campaign-id]")).to_have_count(1)
    [draft] = campaigns(erin)
    assert draft["state"] == "draft" and draft["phone_column"] == "cell" and draft["device_id"] == phone.device_id
    shoot(page, "campaigns-report")

    report.get_by_role("button", name="Start").click()
    page.wait_for_url(f"**/campaigns/{draft['id']}/")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate("() => { window.stillTheSamePage = true; }")
    bar = page.locator("[data-progress]")
    see(page.locator("[data-campaign-state]")).to_have_text("done", timeout=20_000)
    assert bar.get_attribute("max") == "2"
    assert page.evaluate("() => document.querySelector('[data-progress]').value") == 2
    see(page.locator("[data-state-note]")).to_have_text("Done: every valid row is queued.")
    see(page.get_by_role("button", name="Start")).to_be_hidden()

    claimed: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while len(claimed) < 2:
        assert time.monotonic() < deadline, claimed
        claimed += phone.claim()
    assert sorted(t["message"] for t in claimed) == [
        "Hi Ann, your code is " + LONG_CODE + ".",
        "Hi Zoë, your code is Z4.",
    ]
    for task in claimed:
        expect(phone.report(task["id"], "sent"), 200)
    see(page.locator("[data-count=sent]")).to_have_text("2", timeout=10_000)
    see(page.locator("[data-progress-text]")).to_have_text("2 of 2 queued \u00b7 2 sent")
    assert page.evaluate("() => window.stillTheSamePage") is True, "the counts changed without a reload"
    link = page.get_by_role("link", name="Its messages")
    assert link.get_attribute("href") == f"/messages/?campaign_id={draft['id']}"
    see(page.locator("[data-campaign-report] [data-report=valid]")).to_have_text("2")
    shoot(page, "campaign-done")

    # Another campaign, chosen with the file input, cancelled from its page.
    page = erin.open("/campaigns/")
    page.locator("[data-campaign-file]").set_input_files(
        files=[{"name": "later.csv", "mimeType": "text/csv", "buffer": b"cell\n+15557000009\n"}]
    )
    see(page.locator("[data-file-chosen]")).to_contain_text("later.csv")
    see(page.get_by_label("Phone column")).to_have_value("cell")
    page.get_by_label("Template").fill("See you soon")
    page.get_by_label("Name", exact=True).fill("Later")
    page.get_by_role("button", name="Upload and check").click()
    see(page.locator("[data-upload-report] [data-report=valid]")).to_have_text("1")
    page.get_by_role("link", name="Open the campaign").click()
    page.wait_for_selector("body[data-ready=true]")
    see(page.locator("[data-campaign-state]")).to_have_text("draft")
    see(page.get_by_role("button", name="Start")).to_be_visible()
    page.get_by_role("button", name="Cancel campaign").click()
    see(page.locator("[data-campaign-state]")).to_have_text("cancelled")
    see(page.locator("[data-state-note]")).to_have_text("Cancelled: nothing more is queued.")
    see(page.get_by_role("button", name="Start")).to_be_hidden()
    see(page.get_by_role("button", name="Cancel campaign")).to_be_hidden()
    assert erin.dialogs and erin.dialogs[-1].startswith("Cancel this campaign?")
    states = {c["name"]: c["state"] for c in campaigns(erin)}
    assert states == {"Spring sale": "done", "Later": "cancelled"}
    shoot(page, "campaign-cancelled")

    page = erin.open("/campaigns/")
    see(page.locator("#campaign-list [data-campaign-id]")).to_have_count(2)


def test_an_api_only_account_uploads_without_a_device_and_sees_a_pause(people: Any) -> None:
    frank: Person = people()
    frank.signup(email("campaign-api"), PASSWORD, account_type="api_only")
    page = frank.open("/campaigns/")
    see(page.get_by_role("heading", name="New campaign")).to_be_visible()
    see(page.get_by_text("Sent through the platform pool of phones.")).to_be_visible()
    assert page.get_by_label("From device").count() == 0
    # A file over 10 MiB: the server's 413 is said in the form, nothing is stored.
    big = b"phone,name\n" + b"+15557000001,Ann\n" * (10 * 1024 * 1024 // 17 + 1)
    page.locator("[data-campaign-file]").set_input_files(
        files=[{"name": "big.csv", "mimeType": "text/csv", "buffer": big}]
    )
    see(page.get_by_label("Phone column")).to_have_value("phone")
    page.get_by_label("Template").fill("Hi {name}")
    page.get_by_role("button", name="Upload and check").click()
    error = page.locator("form [role=alert]")
    see(error).to_have_text("Name: 'name' must be 1 to 64 characters")
    page.get_by_label("Name", exact=True).fill("Too big")
    page.get_by_role("button", name="Upload and check").click()
    see(error).to_contain_text("CSV file: ")
    assert f"a campaign takes at most {10 * 1024 * 1024:,}" in error.inner_text(), error.inner_text()
    assert page.locator("[data-upload-report]").is_hidden()
    status, listed = frank.api("GET", "/api/campaigns/", None)
    assert status == 200 and listed["items"] == []

    # 101 rows against an API-only account's daily quota of 100: the campaign pauses, and says why.
    rows = "".join(f"+1555800{i:04d},Name{i}\n" for i in range(101))
    page.locator("[data-campaign-file]").set_input_files(
        files=[{"name": "many.csv", "mimeType": "text/csv", "buffer": f"phone,name\n{rows}".encode()}]
    )
    see(page.locator("[data-file-chosen]")).to_contain_text("many.csv")
    page.get_by_label("Name", exact=True).fill("Over the quota")
    page.get_by_role("button", name="Upload and check").click()
    see(page.locator("[data-upload-report] [data-report=valid]")).to_have_text("101")
    page.locator("[data-upload-report]").get_by_role("button", name="Start").click()
    page.wait_for_url("**/campaigns/*/")
    page.wait_for_selector("body[data-ready=true]")
    see(page.locator("[data-campaign-state]")).to_have_text("paused", timeout=20_000)
    note = page.locator("[data-state-note]")
    see(note).to_contain_text("Paused: the account's daily quota is used up. It resumes by itself (next try: ")
    assert note.locator("time").get_attribute("datetime")
    see(page.locator("[data-progress-text]")).to_have_text("100 of 101 queued \u00b7 0 sent")
    see(page.get_by_role("button", name="Cancel campaign")).to_be_visible()
    shoot(page, "campaign-paused")
