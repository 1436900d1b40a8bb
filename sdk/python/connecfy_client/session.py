"""``SessionClient`` and ``AsyncSessionClient``: the account's own API, after a login.

An API key is send-only: it never reads anything back. To read the message history a
program logs in like the dashboard does (``POST /api/auth/login/``; the client keeps the
``sessionid`` cookie and echoes the ``csrftoken`` cookie in ``X-CSRFToken`` on unsafe
methods) and pages through ``GET /api/sms/``, newest first, following ``next_cursor``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any, TypedDict, Unpack

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


class HistoryFilters(TypedDict, total=False):
    """What ``GET /api/sms/`` narrows the history to, in any combination."""

    status: str
    device_id: str
    direction: str  # "outbound" or "inbound"
    phone: str  # the conversation with this number (E.164)
    campaign_id: str
    since: datetime | str  # made then or later: an aware datetime, or ISO-8601 with a zone
    until: datetime | str  # made then or earlier


def history_query(limit: int, cursor: str | None, filters: HistoryFilters) -> dict[str, str]:
    """The query of one history page: the filters given, each once (a datetime written
    as ISO-8601, which must carry its time zone)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"page_size must be 1 to {MAX_PAGE}")
    query = {"limit": str(limit), **({"cursor": cursor} if cursor is not None else {})}
    for name, value in filters.items():
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"{name} must be an aware datetime (with a time zone)")
            value = value.isoformat()
        if value is not None:
            query[name] = str(value)
    return query


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

    def pages(self, *, page_size: int = 50, **filters: Unpack[HistoryFilters]) -> Iterator[MessagePage]:
        """The history's pages, newest first, each fetched when the one before is used up
        (``filters``: :class:`HistoryFilters`)."""
        cursor: str | None = None
        while True:
            query = history_query(page_size, cursor, filters)
            page: MessagePage = self._call("GET", "/api/sms/", MessagePage, params=query)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def messages(self, *, page_size: int = 50, **filters: Unpack[HistoryFilters]) -> Iterator[Message]:
        """Every message of the history that matches, newest first, across pages."""
        for page in self.pages(page_size=page_size, **filters):
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

    async def pages(self, *, page_size: int = 50, **filters: Unpack[HistoryFilters]) -> AsyncIterator[MessagePage]:
        cursor: str | None = None
        while True:
            query = history_query(page_size, cursor, filters)
            page: MessagePage = await self._call("GET", "/api/sms/", MessagePage, params=query)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def messages(self, *, page_size: int = 50, **filters: Unpack[HistoryFilters]) -> AsyncIterator[Message]:
        async for page in self.pages(page_size=page_size, **filters):
            for item in page.items:
                yield item
