"""Suppression lists from the dashboard: the numbers the account may not message (they
replied STOP, or the account added them), listed, added, removed. A send to one of them
is 400 ``recipient_opted_out`` (checked by the enqueue script)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter

from api.credentials import account_of, session_guard
from api.errors import not_found
from api.inputs import E164_POSSIBLE, PhoneNumber, ReasonText
from api.openapi import (
    BODY,
    CONFLICT,
    NOT_FOUND,
    PARAMETERS,
    SESSION,
    SESSION_AND_CSRF,
    SESSION_COOKIE_ONLY,
    SESSION_CSRF,
    documented,
)
from api.state import broker_of
from broker import errors
from broker.clock import iso_utc
from broker.suppressions import PAGE_MAX, Suppression

PhoneParameter = Annotated[
    str,
    Parameter(
        min_length=2,
        max_length=16,
        pattern=E164_POSSIBLE,
        description="The number in E.164, its `+` URL-encoded as `%2B` (a plain `+` is taken too).",
    ),
]
SuppressionCursor = Annotated[
    str | None,
    Parameter(min_length=2, max_length=16, pattern=E164_POSSIBLE, description="`next_cursor` of a page."),
]
SuppressionLimit = Annotated[int, Parameter(ge=1, le=PAGE_MAX)]


class NewSuppressionBody(msgspec.Struct, forbid_unknown_fields=True):
    phone: PhoneNumber
    reason: ReasonText = ""


class SuppressionOut(msgspec.Struct):
    phone: str
    reason: str
    created_at: str


class SuppressionPageOut(msgspec.Struct):
    items: list[SuppressionOut]
    next_cursor: str | None


def suppression_out(entry: Suppression) -> SuppressionOut:
    return SuppressionOut(entry.phone, entry.reason, iso_utc(entry.created_ms) or "")


class SuppressionsController(Controller):
    path = "/api/suppressions"
    guards = [session_guard]
    tags = ["dashboard: suppressions"]

    @get("/", operation_id="listSuppressions", **documented(PARAMETERS, SESSION, security=SESSION_COOKIE_ONLY))
    async def list_suppressions(
        self, request: Request[Any, Any, Any], limit: SuppressionLimit = 100, cursor: SuppressionCursor = None
    ) -> SuppressionPageOut:
        """The account's suppression list in number order, 100 a page."""
        page = await broker_of(request).suppressions.page(account_of(request), cursor, limit)
        return SuppressionPageOut([suppression_out(e) for e in page.items], page.next_cursor)

    @post(
        "/",
        status_code=201,
        operation_id="addSuppression",
        **documented(BODY, SESSION_CSRF, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def add(self, request: Request[Any, Any, Any], data: NewSuppressionBody) -> SuppressionOut:
        """Put a number on the list: sends to it are refused from now on (409
        ``already_suppressed`` when it is on the list already)."""
        broker = broker_of(request)
        account = account_of(request)
        if not await broker.suppressions.add(account, data.phone, data.reason):
            raise errors.AlreadySuppressed()
        entry = await broker.suppressions.get(account, data.phone)
        return suppression_out(entry)

    @delete(
        "/{phone:str}/",
        status_code=204,
        operation_id="removeSuppression",
        **documented(PARAMETERS, SESSION_CSRF, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def remove(self, request: Request[Any, Any, Any], phone: PhoneParameter) -> None:
        """Take a number off the list: sends to it are taken again."""
        try:
            await broker_of(request).suppressions.remove(account_of(request), phone)
        except errors.NotSuppressed:
            raise not_found("number on the suppression list") from None
