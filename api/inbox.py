"""The Inbox's count of new SMS, for the dashboard's navigation to follow while a page is
open: the SMS received since the Inbox was last opened (see :mod:`broker.inbox`), two
reads of Redis in one round trip, whatever the history's size."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get

from api.credentials import account_of, session_guard
from api.openapi import SESSION, SESSION_COOKIE_ONLY, documented
from api.state import broker_of


class InboxOut(msgspec.Struct):
    new_sms: int  # received since the Inbox was last opened


class InboxController(Controller):
    path = "/api/inbox"
    guards = [session_guard]
    tags = ["dashboard: inbox"]

    @get("/", operation_id="inbox", **documented(SESSION, security=SESSION_COOKIE_ONLY))
    async def inbox(self, request: Request[Any, Any, Any]) -> InboxOut:
        """How many SMS came since the Inbox was last opened (reading it does not open it)."""
        return InboxOut(await broker_of(request).inbox.unread(account_of(request)))
