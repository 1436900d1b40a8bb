"""Devices: the phone's own endpoints (register, tasks, heartbeat) and the dashboard's
(pairing codes, list, settings, removal)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.openapi import ResponseSpec
from litestar.types import Receive, Send

from api.credentials import (
    DEVICE_CREDENTIALS,
    account_of,
    admit_device_in,
    device_guard,
    device_of,
    session_guard,
    unpaired,
    unpaired_token,
)
from api.errors import ApiError, forbidden, not_found, rate_header_pairs, rate_headers
from api.hot_path import (
    BODY_HEADERS,
    HOT_PATH,
    HotPath,
    json_body_length,
    plain_headers,
    plain_query,
    read_json,
    send_json,
)
from api.inputs import (
    E164_POSSIBLE,
    Battery,
    ClaimLimit,
    Name,
    OptionalPhoneNumber,
    PathId,
    SegmentBudget,
    VersionText,
    WaitSeconds,
    checked_by_the_broker,
)
from api.limits import auth_rate_guard
from api.observability.metrics import claimed, long_poll
from api.openapi import (
    ANOTHER_DEVICE,
    BODY,
    DEVICE,
    DEVICE_TOKEN,
    FORBIDDEN,
    NOT_FOUND,
    PARAMETERS,
    PUBLIC,
    SESSION,
    SESSION_AND_CSRF,
    SESSION_COOKIE_ONLY,
    SESSION_CSRF,
    documented,
)
from api.state import broker_of
from broker import Broker, errors
from broker.clock import ISO_MOMENT, iso_utc
from broker.inbound import MAX_INBOUND_CHARS, MAX_SIM_SLOT, REF_PATTERN
from broker.long_poll import Hangup
from broker.records import Account, ClaimResult, DeviceInfo, DeviceRef, SendWindow
from broker.send_windows import CLOCK_TIME, check_window
from broker.validation import SENDER_NAME

PairingCode = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,16}$", description="The code from the Add Device screen.")
]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    code: PairingCode
    device_name: Name
    phone_number: OptionalPhoneNumber = ""


class Registered(msgspec.Struct):
    device_id: str
    device_token: str
    device_name: str


class Task(msgspec.Struct, omit_defaults=True):
    id: str
    to: str
    message: str
    sim_slot: int | None = None  # the SIM the sender asked for (1-4); left out: the phone's choice
    encrypted: bool = False  # message is an end-to-end envelope to decrypt before sending; left out: plain


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True):
    battery: Battery | None = None
    android_version: VersionText | None = None
    app_version: VersionText | None = None


class HeartbeatOut(msgspec.Struct):
    status: str
    device_id: str
    last_seen: str


InboundSender = Annotated[
    str,
    checked_by_the_broker(
        "Who sent it, as the phone got it: a number in E.164 (e.g. +15551234567, of a length possible for its "
        "country code) or a sender name of 1 to 15 letters, digits, spaces and . _ & ' - (starting with a letter "
        "or digit).",
        pattern=rf"^(?:{E164_POSSIBLE[1:-1]}|{SENDER_NAME.pattern})$",
    ),
]
InboundText = Annotated[
    str, checked_by_the_broker("The text, the parts of a long SMS joined.", min_length=1, max_length=MAX_INBOUND_CHARS)
]
InboundRef = Annotated[
    str,
    msgspec.Meta(
        pattern=rf"^{REF_PATTERN.pattern}$",
        description="The phone's own id of this received SMS: the same in every retry, so it is stored once.",
    ),
]
ReceivedAt = Annotated[
    str,
    checked_by_the_broker(
        "When the phone received it, ISO-8601 with seconds and a time zone (e.g. 2026-12-05T12:00:00.123Z). A date "
        "the calendar does not have (February 30) is refused.",
        pattern=ISO_MOMENT.pattern,
    ),
]
SimSlot = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIM_SLOT, extra_json_schema={"extra": {"minimum": 0}})]


class InboundBody(msgspec.Struct, forbid_unknown_fields=True):
    sender: InboundSender = msgspec.field(name="from")
    message: InboundText
    received_at: ReceivedAt
    ref: InboundRef
    sim_slot: SimSlot | None = None


class InboundOut(msgspec.Struct):
    id: str
    direction: str


INBOUND_DOC = documented(BODY, DEVICE, ANOTHER_DEVICE, security=DEVICE_TOKEN)
INBOUND_DOC["responses"][200] = ResponseSpec(
    data_container=InboundOut, description="This ref was stored before: the same id, nothing stored again."
)


class PairingCodeBody(msgspec.Struct, forbid_unknown_fields=True):
    pool: bool = False


class PairingCodeOut(msgspec.Struct):
    code: str
    expires_at: str


class DeviceOut(msgspec.Struct):
    device_id: str
    device_name: str
    phone_number: str
    online: bool
    last_seen: str | None
    battery: int | None
    android_version: str | None
    app_version: str | None
    segments_per_minute: int
    segments_per_day: int
    created_at: str
    counts: dict[str, int]
    send_window: SendWindow | None  # when it may be handed new messages; None: any time
    # Pool claims skip the phone until then after a run of failed reports, and why; None: not skipped.
    pool_paused_until: str | None
    pool_pause_reason: str | None


ClockTime = Annotated[
    str, checked_by_the_broker("A local time of day, HH:MM (00:00 to 23:59).", pattern=CLOCK_TIME.pattern)
]


class SendWindowIn(msgspec.Struct, forbid_unknown_fields=True):
    start: ClockTime
    end: ClockTime  # before start: the window runs over midnight; equal to it: refused
    timezone: Annotated[str, checked_by_the_broker("An IANA time zone name, e.g. Europe/Berlin.", min_length=1)]


class DeviceUpdate(msgspec.Struct, forbid_unknown_fields=True):
    device_name: Name | None = None
    segments_per_minute: SegmentBudget | None = None
    segments_per_day: SegmentBudget | None = None
    # A window of the day (HH:MM to HH:MM in an IANA time zone) outside which the phone is
    # handed nothing new; null removes it; left out: unchanged.
    send_window: SendWindowIn | msgspec.UnsetType | None = msgspec.UNSET


class _Watch:
    """Watches a waiting request's connection, and tells ``hangup`` when the client goes
    away (an ``http.disconnect``, or a ``receive`` that fails) until :meth:`stop`.

    A server whose ``receive()`` hands back a future (granian's does) is watched through
    that future's done callback, with no task of its own: thousands of waits are held at
    once. Any other ``receive`` (a coroutine) is awaited in a task."""

    __slots__ = ("_hangup", "_pending", "_receive", "_task")

    def __init__(self, receive: Receive, hangup: Hangup) -> None:
        self._receive = receive
        self._hangup = hangup
        self._pending: asyncio.Future[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._next()

    def _next(self) -> None:
        try:
            message = self._receive()
        except Exception:
            self._hangup()
            return
        if asyncio.isfuture(message):
            self._pending = message
            message.add_done_callback(self._received)
        else:
            self._task = asyncio.ensure_future(self._rest(message))

    def _received(self, message: asyncio.Future[Any]) -> None:
        self._pending = None
        if message.cancelled():
            return  # stopped
        try:
            went_away = message.exception() is not None or message.result()["type"] == "http.disconnect"
        except Exception:  # not an ASGI message: nothing more to learn from this connection
            went_away = True
        if went_away:
            self._hangup()
        else:
            self._next()

    async def _rest(self, first: Any) -> None:
        try:
            message = await first
            while message["type"] != "http.disconnect":
                message = await self._receive()
        except Exception:  # the server has no more to say about this request: it went away
            pass
        self._hangup()

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._task is not None:
            self._task.cancel()


async def _long_poll(
    scope: Any, receive: Receive, broker: Broker, device: DeviceRef, limit: int, wait: int
) -> ClaimResult:
    """A long poll, watching the connection meanwhile: a phone that hung up gets
    nothing claimed for it after that."""
    hangup = Hangup()
    watch = _Watch(receive, hangup)
    try:
        with long_poll(scope):
            return await broker.long_poll.claim(device, limit, wait, hangup)
    finally:
        watch.stop()


async def claim_tasks(
    scope: Any, receive: Receive, broker: Broker, device: DeviceRef, limit: int | None, wait: int
) -> ClaimResult:
    """The work of ``GET .../tasks/``, for the handler and its hot path alike."""
    try:
        if wait:
            result = await _long_poll(scope, receive, broker, device, limit, wait)
        else:
            result = await broker.messages.claim_tasks(device, limit)
    except errors.DeviceNotFound:
        raise unpaired_token(broker, scope["state"]["device_token"]) from None
    claimed(len(result.messages))
    return result


def tasks_out(result: ClaimResult) -> list[Task]:
    """The tasks a claim answers with."""
    return [Task(m.id, m.to, m.message, m.sim_slot, m.encrypted) for m in result.messages]


async def take_heartbeat(scope: Any, broker: Broker, device: DeviceRef, data: HeartbeatBody | None) -> HeartbeatOut:
    """The work of ``POST .../heartbeat/``, for the handler and its hot path alike."""
    data = data or HeartbeatBody()
    try:
        seen = await broker.presence.heartbeat(
            device, battery=data.battery, android_version=data.android_version, app_version=data.app_version
        )
    except errors.DeviceNotFound:
        raise unpaired_token(broker, scope["state"]["device_token"]) from None
    return HeartbeatOut("ok", device.device_id, iso_utc(seen) or "")


# The hot paths of the two (api/hot_path.py): the same work, on plain requests.


def _bounds(**parameters: Any) -> dict[bytes, tuple[int, int]]:
    """Each query parameter's (least, most), from its declaration (``Parameter(ge=, le=)``):
    the hot path takes in range what the handler's validation takes."""
    return {name.encode(): (kind.__metadata__[0].ge, kind.__metadata__[0].le) for name, kind in parameters.items()}


_TASKS_QUERY = _bounds(limit=ClaimLimit, wait=WaitSeconds)
_CREDENTIALS_AND_BODY = DEVICE_CREDENTIALS | BODY_HEADERS
_encode = msgspec.json.Encoder().encode
_decode_heartbeat = msgspec.json.Decoder(HeartbeatBody | None).decode  # strict, as check_request decodes


async def tasks_hot_path(scope: Any, receive: Receive, send: Send) -> Receive | None:
    """``GET .../tasks/`` with a plain query (``limit``, ``wait``) and credentials."""
    limit: int | None = None  # the server's CONNECFY_CLAIM_DEFAULT_LIMIT
    wait = 0
    if scope["query_string"]:
        values = plain_query(scope["query_string"], _TASKS_QUERY)
        if values is None:
            return receive
        limit = values.get(b"limit", limit)
        wait = values.get(b"wait", wait)
    headers = plain_headers(scope["headers"], DEVICE_CREDENTIALS)
    if headers is None:
        return receive
    broker, device = await admit_device_in(scope, headers)
    result = await claim_tasks(scope, receive, broker, device, limit, wait)
    body = _encode(tasks_out(result))
    await send_json(send, 200, body, rate_header_pairs(result.rate))
    return None


async def heartbeat_hot_path(scope: Any, receive: Receive, send: Send) -> Receive | None:
    """``POST .../heartbeat/`` with plain credentials and a plain JSON body, or none."""
    headers = plain_headers(scope["headers"], _CREDENTIALS_AND_BODY)
    length = None if headers is None else json_body_length(headers, optional=True)
    if headers is None or length is None:
        return receive
    broker, device = await admit_device_in(scope, headers)
    data, handed_on = await read_json(receive, length, _decode_heartbeat)
    if handed_on is not None:
        return handed_on
    out = await take_heartbeat(scope, broker, device, data)
    await send_json(send, 200, _encode(out))
    return None


def device_out(info: DeviceInfo) -> DeviceOut:
    return DeviceOut(
        info.device_id,
        info.device_name,
        info.phone_number,
        info.online,
        iso_utc(info.last_seen_ms),
        info.battery,
        info.android_version,
        info.app_version,
        info.segments_per_minute,
        info.segments_per_day,
        iso_utc(info.created_ms) or "",
        info.counts,
        info.send_window,
        iso_utc(info.pool_paused_until_ms),
        info.pool_pause_reason,
    )


class PhoneController(Controller):
    """What a paired phone calls. Like every handler, these read the broker and the
    credential with ``broker_of`` and ``device_of`` (no dependency to resolve on the
    phone's hot paths), and leave the path's ``device_id`` to the guard, which answers
    403 for another device's id before the handler runs."""

    path = "/api/devices"
    tags = ["phone"]

    @post(
        "/register/",
        status_code=201,
        guards=[auth_rate_guard("register")],
        operation_id="registerDevice",
        **documented(BODY, NOT_FOUND, PUBLIC),
    )
    async def register(self, request: Request[Any, Any, Any], data: RegisterBody) -> Registered:
        """Redeem a one-time pairing code from the dashboard's Add Device screen."""
        device = await broker_of(request).devices.register(data.code, data.device_name, data.phone_number)
        return Registered(device.device_id, device.device_token, device.device_name)

    @get(
        "/{device_id:str}/tasks/",
        guards=[device_guard],
        opt={HOT_PATH: HotPath(tasks_hot_path, device_guard)},
        operation_id="claimTasks",
        **documented(PARAMETERS, DEVICE, ANOTHER_DEVICE, security=DEVICE_TOKEN),
    )
    async def tasks(
        self, request: Request[Any, Any, Any], limit: ClaimLimit = None, wait: WaitSeconds = 0
    ) -> Response[list[Task]]:
        """Atomically claim the messages this phone should send now (leased 120 s).
        With ``wait`` and nothing to claim, the request waits up to that many seconds
        for work (a long poll; the phone counts as online meanwhile) and answers
        ``[]`` when none came. Only a poll that hands over nothing is charged to the
        tasks limit; polling with nothing to take faster than it allows gets 429 with
        ``Retry-After``."""
        result = await claim_tasks(request.scope, request.receive, broker_of(request), device_of(request), limit, wait)
        return Response(tasks_out(result), headers=rate_headers(result.rate))

    @post(
        "/{device_id:str}/heartbeat/",
        status_code=200,
        guards=[device_guard],
        opt={HOT_PATH: HotPath(heartbeat_hot_path, device_guard)},
        operation_id="heartbeat",
        **documented(BODY, DEVICE, ANOTHER_DEVICE, security=DEVICE_TOKEN),
    )
    async def heartbeat(self, request: Request[Any, Any, Any], data: HeartbeatBody | None = None) -> HeartbeatOut:
        """Presence, battery and versions. A claim and a status report count as presence
        too, so a long-polling phone needs a heartbeat only every few minutes."""
        return await take_heartbeat(request.scope, broker_of(request), device_of(request), data)

    @post(
        "/{device_id:str}/inbound/",
        status_code=201,
        guards=[device_guard],
        operation_id="reportInbound",
        **INBOUND_DOC,
    )
    async def inbound(self, request: Request[Any, Any, Any], data: InboundBody) -> Response[InboundOut]:
        """An SMS the phone received (201); the same ``ref`` again is 200 with the same id.
        An opt-out word (STOP, ...) as the whole text puts the sender on the account's
        suppression list, an opt-in word (START, ...) takes it off."""
        try:
            received = await broker_of(request).inbound.receive(
                device_of(request), data.sender, data.message, data.received_at, data.ref, data.sim_slot
            )
        except errors.DeviceNotFound:
            raise unpaired(request) from None
        return Response(InboundOut(received.id, "inbound"), status_code=201 if received.new else 200)


async def owned_device(broker: Broker, account: Account, device_id: str) -> DeviceRef:
    """One of the account's devices, or for the operator also a platform pool phone."""
    try:
        return await broker.devices.owned(account, device_id)
    except errors.DeviceNotFound:
        raise not_found("device") from None


class DashboardDevicesController(Controller):
    """The account's devices, for the dashboard."""

    path = "/api/devices"
    guards = [session_guard]
    tags = ["dashboard: devices"]

    @post(
        "/pairing-codes/",
        status_code=201,
        operation_id="createPairingCode",
        **documented(BODY, SESSION_CSRF, FORBIDDEN, security=SESSION_AND_CSRF),
    )
    async def pairing_code(
        self, request: Request[Any, Any, Any], data: PairingCodeBody | None = None
    ) -> PairingCodeOut:
        """A one-time code (10 minutes) that pairs a phone; ``{"pool": true}`` pairs a
        platform pool phone (operator only)."""
        account = account_of(request)
        pool = bool(data and data.pool)
        if pool and not account.operator:
            raise forbidden("only the operator pairs platform pool phones")
        if not pool and account.account_type == "api_only":
            raise ApiError(
                403, "api_only_account", "API-only accounts send through the platform pool and pair no phones"
            )
        code = await broker_of(request).devices.create_pairing_code(None if pool else account)
        return PairingCodeOut(code.code, iso_utc(code.expires_at_ms) or "")

    @get(
        "/",
        operation_id="listDevices",
        **documented(PARAMETERS, SESSION, FORBIDDEN, security=SESSION_COOKIE_ONLY),
    )
    async def list_devices(self, request: Request[Any, Any, Any], pool: bool = False) -> list[DeviceOut]:
        """The account's devices with presence; ``?pool=true``: the platform pool's (operator)."""
        account = account_of(request)
        if pool and not account.operator:
            raise forbidden("only the operator sees the platform pool")
        return [device_out(d) for d in await broker_of(request).devices.list_for(None if pool else account)]

    @patch(
        "/{device_id:str}/",
        operation_id="updateDevice",
        **documented(BODY, SESSION_CSRF, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def update(self, request: Request[Any, Any, Any], device_id: PathId, data: DeviceUpdate) -> DeviceOut:
        """Rename a device, change its send budget (segments per minute and per day) or its
        send window."""
        broker = broker_of(request)
        ref = await owned_device(broker, account_of(request), device_id)
        window = data.send_window
        if isinstance(window, SendWindowIn):
            window = check_window(SendWindow(window.start, window.end, window.timezone))  # before anything changes
        await broker.devices.update(
            ref,
            name=data.device_name,
            segments_per_minute=data.segments_per_minute,
            segments_per_day=data.segments_per_day,
        )
        if window is not msgspec.UNSET:
            await broker.send_windows.set(ref, window)
        return device_out(await broker.devices.info(ref))

    @delete(
        "/{device_id:str}/",
        status_code=204,
        operation_id="removeDevice",
        **documented(PARAMETERS, SESSION_CSRF, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def remove(self, request: Request[Any, Any, Any], device_id: PathId) -> None:
        """Remove a device: its token stops working at once."""
        broker = broker_of(request)
        ref = await owned_device(broker, account_of(request), device_id)
        try:
            await broker.devices.remove(ref)
        except errors.DeviceNotFound:
            raise not_found("device") from None
