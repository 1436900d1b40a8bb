"""Messages: the dashboard's send, history and cancel, and the phone's status report."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.types import Receive, Send

from api.credentials import (
    DEVICE_CREDENTIALS,
    account_of,
    admit_device_in,
    device_guard,
    session_guard,
    still_paired,
    unpaired_token,
)
from api.errors import ApiError, not_found, rate_headers
from api.hot_path import BODY_HEADERS, HOT_PATH, HotPath, json_body_length, plain_headers, read_json, send_json
from api.inputs import (
    ConversationPhone,
    Cursor,
    DashboardSendDevice,
    Encrypted,
    ErrorText,
    IdempotencyKey,
    MessageDirection,
    MessageStatus,
    MessageText,
    PageLimit,
    PathId,
    PhoneNumber,
    Priority,
    QueryId,
    QueryMoment,
    SendAt,
    SendSimSlot,
    SentSegments,
    SentSimSlot,
    ValidFor,
)
from api.openapi import (
    BODY,
    CONFLICT,
    DEVICE,
    DEVICE_TOKEN,
    NOT_FOUND,
    PARAMETERS,
    SESSION,
    SESSION_AND_CSRF,
    SESSION_COOKIE_ONLY,
    SESSION_CSRF,
    documented,
)
from api.state import broker_of
from broker import Broker, errors
from broker.clock import iso_utc, parse_iso_ms
from broker.records import Account, EnqueueResult, MessageRecord, OutgoingMessage
from broker.validation import normalize_phone_number


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    to: PhoneNumber
    message: MessageText
    device_id: DashboardSendDevice | None = None
    send_at: SendAt | None = None
    valid_for: ValidFor | None = None
    sim_slot: SendSimSlot | None = None
    priority: Priority | None = None
    encrypted: Encrypted = False


class Queued(msgspec.Struct):
    id: str
    status: str  # "queued", or "scheduled" until its send_at
    to: str
    device_id: str | None
    segments: int
    created_at: str
    send_at: str | None
    expires_at: str
    encrypted: bool  # the message is an end-to-end envelope; segments is then its upper bound


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["sent", "delivered", "failed"]
    error: ErrorText = ""
    retryable: bool = False  # with failed: no service, radio off; the message is put back
    sim_slot: SentSimSlot | None = None  # with sent: the SIM that sent it
    segments: SentSegments | None = None  # with sent of an encrypted message: the real count


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
    expires_at: str | None  # None for a received SMS
    timeline: list[TimelineEntry]
    direction: str  # "outbound", or "inbound" for an SMS a phone received
    sender: str | None = msgspec.field(default=None, name="from")  # inbound: who sent it
    received_at: str | None = None  # inbound: when the phone got it (its clock)
    send_at: str | None = None  # when the sender scheduled it for
    # outbound: the SIM asked for, then the one that sent it once its phone says; inbound: the SIM it came in on
    sim_slot: int | None = None
    priority: str | None = None  # outbound: "normal" or "high"; None for a received SMS
    encrypted: bool = False  # message is an end-to-end envelope the server cannot read
    campaign_id: str | None = None  # the campaign it was queued for, if any


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
        iso_utc(record.expires) if record.direction == "outbound" else None,
        [
            TimelineEntry(status, iso_utc(at) or "", device or None, error or None)
            for status, at, device, error in record.timeline
        ],
        record.direction,
        record.sender or None,
        iso_utc(record.received_at) if record.direction == "inbound" else None,
        iso_utc(record.send_at),
        record.sim_slot,
        record.priority if record.direction == "outbound" else None,
        record.encrypted,
        record.campaign or None,
    )


def routed_message(account: Account, data: SendBody) -> OutgoingMessage:
    """The seed doc's rule for the dashboard send: self-managed accounts name a device,
    API-only accounts must not."""
    if account.account_type == "self_managed" and not data.device_id:
        raise ApiError(400, "device_id_required", "self-managed accounts choose the device: pass device_id")
    if account.account_type == "api_only" and data.device_id is not None:
        raise ApiError(400, "device_id_not_allowed", "API-only accounts send through the platform pool: omit device_id")
    return outgoing(data)


def outgoing(data: Any) -> OutgoingMessage:
    """The message a send body (dashboard, external, batch item) asks for, field by field."""
    return OutgoingMessage(
        data.to,
        data.message,
        data.device_id,
        data.send_at,
        data.valid_for,
        data.sim_slot,
        data.priority,
        data.encrypted,
    )


async def send_one(
    broker: Broker, account: Account, message: OutgoingMessage, idempotency_key: str | None
) -> Response[Queued]:
    """Queue one message and show it as stored (number normalized, segments counted); a
    repeated ``Idempotency-Key`` with the same body gets the first message back (409
    ``idempotency_key_reused`` with another body)."""
    result = await broker.messages.enqueue(account, [message], idempotency_key=idempotency_key)
    record = await broker.message_log.get(result.shard, result.ids[0])
    queued = Queued(
        record.id,
        result.statuses[0] if result.statuses else "queued",
        record.to,
        record.device or None,
        record.segments,
        iso_utc(record.created) or "",
        iso_utc(record.send_at),
        iso_utc(record.expires) or "",
        record.encrypted,
    )
    return Response(queued, status_code=202, headers=send_headers(result))


def moment_ms(value: str | None, field: str) -> int | None:
    """A query's ISO-8601 moment as ms since the epoch (None: not given); a day the
    calendar does not have is a 400 naming ``field``."""
    if value is None:
        return None
    ms = parse_iso_ms(value)
    if ms is None:
        raise ApiError(400, "invalid_request", f"{field}: not a moment the calendar has", field=field)
    return ms


def send_headers(result: EnqueueResult) -> dict[str, str]:
    """The send limiter after this request, and whether it repeated an earlier one."""
    headers = rate_headers(result.rate) if result.rate is not None else {}
    if result.duplicate:
        headers["Idempotent-Replayed"] = "true"
    return headers


async def take_report(broker: Broker, state: dict[str, Any], message_id: str, data: StatusBody) -> StatusOut:
    """The work of ``POST /api/sms/{id}/status/`` once :func:`device_guard` admitted the
    device (kept in ``state``), for the handler and its hot path alike."""
    try:
        change = await broker.messages.report_status(
            state["device"],
            message_id,
            data.status,
            data.error,
            retryable=data.retryable,
            sim_slot=data.sim_slot,
            segments=data.segments,
        )
    except errors.MessageNotFound:
        if not await still_paired(broker, state):  # a removed device's messages are no longer its own
            raise unpaired_token(broker, state["device_token"]) from None
        raise
    return StatusOut(change.id, change.status)


# The status report's hot path (api/hot_path.py): a phone reports every message it sends
# (sent, and often delivered), so at a high message rate this is the request a server
# answers most.

_ID_LENGTH = (PathId.__metadata__[0].min_length, PathId.__metadata__[0].max_length)  # as the handler validates
_REPORT_HEADERS = DEVICE_CREDENTIALS | BODY_HEADERS
_encode = msgspec.json.Encoder().encode
_decode_report = msgspec.json.Decoder(StatusBody).decode  # strict, as check_request decodes


async def report_hot_path(scope: Any, receive: Receive, send: Send) -> Receive | None:
    """``POST /api/sms/{id}/status/`` with no query, an id within the path parameter's
    bounds, plain credentials and a JSON body of exactly its ``Content-Length`` that
    decodes as the declared body: the device admitted as :func:`device_guard` admits it
    (before the body is read, as the guard runs before it), then the handler's work."""
    message_id = scope["path_params"]["message_id"]
    if scope["query_string"] or not _ID_LENGTH[0] <= len(message_id) <= _ID_LENGTH[1]:
        return receive
    headers = plain_headers(scope["headers"], _REPORT_HEADERS)
    length = None if headers is None else json_body_length(headers)
    if headers is None or length is None:
        return receive
    broker, _ = await admit_device_in(scope, headers)
    data, handed_on = await read_json(receive, length, _decode_report)
    if handed_on is not None:
        return handed_on
    out = await take_report(broker, scope["state"], message_id, data)
    await send_json(send, 200, _encode(out))
    return None


class SmsController(Controller):
    path = "/api/sms"
    tags = ["dashboard: messages"]

    @post(
        "/send/",
        status_code=202,
        guards=[session_guard],
        operation_id="sendSms",
        **documented(BODY, SESSION_CSRF, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def send(
        self, request: Request[Any, Any, Any], data: SendBody, idempotency_key: IdempotencyKey = None
    ) -> Response[Queued]:
        """Queue one message from the dashboard (``Idempotency-Key`` makes retries safe)."""
        account = account_of(request)
        return await send_one(broker_of(request), account, routed_message(account, data), idempotency_key)

    @get(
        "/",
        guards=[session_guard],
        operation_id="listMessages",
        **documented(PARAMETERS, SESSION, security=SESSION_COOKIE_ONLY),
    )
    async def list_messages(
        self,
        request: Request[Any, Any, Any],
        limit: PageLimit = 50,
        cursor: Cursor = None,
        status: MessageStatus | None = None,
        device_id: QueryId = None,
        direction: MessageDirection = None,
        phone: ConversationPhone = None,
        campaign_id: QueryId = None,
        since: QueryMoment = None,
        until: QueryMoment = None,
    ) -> MessagePageOut:
        """The account's messages, newest first, 50 a page; filter by status, device,
        direction, the conversation with one number (``phone``), the campaign they
        were queued for (``campaign_id``), or when they were made (``since``, ``until``,
        both included), in any combination."""
        if phone is not None:
            phone = normalize_phone_number(phone, "phone")  # the broker takes sender names too
        page = await broker_of(request).message_log.page(
            account_of(request),
            limit=limit,
            cursor=cursor,
            status=status,
            device_id=device_id,
            direction=direction,
            phone=phone,
            campaign=campaign_id,
            since_ms=moment_ms(since, "since"),
            until_ms=moment_ms(until, "until"),
        )
        return MessagePageOut([message_out(r) for r in page.items], page.next_cursor)

    @get(
        "/{message_id:str}/",
        guards=[session_guard],
        operation_id="getMessage",
        **documented(PARAMETERS, SESSION, NOT_FOUND, security=SESSION_COOKIE_ONLY),
    )
    async def detail(self, request: Request[Any, Any, Any], message_id: PathId) -> MessageOut:
        """One message with its status timeline."""
        account = account_of(request)
        try:
            record = await broker_of(request).message_log.get(account.shard, message_id)
        except errors.MessageNotFound:
            raise not_found("message") from None
        if record.account != account.id:
            raise not_found("message")
        return message_out(record)

    @post(
        "/{message_id:str}/cancel/",
        status_code=200,
        guards=[session_guard],
        operation_id="cancelMessage",
        **documented(BODY, SESSION_CSRF, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def cancel(self, request: Request[Any, Any, Any], message_id: PathId) -> StatusOut:
        """Cancel a message no phone holds yet (409 once one does)."""
        change = await broker_of(request).messages.cancel(account_of(request), message_id)
        return StatusOut(change.id, change.status)

    @post(
        "/{message_id:str}/status/",
        status_code=200,
        guards=[device_guard],
        opt={HOT_PATH: HotPath(report_hot_path, device_guard)},
        operation_id="reportStatus",
        **documented(BODY, DEVICE, NOT_FOUND, CONFLICT, security=DEVICE_TOKEN),
    )
    async def report(self, request: Request[Any, Any, Any], message_id: PathId, data: StatusBody) -> StatusOut:
        """The phone reports sent, delivered or failed for a message it holds. A failure
        with ``"retryable": true`` (no service, radio off) puts the message back: it reads
        ``queued`` at once, a pool message for any phone, a device message for this phone
        again after 30 s, while it has attempts left (3, as leases); then it is final. A
        sent report may name the SIM slot that sent it (``sim_slot``, 1-4) and, for an
        end-to-end encrypted message, the segments it took (``segments``)."""
        return await take_report(broker_of(request), request.scope["state"], message_id, data)
