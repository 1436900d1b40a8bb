"""Send-only API keys: created (shown once), listed, revoked from the dashboard."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.params import Parameter

from api.credentials import session_guard
from api.errors import not_found
from broker import Broker, errors
from broker.clock import iso_utc
from broker.records import Account, ApiKeyInfo


class NewKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str


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

    @post("/", status_code=201, operation_id="createApiKey")
    async def create(self, data: NewKeyBody, account: Account, broker: Broker) -> NewKeyOut:
        """A new send-only key; this response is the only time it is shown."""
        created = await broker.api_keys.create(account, data.name)
        return NewKeyOut(created.info.id, created.info.name, created.api_key, iso_utc(created.info.created_ms) or "")

    @get("/", operation_id="listApiKeys")
    async def list_keys(self, account: Account, broker: Broker) -> list[KeyOut]:
        """The account's keys, without their secrets."""
        return [key_out(k) for k in await broker.api_keys.list_for(account)]

    @delete("/{key_id:str}/", status_code=204, operation_id="revokeApiKey")
    async def revoke(
        self, key_id: Annotated[str, Parameter(max_length=64)], account: Account, broker: Broker
    ) -> Response[None]:
        """Revoke a key: it stops working at once."""
        try:
            await broker.api_keys.revoke(account, key_id)
        except errors.ApiKeyNotFound:
            raise not_found("API key") from None
        return Response(None, status_code=204)
