"""The external send: a send-only API key in the body, nothing ever read back.

``/send/`` queues one message; ``/send-batch/`` up to 1,000 (2 MiB of JSON), validated
as a whole first (any bad item: 400 naming every bad index, 404 when the only bad
items name unknown devices; nothing queued) and
queued in one script call, so all or none of it is queued. A batch counts its messages
against the send rate limit and the daily quota.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post

from api.credentials import account_of, api_key_guard
from api.errors import ApiError
from api.inputs import (
    Encrypted,
    ExternalSendDevice,
    IdempotencyKey,
    MessageText,
    PhoneNumber,
    Priority,
    SendAt,
    SendSimSlot,
    ValidFor,
)
from api.openapi import API_KEY, API_KEY_DESCRIPTION, BODY, CONFLICT, NOT_FOUND, documented
from api.sms import outgoing, send_headers
from api.state import broker_of
from broker import errors
from broker.validation import MAX_BATCH_MESSAGES

BATCH_MAX_BYTES = 2 * 1024 * 1024
ApiKey = Annotated[str, msgspec.Meta(min_length=1, description=API_KEY_DESCRIPTION)]


class ExternalSendBody(msgspec.Struct, forbid_unknown_fields=True):
    api_key: ApiKey
    to: PhoneNumber
    message: MessageText
    device_id: ExternalSendDevice | None = None
    send_at: SendAt | None = None
    valid_for: ValidFor | None = None
    sim_slot: SendSimSlot | None = None
    priority: Priority | None = None
    encrypted: Encrypted = False


class ExternalQueued(msgspec.Struct):
    id: str
    status: str


class BatchItem(msgspec.Struct, forbid_unknown_fields=True):
    to: PhoneNumber
    message: MessageText
    device_id: ExternalSendDevice | None = None
    send_at: SendAt | None = None
    valid_for: ValidFor | None = None
    sim_slot: SendSimSlot | None = None
    priority: Priority | None = None
    encrypted: Encrypted = False


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    api_key: ApiKey
    messages: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH_MESSAGES)]


class BatchQueued(msgspec.Struct):
    count: int
    messages: list[ExternalQueued]


class ExternalController(Controller):
    path = "/api/external"
    tags = ["external"]

    @post(
        "/send/",
        status_code=202,
        guards=[api_key_guard],
        operation_id="externalSend",
        **documented(BODY, API_KEY, NOT_FOUND, CONFLICT),
    )
    async def send(
        self, request: Request[Any, Any, Any], data: ExternalSendBody, idempotency_key: IdempotencyKey = None
    ) -> Response[ExternalQueued]:
        """Queue one message. Self-managed accounts may name a device; without one the
        message goes to the account's own pool. API-only accounts use the platform pool."""
        result = await broker_of(request).messages.enqueue(
            account_of(request),
            [outgoing(data)],
            idempotency_key=idempotency_key,
        )
        status = result.statuses[0] if result.statuses else "queued"
        return Response(ExternalQueued(result.ids[0], status), status_code=202, headers=send_headers(result))

    @post(
        "/send-batch/",
        status_code=202,
        guards=[api_key_guard],
        operation_id="externalSendBatch",
        request_max_body_size=BATCH_MAX_BYTES,
        **documented(BODY, API_KEY, NOT_FOUND, CONFLICT),
    )
    async def send_batch(
        self, request: Request[Any, Any, Any], data: BatchBody, idempotency_key: IdempotencyKey = None
    ) -> Response[BatchQueued]:
        """Queue up to 1,000 messages at once, all or none: any bad item is a 400 whose
        ``errors`` name every bad index (a 404 when the only bad items name devices that
        do not exist), and nothing is queued. The ids come back in the
        order sent. ``Idempotency-Key`` covers the whole batch."""
        messages = [outgoing(m) for m in data.messages]
        try:
            result = await broker_of(request).messages.enqueue(
                account_of(request), messages, idempotency_key=idempotency_key
            )
        except errors.DeviceNotFound as exc:
            # Only unknown devices are wrong (any other bad item is found first, and a
            # batch with both is a 400 naming them all): 404, as for a single send.
            raise ApiError(
                404,
                exc.code,
                exc.detail + "; nothing was queued",
                field="device_id",
                errors=[{"index": i, "field": "device_id", "detail": "no such device"} for i in exc.indexes],
            ) from None
        except errors.InvalidInput as exc:
            if not exc.problems:
                raise
            raise ApiError(
                400,
                exc.code,
                exc.detail,
                field=exc.field,
                errors=[{"index": p.index, "field": p.field, "detail": p.detail} for p in exc.problems],
            ) from None
        statuses = result.statuses or ["queued"] * len(result.ids)
        queued = [ExternalQueued(i, status) for i, status in zip(result.ids, statuses, strict=True)]
        return Response(BatchQueued(len(queued), queued), status_code=202, headers=send_headers(result))
