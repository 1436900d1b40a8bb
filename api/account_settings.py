"""The account's own settings from the dashboard: for now the country a campaign file's
national numbers are read in."""

from __future__ import annotations

import enum
from typing import Any

import msgspec
from litestar import Controller, Request, get, patch

from api.credentials import account_of, session_guard
from api.openapi import BODY, SESSION, SESSION_AND_CSRF, SESSION_COOKIE_ONLY, SESSION_CSRF, documented
from api.state import broker_of
from broker.records import Account
from broker.validation import COUNTRY_CODES

Country = enum.StrEnum("Country", {code: code for code in COUNTRY_CODES})  # type: ignore[misc]
"""An ISO 3166 code such as ``US`` or ``DE``: one whose numbers ``phonenumbers`` reads."""


class SettingsBody(msgspec.Struct, forbid_unknown_fields=True):
    # null clears it: the server's CONNECFY_DEFAULT_COUNTRY applies
    default_country: Country | None = None  # type: ignore[valid-type]


class SettingsOut(msgspec.Struct):
    default_country: str | None  # the account's own; null: the server's applies
    server_default_country: str | None  # CONNECFY_DEFAULT_COUNTRY, null when unset


def settings_out(request: Request[Any, Any, Any], account: Account) -> SettingsOut:
    return SettingsOut(account.default_country or None, broker_of(request).settings.default_country.upper() or None)


class AccountSettingsController(Controller):
    path = "/api/account/settings"
    guards = [session_guard]
    tags = ["dashboard: account"]

    @get("/", operation_id="getAccountSettings", **documented(SESSION, security=SESSION_COOKIE_ONLY))
    async def read(self, request: Request[Any, Any, Any]) -> SettingsOut:
        """The account's settings."""
        return settings_out(request, account_of(request))

    @patch("/", operation_id="setAccountSettings", **documented(BODY, SESSION_CSRF, security=SESSION_AND_CSRF))
    async def change(self, request: Request[Any, Any, Any], data: SettingsBody) -> SettingsOut:
        """Set the country a campaign file's national numbers (without `+`) are read in
        (an ISO 3166 code such as `US`); null clears it."""
        country = data.default_country.value if data.default_country is not None else None
        account = await broker_of(request).accounts.set_default_country(account_of(request), country)
        return settings_out(request, account)
