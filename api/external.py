"""The external send: a send-only API key in the body, nothing ever read back.

``/send/`` queues one message; ``/send-batch/`` up to 1,000 (2 MiB of JSON), validated
as a whole first (any bad item: 400 naming every bad index, nothing queued) and
queued in one script call, so all or none of it is queued. A batch counts its messages
against the send rate limit and the daily quota.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, post

from api.credentials import api_key_guard
from api.errors import ApiError
from api.sms import IDEMPOTENCY_HEADER, send_headers
from broker import errors
from broker.records import OutgoingMessage
from broker.validation import MAX_BATCH_MESSAGES

BATCH_MAX_BYTES = 2 * 1024 * 1024


class ExternalSendBody(msgspec.Struct, forbid_unknown_fields=True):
    api_key: str
    to: str
    message: str
    device_id: str | None = None


class ExternalQueued(msgspec.Struct):
    id: str
    status: str


class BatchItem(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    message: str
    device_id: str | None = None


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    api_key: str
    messages: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH_MESSAGES)]


class BatchQueued(msgspec.Struct):
    count: int
    messages: list[ExternalQueued]


class ExternalController(Controller):
    path = "/api/external"
    tags = ["external"]

    # Both sends read the account and the broker from the request rather than as two
    # dependencies, which Litestar would resolve in an anyio task group (two tasks a request).

    @post("/send/", status_code=202, guards=[api_key_guard], operation_id="externalSend")
    async def send(self, request: Request, data: ExternalSendBody) -> Response[ExternalQueued]:
        """Queue one message. Self-managed accounts may name a device; without one the
        message goes to the account's own pool. API-only accounts use the platform pool."""
        result = await request.app.state.broker.messages.enqueue(
            request.state.account,
            [OutgoingMessage(data.to, data.message, data.device_id)],
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
        )
        return Response(ExternalQueued(result.ids[0], "queued"), status_code=202, headers=send_headers(result))

    @post(
        "/send-batch/",
        status_code=202,
        guards=[api_key_guard],
        operation_id="externalSendBatch",
        request_max_body_size=BATCH_MAX_BYTES,
    )
    async def send_batch(self, request: Request, data: BatchBody) -> Response[BatchQueued]:
        """Queue up to 1,000 messages at once, all or none: any bad item is a 400 whose
        ``errors`` name every bad index, and nothing is queued. The ids come back in the
        order sent. ``Idempotency-Key`` covers the whole batch."""
        messages = [OutgoingMessage(m.to, m.message, m.device_id) for m in data.messages]
        try:
            result = await request.app.state.broker.messages.enqueue(
                request.state.account, messages, idempotency_key=request.headers.get(IDEMPOTENCY_HEADER)
            )
        except errors.DeviceNotFound as exc:
            raise ApiError(
                400,
                "invalid_input",
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
        queued = [ExternalQueued(message_id, "queued") for message_id in result.ids]
        return Response(BatchQueued(len(queued), queued), status_code=202, headers=send_headers(result))
