"""Send-only API keys: created (shown once), listed, revoked from the dashboard."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post

from api.credentials import account_of, session_guard
from api.errors import not_found
from api.inputs import Name, PathId
from api.openapi import (
    BODY,
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
from broker.records import ApiKeyInfo


class NewKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class NewKeyOut(msgspec.Struct):
    id: str
    name: str
    api_key: str
    created_at: str


class KeyOut(msgspec.Struct):
    id: str
    name: str
    created_at: str
    last_used_at: str | None


def key_out(info: ApiKeyInfo) -> KeyOut:
    return KeyOut(info.id, info.name, iso_utc(info.created_ms) or "", iso_utc(info.last_used_ms))


class ApiKeysController(Controller):
    path = "/api/api-keys"
    guards = [session_guard]
    tags = ["dashboard: API keys"]

    @post(
        "/", status_code=201, operation_id="createApiKey", **documented(BODY, SESSION_CSRF, security=SESSION_AND_CSRF)
    )
    async def create(self, request: Request[Any, Any, Any], data: NewKeyBody) -> NewKeyOut:
        """A new send-only key; this response is the only time it is shown."""
        created = await broker_of(request).api_keys.create(account_of(request), data.name)
        return NewKeyOut(created.info.id, created.info.name, created.api_key, iso_utc(created.info.created_ms) or "")

    @get("/", operation_id="listApiKeys", **documented(SESSION, security=SESSION_COOKIE_ONLY))
    async def list_keys(self, request: Request[Any, Any, Any]) -> list[KeyOut]:
        """The account's keys, without their secrets."""
        return [key_out(k) for k in await broker_of(request).api_keys.list_for(account_of(request))]

    @delete(
        "/{key_id:str}/",
        status_code=204,
        operation_id="revokeApiKey",
        **documented(PARAMETERS, SESSION_CSRF, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def revoke(self, request: Request[Any, Any, Any], key_id: PathId) -> None:
        """Revoke a key: it stops working at once."""
        try:
            await broker_of(request).api_keys.revoke(account_of(request), key_id)
        except errors.ApiKeyNotFound:
            raise not_found("API key") from None
