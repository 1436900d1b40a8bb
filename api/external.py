"""The external send: a send-only API key in the body, nothing ever read back.

``/send/`` queues one message; ``/send-batch/`` up to 1,000 (2 MiB of JSON), validated
as a whole first (any bad item: 400 naming every bad index, 404 when the only bad
items name unknown devices; nothing queued) and
queued in one script call, so all or none of it is queued. A batch counts its messages
against the send rate limit and the daily quota. A plain ``/send/`` is answered by its
hot path (``api/hot_path.py``), with the handler's answer.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.types import Receive, Send

from api.credentials import admit_api_key, api_key_guard, as_key_holder
from api.errors import ApiError
from api.hot_path import BODY_HEADERS, HOT_PATH, HotPath, json_body_length, plain_headers, read_json, send_json
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
from api.state import broker_in, broker_of
from broker import Broker, errors
from broker.messages import MAX_IDEMPOTENCY_KEY_CHARS
from broker.records import Account, EnqueueResult
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


async def send_external(
    broker: Broker, state: dict[str, Any], data: ExternalSendBody, idempotency_key: str | None
) -> tuple[ExternalQueued, dict[str, str]]:
    """The work of ``POST /api/external/send/`` once the key is admitted, for the handler
    and its hot path alike: what it answers, and the headers."""
    message = outgoing(data)

    async def enqueue(account: Account, epoch: int | None) -> EnqueueResult:
        return await broker.messages.enqueue(
            account, [message], idempotency_key=idempotency_key, credentials_epoch=epoch
        )

    result = await as_key_holder(broker, state, enqueue)
    status = result.statuses[0] if result.statuses else "queued"
    return ExternalQueued(result.ids[0], status), send_headers(result)


_SEND_HEADERS = BODY_HEADERS | {b"idempotency-key"}
_encode = msgspec.json.Encoder().encode
_decode_send = msgspec.json.Decoder(ExternalSendBody).decode  # strict, as check_request decodes


async def send_hot_path(scope: Any, receive: Receive, send: Send) -> Receive | None:
    """``POST /api/external/send/`` with no query, a JSON body of exactly its
    ``Content-Length`` that decodes as the declared body, and at most a plain
    ``Idempotency-Key``: the API key of the body checked as :func:`api_key_guard` checks
    it, then the handler's work."""
    headers = plain_headers(scope["headers"], _SEND_HEADERS)
    length = None if headers is None else json_body_length(headers)
    if headers is None or length is None or scope["query_string"]:
        return receive
    idempotency_key = None
    if b"idempotency-key" in headers:
        idempotency_key = headers[b"idempotency-key"].decode("latin-1")
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            return receive
    data, handed_on = await read_json(receive, length, _decode_send)
    if handed_on is not None:
        return handed_on
    broker = broker_in(scope)
    await admit_api_key(broker, scope["state"], data.api_key)
    out, out_headers = await send_external(broker, scope["state"], data, idempotency_key)
    pairs = [(name.lower().encode(), value.encode()) for name, value in out_headers.items()]
    await send_json(send, 202, _encode(out), pairs)
    return None


class ExternalController(Controller):
    path = "/api/external"
    tags = ["external"]

    @post(
        "/send/",
        status_code=202,
        guards=[api_key_guard],
        operation_id="externalSend",
        opt={HOT_PATH: HotPath(send_hot_path, api_key_guard)},
        **documented(BODY, API_KEY, NOT_FOUND, CONFLICT),
    )
    async def send(
        self, request: Request[Any, Any, Any], data: ExternalSendBody, idempotency_key: IdempotencyKey = None
    ) -> Response[ExternalQueued]:
        """Queue one message. Self-managed accounts may name a device; without one the
        message goes to the account's own pool. API-only accounts use the platform pool."""
        out, headers = await send_external(broker_of(request), request.scope["state"], data, idempotency_key)
        return Response(out, status_code=202, headers=headers)

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
        broker = broker_of(request)

        async def enqueue(account: Account, epoch: int | None) -> EnqueueResult:
            return await broker.messages.enqueue(
                account, messages, idempotency_key=idempotency_key, credentials_epoch=epoch
            )

        try:
            result = await as_key_holder(broker, request.scope["state"], enqueue)
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
