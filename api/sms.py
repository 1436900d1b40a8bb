"""Messages: the dashboard's send, history and cancel, and the phone's status report."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter

from api.credentials import device_guard, session_guard, still_paired, unpaired
from api.errors import ApiError, not_found, rate_headers
from broker import Broker, errors
from broker.clock import iso_utc
from broker.records import Account, EnqueueResult, MessageRecord, OutgoingMessage

MessageId = Annotated[str, Parameter(max_length=64)]


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    message: str
    device_id: str | None = None


class Queued(msgspec.Struct):
    id: str
    status: str
    to: str
    device_id: str | None
    segments: int
    created_at: str


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["sent", "delivered", "failed"]
    error: str = ""


class StatusOut(msgspec.Struct):
    id: str
    status: str


class TimelineEntry(msgspec.Struct):
    status: str
    at: str
    device_id: str | None
    error: str | None


class MessageOut(msgspec.Struct):
    id: str
    to: str
    message: str
    status: str
    device_id: str | None
    segments: int
    error: str | None
    created_at: str
    updated_at: str
    expires_at: str
    timeline: list[TimelineEntry]


class MessagePageOut(msgspec.Struct):
    items: list[MessageOut]
    next_cursor: str | None


def message_out(record: MessageRecord) -> MessageOut:
    return MessageOut(
        record.id,
        record.to,
        record.message,
        record.status,
        record.device or None,
        record.segments,
        record.error or None,
        iso_utc(record.created) or "",
        iso_utc(record.updated) or "",
        iso_utc(record.expires) or "",
        [
            TimelineEntry(status, iso_utc(at) or "", device or None, error or None)
            for status, at, device, error in record.timeline
        ],
    )


def routed_message(account: Account, data: SendBody) -> OutgoingMessage:
    """The seed doc's rule for the dashboard send: self-managed accounts name a device,
    API-only accounts must not."""
    if account.account_type == "self_managed" and not data.device_id:
        raise ApiError(400, "device_id_required", "self-managed accounts choose the device: pass device_id")
    if account.account_type == "api_only" and data.device_id is not None:
        raise ApiError(400, "device_id_not_allowed", "API-only accounts send through the platform pool: omit device_id")
    return OutgoingMessage(data.to, data.message, data.device_id)


IDEMPOTENCY_HEADER = "idempotency-key"


async def send_one(broker: Broker, account: Account, message: OutgoingMessage, request: Request) -> Response[Queued]:
    """Queue one message and show it as stored (number normalized, segments counted); a
    repeated ``Idempotency-Key`` with the same body gets the first message back (409
    ``idempotency_key_reused`` with another body)."""
    result = await broker.messages.enqueue(account, [message], idempotency_key=request.headers.get(IDEMPOTENCY_HEADER))
    record = await broker.message_log.get(result.shard, result.ids[0])
    queued = Queued(
        record.id, "queued", record.to, record.device or None, record.segments, iso_utc(record.created) or ""
    )
    return Response(queued, status_code=202, headers=send_headers(result))


def send_headers(result: EnqueueResult) -> dict[str, str]:
    """The send limiter after this request, and whether it repeated an earlier one."""
    headers = rate_headers(result.rate) if result.rate is not None else {}
    if result.duplicate:
        headers["Idempotent-Replayed"] = "true"
    return headers


class SmsController(Controller):
    path = "/api/sms"
    tags = ["dashboard: messages"]

    @post("/send/", status_code=202, guards=[session_guard], operation_id="sendSms")
    async def send(self, request: Request, data: SendBody) -> Response[Queued]:
        """Queue one message from the dashboard (``Idempotency-Key`` makes retries safe)."""
        account: Account = request.state.account  # not as dependencies: see api/external.py
        return await send_one(request.app.state.broker, account, routed_message(account, data), request)

    @get("/", guards=[session_guard], operation_id="listMessages")
    async def list_messages(
        self,
        account: Account,
        broker: Broker,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=64)] = None,
        status: Annotated[str | None, Parameter(max_length=16)] = None,
        device_id: Annotated[str | None, Parameter(max_length=64)] = None,
    ) -> MessagePageOut:
        """The account's messages, newest first, 50 a page; filter by status or device."""
        page = await broker.message_log.page(account, limit=limit, cursor=cursor, status=status, device_id=device_id)
        return MessagePageOut([message_out(r) for r in page.items], page.next_cursor)

    @get("/{message_id:str}/", guards=[session_guard], operation_id="getMessage")
    async def detail(self, message_id: MessageId, account: Account, broker: Broker) -> MessageOut:
        """One message with its status timeline."""
        try:
            record = await broker.message_log.get(account.shard, message_id)
        except errors.MessageNotFound:
            raise not_found("message") from None
        if record.account != account.id:
            raise not_found("message")
        return message_out(record)

    @post("/{message_id:str}/cancel/", status_code=200, guards=[session_guard], operation_id="cancelMessage")
    async def cancel(self, message_id: MessageId, account: Account, broker: Broker) -> StatusOut:
        """Cancel a message no phone holds yet (409 once one does)."""
        change = await broker.messages.cancel(account, message_id)
        return StatusOut(change.id, change.status)

    @post("/{message_id:str}/status/", status_code=200, guards=[device_guard], operation_id="reportStatus")
    async def report(self, request: Request, message_id: MessageId, data: StatusBody) -> StatusOut:
        """The phone reports sent, delivered or failed for a message it holds."""
        try:
            change = await request.app.state.broker.messages.report_status(
                request.state.device, message_id, data.status, data.error
            )
        except errors.MessageNotFound:
            if not await still_paired(request):  # a removed device's messages are no longer its own
                raise unpaired(request) from None
            raise
        return StatusOut(change.id, change.status)
