"""End-to-end encryption on the dashboard's Send page, in headless Chromium against a
real ``connecfy serve``:

- on a secure page (``http://127.0.0.1``, which browsers count as secure like HTTPS) the
  Encrypt option seals the typed text with WebCrypto; the server then holds only the
  envelope (its API, its Redis), which the Python SDK decrypts to the typed text, and
  which the phone's task carries with ``"encrypted": true``; the message's page and its
  conversation say it is encrypted and show no text; a missing passphrase is named and nothing is sent;
- on a plain-HTTP address (a name mapped to 127.0.0.1 inside Chromium, which is not a
  secure context) the page says why it cannot encrypt and offers no Encrypt option,
  and still sends plain messages.

Screenshots go to ``tests/.screenshots/`` like the other dashboard tests'.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from connecfy_client import e2e

from tests.support.browser import CHROMIUM_ARGS, Person, chromium_path, shoot
from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import PASSWORD, TO, World
from tests.support.people import email, paired
from tests.support.redis_dump import redis_bytes

PASSPHRASE = "kitchen table 🔑 Ørsted"
PLAIN_HOST = "connecfy-plain.test"  # resolved to 127.0.0.1 by the browser only


@pytest.fixture(scope="module")
def plain_http_browser(browser: Any) -> Iterator[Any]:
    """A second Chromium (from the same Playwright) in which PLAIN_HOST is 127.0.0.1: a
    page there is plain HTTP on a name that is not localhost, so not a secure context."""
    chromium = browser.browser_type.launch(
        executable_path=chromium_path(), args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {PLAIN_HOST} 127.0.0.1"]
    )
    yield chromium
    chromium.close()


def send_page(person: Person, world: World, who: str) -> tuple[Any, Any]:
    person.signup(email(who), PASSWORD)
    phone = paired(person, world, "Pixel 8")
    page = person.open("/send/")
    page.get_by_label("From device").select_option(phone.device_id)
    page.get_by_label("To").fill(TO)
    return page, phone


def test_the_send_page_encrypts_in_the_browser_and_the_server_holds_only_the_envelope(
    people: Any, world: World, server: ServerProcess
) -> None:
    dana: Person = people()
    page, phone = send_page(dana, world, "encrypt")
    assert page.evaluate("() => window.isSecureContext") is True
    assert page.locator("[data-encrypt-unavailable]").is_hidden()
    text = f"Grüße 🔐 the door code is {uuid.uuid4().hex[:6]}"
    page.get_by_label("Message").fill(text)
    page.get_by_label("Encrypt the text in this browser").check()
    # Without the passphrase: named, nothing sent.
    page.get_by_role("button", name="Send").click()
    error = page.locator("form .error")
    error.wait_for(state="visible")
    assert "Passphrase" in error.inner_text()
    status, listed = dana.api("GET", "/api/sms/", None)
    assert status == 200 and listed["items"] == []

    page.get_by_label("Passphrase").fill(PASSPHRASE)
    page.get_by_role("button", name="Send").click()
    page.locator("[data-sent-id]").wait_for()
    assert "Encrypted end to end" in page.locator("[data-sent]").inner_text()
    message_id = page.locator("[data-sent-id]").inner_text()
    shoot(page, "send-encrypted")

    status, stored = dana.api("GET", f"/api/sms/{message_id}/", None)
    assert status == 200 and stored["encrypted"] is True
    envelope = stored["message"]
    assert envelope.startswith("v1:") and "door code" not in envelope
    assert e2e.decrypt(envelope, PASSPHRASE) == text  # WebCrypto's envelope, opened by the SDK
    [task] = expect(phone.tasks(), 200)
    assert (task["id"], task["message"], task["encrypted"]) == (message_id, envelope, True)
    with redis.Redis(unix_socket_path=str(server.data_dir / "redis" / "redis.sock")) as client:
        held = redis_bytes(client)
    assert envelope.replace("/", "\\/").encode() in held
    for needle in (text, text.split()[-1], "door code"):
        assert needle.encode() not in held, f"Redis holds {needle!r}"

    shown = dana.open(f"/messages/{message_id}/")
    assert "Encrypted end to end" in shown.locator("[data-field=encrypted]").inner_text()
    assert "door code" not in shown.locator("main").inner_text()
    shoot(shown, "message-encrypted")
    thread = dana.open("/inbox/thread/?phone=%2B15551234567")  # the conversation with that number
    assert thread.locator(f"[data-message-id='{message_id}'] [data-encrypted]").is_visible()
    assert "door code" not in thread.locator("main").inner_text()


def test_on_plain_http_the_page_says_why_and_offers_no_encryption(
    plain_http_browser: Any, world: World, server: ServerProcess
) -> None:
    erin = Person(plain_http_browser, f"http://{PLAIN_HOST}:{server.port}")
    try:
        page, phone = send_page(erin, world, "plain")
        assert page.evaluate("() => window.isSecureContext") is False
        note = page.locator("[data-encrypt-unavailable]")
        assert note.is_visible() and "secure" in note.inner_text() and "HTTPS" in note.inner_text()
        assert page.locator("[data-encrypt-available]").is_hidden()
        assert page.get_by_label("Encrypt the text in this browser").is_disabled()
        page.get_by_label("Message").fill("plain and simple")
        page.get_by_role("button", name="Send").click()
        page.locator("[data-sent-id]").wait_for()
        shoot(page, "send-plain-http")
        [task] = expect(phone.tasks(), 200)
        assert task["message"] == "plain and simple" and "encrypted" not in task
    finally:
        erin.close()
