"""The external send: a send-only API key in the body, nothing ever read back."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, post

from api.credentials import api_key_guard
from api.sms import IDEMPOTENCY_HEADER
from broker import Broker
from broker.records import Account, OutgoingMessage


class ExternalSendBody(msgspec.Struct, forbid_unknown_fields=True):
    api_key: str
    to: str
    message: str
    device_id: str | None = None


class ExternalQueued(msgspec.Struct):
    id: str
    status: str


class ExternalController(Controller):
    path = "/api/external"
    tags = ["external"]

    @post("/send/", status_code=202, guards=[api_key_guard], operation_id="externalSend")
    async def send(self, request: Request, data: ExternalSendBody, account: Account,
                   broker: Broker) -> ExternalQueued:
        """Queue one message. Self-managed accounts may name a device; without one the
        message goes to the account's own pool. API-only accounts use the platform pool."""
        result = await broker.enqueue(account, [OutgoingMessage(data.to, data.message, data.device_id)],
                                      idempotency_key=request.headers.get(IDEMPOTENCY_HEADER))
        return ExternalQueued(result.ids[0], "queued")
