"""``SessionClient`` and ``AsyncSessionClient``: the account's own API, after a login.

An API key is send-only: it never reads anything back. To read the message history a
program logs in like the dashboard does (``POST /api/auth/login/``; the client keeps the
``sessionid`` cookie and echoes the ``csrftoken`` cookie in ``X-CSRFToken`` on unsafe
methods) and pages through ``GET /api/sms/``, newest first, following ``next_cursor``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec

from connecfy_client.connections import DEFAULT_BASE_URL, AsyncConnection, Connection
from connecfy_client.errors import from_response, no_answer
from connecfy_client.models import Message, MessagePage

MAX_PAGE = 500


class Account(msgspec.Struct, frozen=True):
    id: str
    email: str
    account_type: str  # "self_managed" or "api_only"
    operator: bool = False
    daily_quota: int = 0


def history_query(
    limit: int,
    cursor: str | None,
    status: str | None,
    device_id: str | None,
    direction: str | None,
    phone: str | None,
) -> dict[str, str]:
    """The query of one history page: the filters given, each once."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"page_size must be 1 to {MAX_PAGE}")
    given = {"cursor": cursor, "status": status, "device_id": device_id, "direction": direction, "phone": phone}
    return {"limit": str(limit), **{name: value for name, value in given.items() if value is not None}}


def _csrf(http: httpx.Client | httpx.AsyncClient) -> dict[str, str]:
    token = http.cookies.get("csrftoken")
    return {"X-CSRFToken": token} if token else {}


def _decoded(response: httpx.Response, type_: Any) -> Any:
    if not response.is_success:
        raise from_response(response.status_code, response.content, response.headers)
    if not response.content:
        return None
    return msgspec.json.decode(response.content, type=type_)


class SessionClient(Connection):
    """A logged-in account, blocking: ``login``, then ``messages()`` pages through the history."""

    def __init__(
        self, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 10.0, http_client: httpx.Client | None = None
    ) -> None:
        super().__init__(base_url, timeout, http_client)

    def _call(self, method: str, path: str, type_: Any, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise no_answer(exc) from exc
        return _decoded(response, type_)

    def login(self, email: str, password: str) -> Account:
        """Log in (401 ``AuthenticationFailed`` for any wrong pair); the session is kept."""
        account: Account = self._call("POST", "/api/auth/login/", Account, json={"email": email, "password": password})
        return account

    def logout(self) -> None:
        self._call("POST", "/api/auth/logout/", Any, headers=_csrf(self.http))

    def message(self, message_id: str) -> Message:
        """One message with its status timeline."""
        message: Message = self._call("GET", f"/api/sms/{message_id}/", Message)
        return message

    def pages(
        self,
        *,
        page_size: int = 50,
        status: str | None = None,
        device_id: str | None = None,
        direction: str | None = None,
        phone: str | None = None,
    ) -> Iterator[MessagePage]:
        """The history's pages, newest first, each fetched when the one before is used up."""
        cursor: str | None = None
        while True:
            query = history_query(page_size, cursor, status, device_id, direction, phone)
            page: MessagePage = self._call("GET", "/api/sms/", MessagePage, params=query)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def messages(
        self,
        *,
        page_size: int = 50,
        status: str | None = None,
        device_id: str | None = None,
        direction: str | None = None,
        phone: str | None = None,
    ) -> Iterator[Message]:
        """Every message of the history that matches, newest first, across pages."""
        for page in self.pages(
            page_size=page_size, status=status, device_id=device_id, direction=direction, phone=phone
        ):
            yield from page.items


class AsyncSessionClient(AsyncConnection):
    """The same as :class:`SessionClient` for asyncio: ``async for m in session.messages()``."""

    def __init__(
        self, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 10.0, http_client: httpx.AsyncClient | None = None
    ) -> None:
        super().__init__(base_url, timeout, http_client)

    async def _call(self, method: str, path: str, type_: Any, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise no_answer(exc) from exc
        return _decoded(response, type_)

    async def login(self, email: str, password: str) -> Account:
        account: Account = await self._call(
            "POST", "/api/auth/login/", Account, json={"email": email, "password": password}
        )
        return account

    async def logout(self) -> None:
        await self._call("POST", "/api/auth/logout/", Any, headers=_csrf(self.http))

    async def message(self, message_id: str) -> Message:
        message: Message = await self._call("GET", f"/api/sms/{message_id}/", Message)
        return message

    async def pages(
        self,
        *,
        page_size: int = 50,
        status: str | None = None,
        device_id: str | None = None,
        direction: str | None = None,
        phone: str | None = None,
    ) -> AsyncIterator[MessagePage]:
        cursor: str | None = None
        while True:
            query = history_query(page_size, cursor, status, device_id, direction, phone)
            page: MessagePage = await self._call("GET", "/api/sms/", MessagePage, params=query)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def messages(
        self,
        *,
        page_size: int = 50,
        status: str | None = None,
        device_id: str | None = None,
        direction: str | None = None,
        phone: str | None = None,
    ) -> AsyncIterator[Message]:
        async for page in self.pages(
            page_size=page_size, status=status, device_id=device_id, direction=direction, phone=phone
        ):
            for item in page.items:
                yield item
