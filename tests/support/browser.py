"""Headless Chromium (Debian's ``chromium`` package, driven by Playwright for Python)
against a real ``connecfy serve``, for the dashboard tests.

One browser per test module (the dashboard's); each person gets a browser context of their own (own
cookies). :func:`shoot` writes desktop- and phone-width screenshots of a page into
``tests/.screenshots/`` (ignored by git, overwritten on every run) and checks the phone
width needs no horizontal scrolling.
Without Chromium or Playwright the tests skip on a workstation and fail when ``CI`` is set.

The documentation's screenshots in ``docs/images/`` are the same pictures, and they change
only through this command::

    .venv/bin/python -m tests.support.browser [pytest options, e.g. -x]

It clears ``tests/.screenshots/``, runs the dashboard tests (``tests/dashboard``), and only
when they all pass copies into ``docs/images/`` every screenshot that is new there or shows
other pixels (an image whose pixels are unchanged is left as it is), listing them, and names
the images there that no test takes any more (left alone too); commit the changes wanted.
No test run writes to ``docs/images/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support.e2e_server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / ".screenshots"  # every test run's pictures (git ignores them)
DOC_IMAGES = ROOT / "docs" / "images"  # the committed ones: see refresh_doc_images()
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Many sign-ups and pairings from 127.0.0.1 within a minute: the per-address auth limit
# is raised for this server only (the limit itself is tested elsewhere).
ASSET_TYPES = frozenset({"stylesheet", "script", "image", "font", "media"})
SERVER_SETTINGS = {"CONNECFY_AUTH_PER_MINUTE": "1000", "CONNECFY_AUTH_BURST": "1000"}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing; CI must install it (.ci/run)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped, not session-scoped: while Playwright's sync API is open its event
    loop counts as running, and the asyncio tests of later modules could not start theirs."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip)")
    executable = chromium_path()
    if executable is None:
        _missing("chromium (Debian package)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("dashboard"), settings=SERVER_SETTINGS).start()
    try:
        yield process
    finally:
        process.stop()


class Person:
    """One person at a browser: their own context (cookies) and page on the server, in
    the browser's time zone or in ``timezone_id`` (an IANA name)."""

    def __init__(self, browser: Any, base_url: str, timezone_id: str | None = None) -> None:
        zone = {"timezone_id": timezone_id} if timezone_id else {}
        self.context = browser.new_context(base_url=base_url, viewport=DESKTOP, **zone)
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # An asset refused by the Content-Security-Policy (anything from elsewhere) or missing
        # is an error; a refused API call (fetch) is the page's business.
        self.page.on("console", self._console)
        self.page.on("response", self._asset)
        # One handler for the page's life: confirm() is accepted once, and every dialog's
        # text is kept so a test can see what was asked (and that nothing else popped up).
        self.dialogs: list[str] = []
        self.page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _asset(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type in ASSET_TYPES:
            self.errors.append(f"{response.status} {response.url}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def open(self, path: str) -> Any:
        self.page.goto(path)
        self.page.wait_for_selector("body[data-ready=true]")
        return self.page

    def signup(self, email: str, password: str, account_type: str = "self_managed") -> None:
        page = self.open("/signup/")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.locator(f"input[name=account_type][value={account_type}]").check()
        page.get_by_role("button", name="Sign up").click()
        page.wait_for_url(lambda url: urlparse(url).path == "/")

    def login(self, email: str, password: str, path: str = "/") -> None:
        page = self.open(f"/login/?next={path}")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: urlparse(url).path == path)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A JSON API call from inside the page, as the dashboard's own script makes it."""
        status, answer = self.page.evaluate(
            """async ([method, path, body]) => {
                const headers = {"X-CSRFToken": document.cookie.match(/csrftoken=([^;]+)/)[1]};
                const init = {method, headers, credentials: "same-origin"};
                if (body !== null) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
                const r = await fetch(path, init);
                const text = await r.text();
                return [r.status, text ? JSON.parse(text) : null];
            }""",
            [method, path, body],
        )
        return status, answer

    def close(self) -> None:
        assert not self.errors, f"script errors on the page: {self.errors}"
        self.context.close()


def unlabelled_controls(page: Any) -> list[str]:
    """Visible form controls that have no label a screen reader would announce."""
    return page.evaluate("""() => [...document.querySelectorAll("input, select, textarea")]
        .filter((el) => el.type !== "hidden" && el.offsetParent !== null)
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
        .map((el) => el.outerHTML)""")


def horizontal_overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def shoot(page: Any, name: str) -> None:
    """``<name>-desktop.png`` and ``<name>-phone.png`` of the whole page; at phone width
    nothing may stick out sideways and every control must have a label."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => { document.querySelector('.toast').hidden = true; }")
    assert unlabelled_controls(page) == [], name
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) <= 0, f"{name}: wider than a {PHONE['width']} px phone"
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def same_pixels(a: Path, b: Path) -> bool:
    """Whether two images show the same pixels (their PNG bytes may still differ)."""
    from PIL import Image, ImageChops

    with Image.open(a) as first, Image.open(b) as second:
        if first.size != second.size:
            return False
        # alpha_only=False: an RGBA image's bounding box is otherwise its alpha channel's
        # alone, and two opaque pictures would always look the same.
        return ImageChops.difference(first.convert("RGBA"), second.convert("RGBA")).getbbox(alpha_only=False) is None


def refresh_doc_images(pytest_args: list[str]) -> int:
    """Run the dashboard tests and, when they pass, copy their screenshots to ``docs/images/``."""
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    command = [sys.executable, "-m", "pytest", "tests/dashboard", *pytest_args]
    returncode = subprocess.run(command, cwd=ROOT).returncode
    shots = sorted(SCREENSHOTS.glob("*.png"))
    if returncode != 0:
        print(f"pytest failed (exit {returncode}): docs/images/ left as it was", file=sys.stderr)
        return 1
    if not shots:
        print("no screenshots were taken (is chromium installed?): docs/images/ left as it was", file=sys.stderr)
        return 1
    DOC_IMAGES.mkdir(parents=True, exist_ok=True)
    changed = 0
    for shot in shots:
        target = DOC_IMAGES / shot.name
        if target.exists() and same_pixels(shot, target):
            continue
        print(f"{'changed' if target.exists() else 'new':>8}  docs/images/{shot.name}")
        shutil.copyfile(shot, target)
        changed += 1
    taken = {shot.name for shot in shots}
    for stale in sorted(DOC_IMAGES.glob("*-desktop.png")) + sorted(DOC_IMAGES.glob("*-phone.png")):
        if stale.name not in taken:
            print(f"   stale  docs/images/{stale.name} (no test takes it any more)")
    print(f"{len(shots)} screenshots, {changed} new or changed in docs/images/")
    return 0


if __name__ == "__main__":
    sys.exit(refresh_doc_images(sys.argv[1:]))
