"""The dashboard tests' fixtures: a real server and Chromium (``tests/support/browser.py``),
an HTTP world on that server, and people, each a browser context of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.browser import Person, browser, server  # noqa: F401 - fixtures for this folder
from tests.support.e2e_server import ServerProcess
from tests.support.http_world import World


@pytest.fixture
def world(server: ServerProcess) -> Iterator[World]:
    w = World(server)
    yield w
    w.close()


@pytest.fixture
def people(browser: Any, server: ServerProcess) -> Iterator[Callable[..., Person]]:
    opened: list[Person] = []

    def person(timezone_id: str | None = None) -> Person:
        p = Person(browser, server.base_url, timezone_id)
        opened.append(p)
        return p

    yield person
    for p in opened:
        p.close()
