"""The dashboard against hostile input, in headless Chromium and over plain HTTP against a
real ``connecfy serve``: the login's ``next`` never leads off the server, odd query values
get a page (not a JSON 400 or a 500), pages are not sniffed or cached, names typed by
people are shown as text, per-row buttons say which row they act on, and a person who is
not the operator gets nothing of the operator's.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from api.dashboard.pages import local_next
from tests.support.browser import Person
from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PASSWORD, TO, World
from tests.support.people import duplicate_button_names, email, register

XSS = "<img src=x onerror=alert(1)>"
# Each would take a browser elsewhere (TAB, CR and LF are dropped from URLs, "\" reads
# as "/") or could not be sent in a Location header (non-ASCII).
OFF_SERVER = [
    "/\t/evil.example",
    "/\r\n/evil.example",
    "https://evil.example",
    "//evil.example",
    "/\\evil",
    "\\\\evil.example",
    "/\u4e2d",
    "javascript:alert(1)",
    "evil.example",
]


@pytest.fixture(scope="module")
def operator_created(server: ServerProcess) -> None:
    server.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)


def logged_in_operator(world: World) -> Any:
    operator_api = world.api()
    expect(operator_api.post("/api/auth/login/", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 200)
    return operator_api


def test_local_next_accepts_a_path_on_this_server_only() -> None:
    for path in ("/", "/devices/", "/messages/?status=sent&device_id=abc", "/a%2F%2Fb", "/~x!$&'()*+,;=:@"):
        assert local_next(path) == path
    for value in [None, "", "devices/", "/ /evil", "/\x7f", "/\x00", "/\v/evil", *OFF_SERVER]:
        assert local_next(value) == "/", repr(value)


def data_then(page_html: str) -> str:
    [found] = re.findall(r'data-then="([^"]*)"', page_html)
    return html.unescape(found)


def test_login_next_never_leads_off_the_server(server: ServerProcess, world: World) -> None:
    signed_up = world.signup()
    with (
        httpx.Client(base_url=server.base_url, cookies=signed_up.client.cookies) as user,
        httpx.Client(base_url=server.base_url) as anonymous,
    ):
        for target in OFF_SERVER:
            query = f"/login/?next={quote(target, safe='/:')}"
            answer = user.get(query)
            assert (answer.status_code, answer.headers["location"]) == (303, "/"), (query, answer.text)
            page = anonymous.get(query)
            assert page.status_code == 200 and data_then(page.text) == "go:/", query
        # A path on this server is kept.
        answer = user.get("/login/", params={"next": "/messages/?status=sent"})
        assert (answer.status_code, answer.headers["location"]) == (303, "/messages/?status=sent")
        assert data_then(anonymous.get("/login/", params={"next": "/send/"}).text) == "go:/send/"


def test_login_next_not_in_ascii_goes_home_instead_of_an_error(server: ServerProcess, world: World) -> None:
    """It answered 500: a Location header is latin-1."""
    signed_up = world.signup()
    with httpx.Client(base_url=server.base_url, cookies=signed_up.client.cookies) as user:
        answer = user.get("/login/?next=/%E4%B8%AD")
        assert (answer.status_code, answer.headers.get("location")) == (303, "/"), answer.text


def test_login_next_with_a_tab_goes_home_in_the_browser(people: Any, server: ServerProcess) -> None:
    address = email("ivan")
    ivan = people()
    ivan.signup(address, PASSWORD)
    page = ivan.open("/login/?next=/%09/evil.example")
    assert page.url == f"{server.base_url}/", "logged in: straight home"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login/$"))
    page = ivan.open("/login/?next=/%09/evil.example")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.base_url}/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.url == f"{server.base_url}/"


def test_odd_query_values_get_a_page_and_pages_are_neither_sniffed_nor_cached(
    server: ServerProcess, world: World, operator_created: None
) -> None:
    signed_up = world.signup()
    with (
        httpx.Client(base_url=server.base_url, cookies=signed_up.client.cookies) as user,
        httpx.Client(base_url=server.base_url, cookies=logged_in_operator(world).client.cookies) as operator,
    ):
        for value in ("maybe", "1", "TRUE", "", "true"):
            for who, client in (("person", user), ("operator", operator)):
                page = client.get("/devices/add/", params={"pool": value})
                assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), value
                pool = value == "true" and who == "operator"  # only "true", and only for the operator
                assert f'data-pool="{"true" if pool else "false"}"' in page.text, (who, value)
                assert ("Add a platform pool phone" if pool else "Add a device") in page.text, (who, value)
        # An image URL: a JSON 400 without the code, never a 500.
        missing = user.get("/devices/pairing-qr.svg")
        assert missing.status_code == 400 and missing.json()["code"] == "invalid_request", missing.text
        for path in ("/devices/", "/settings/", "/login/"):
            headers = user.get(path).headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["cache-control"] == "no-store", path


def clean(person: Person, page: Any) -> None:
    """Nothing typed by a person became markup, and the page logged no errors."""
    injected = page.evaluate("""() => document.querySelectorAll("img[src=x], [onerror]").length""")
    assert injected == 0, page.url
    assert person.errors == [], (page.url, person.errors)
    assert person.dialogs == [], (page.url, person.dialogs)


def test_names_are_shown_as_text_and_row_buttons_say_which_row(
    people: Any, world: World, operator_created: None
) -> None:
    world.pair(logged_in_operator(world), XSS, pool=True)

    address = email("judy")
    judy = people()
    judy.signup(address, PASSWORD)
    # A phone named like markup pairs while the Add Device page watches (the page's script shows its name).
    page = judy.open("/devices/add/")
    page.wait_for_function("() => /^[A-Z0-9]{8}$/.test(document.querySelector('[data-pairing-code]').textContent)")
    phone = register(world, page.locator("[data-pairing-code]").inner_text(), XSS)
    see_paired = page.locator(f"[data-paired-device='{phone.device_id}']")
    see_paired.wait_for()
    assert XSS in see_paired.inner_text()
    clean(judy, page)
    status, code = judy.api("POST", "/api/devices/pairing-codes/", None)
    assert status == 201
    register(world, code["code"], "Pixel A")
    for name in (XSS, "alpha"):
        assert judy.api("POST", "/api/api-keys/", {"name": name})[0] == 201
    for text in (XSS, "second"):
        status, sent = judy.api("POST", "/api/sms/send/", {"to": TO, "message": text, "device_id": phone.device_id})
        assert status == 202, sent
    assert judy.api("POST", "/api/account/limit-requests/", {"reason": XSS, "daily_quota": 500})[0] == 201
    other_account = world.signup()
    expect(other_account.post("/api/account/limit-requests/", json={"reason": "more", "daily_quota": 600}), 201)

    for path in (
        "/",
        "/devices/",
        "/send/",
        "/messages/",
        f"/messages/?device_id={phone.device_id}",
        "/api-keys/",
        "/webhooks/",
        "/settings/",
    ):
        page = judy.open(path)
        page.locator("details").evaluate_all("(all) => all.forEach((d) => { d.open = true; })")
        clean(judy, page)
        assert duplicate_button_names(page) == [], path
    page = judy.open("/devices/")
    # Never seen, with two messages waiting: the offline banner names it too, as text.
    page.locator(f"[data-offline-device='{phone.device_id}']").wait_for()
    clean(judy, page)
    assert page.locator("[data-live-devices] h2").get_by_text(XSS, exact=True).count() == 1, "shown as typed"
    assert page.locator("[data-offline-banner] strong").get_by_text(XSS, exact=True).count() == 1
    for name in (XSS, "Pixel A"):
        assert page.get_by_role("button", name=f"Remove {name}", exact=True).count() == 1
        assert page.get_by_role("button", name=f"Save limits of {name}", exact=True).count() == 1
    page = judy.open("/messages/")
    assert page.locator(".messages .preview", has_text=XSS).count() == 1
    assert page.locator("button[data-action=cancel-message]").count() == 2

    # Revoking asks once, by name, however many pages were opened before.
    page = judy.open("/api-keys/")
    assert page.get_by_role("button", name="Revoke alpha", exact=True).count() == 1
    page.get_by_role("button", name=f"Revoke {XSS}", exact=True).click()
    see_gone = page.locator("#key-list tr", has_text=XSS)
    see_gone.wait_for(state="detached")
    assert judy.dialogs == [f"Revoke {XSS}? Senders using it get 401 from now on."]
    assert [k["name"] for k in judy.api("GET", "/api/api-keys/")[1]] == ["alpha"]
    judy.dialogs.clear()

    # The operator reads the reason and the pool phone's name as text.
    operator = people()
    operator.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, "/settings/")
    page = operator.page
    page.wait_for_selector("body[data-ready=true]")
    clean(operator, page)
    assert duplicate_button_names(page) == []
    assert page.locator(".request .quote", has_text=XSS).count() == 1
    assert page.locator("table.pool", has_text=XSS).count() == 1
    for who in (address, other_account.account["email"]):
        assert page.get_by_role("button", name=f"Approve the request of {who}", exact=True).count() == 1
        assert page.get_by_role("button", name=f"Reject the request of {who}", exact=True).count() == 1


def test_a_person_who_is_not_the_operator_gets_no_operator_section_or_pool_code(
    people: Any, world: World, operator_created: None
) -> None:
    kim = people()
    kim.signup(email("kim"), PASSWORD)
    page = kim.open("/settings/")
    assert page.locator("#operator").count() == 0
    assert page.get_by_text("Requests waiting for you").count() == 0
    assert page.get_by_text("Platform pool phones").count() == 0
    assert page.locator("a[href*='pool=true']").count() == 0

    page = kim.open("/devices/add/?pool=true")
    assert page.locator("h1").inner_text() == "Add a device"
    assert page.locator("[data-pairing]").get_attribute("data-pool") == "false"
    page.wait_for_function("() => /^[A-Z0-9]{8}$/.test(document.querySelector('[data-pairing-code]').textContent)")
    phone = register(world, page.locator("[data-pairing-code]").inner_text(), "Kim's phone")
    page.wait_for_selector(f"[data-paired-device='{phone.device_id}']")
    status, own = kim.api("GET", "/api/devices/")
    assert status == 200 and [d["device_id"] for d in own] == [phone.device_id], "the code paired Kim's own phone"
    pool = expect(logged_in_operator(world).get("/api/devices/", params={"pool": "true"}), 200)
    assert phone.device_id not in [d["device_id"] for d in pool]
