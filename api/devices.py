"""Devices: the phone's own endpoints (register, tasks, heartbeat) and the dashboard's
(pairing codes, list, settings, removal)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import Parameter

from api.credentials import device_guard, session_guard, unpaired
from api.errors import ApiError, forbidden, not_found, rate_headers
from api.limits import auth_rate_guard
from api.observability import claimed
from broker import Broker, errors
from broker.clock import iso_utc
from broker.records import Account, DeviceInfo, DeviceRef
from broker.validation import MAX_CLAIM_LIMIT

DeviceId = Annotated[str, Parameter(max_length=64)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    device_name: str
    phone_number: str = ""


class Registered(msgspec.Struct):
    device_id: str
    device_token: str
    device_name: str


class Task(msgspec.Struct):
    id: str
    to: str
    message: str


class HeartbeatBody(msgspec.Struct, forbid_unknown_fields=True):
    battery: int | None = None
    android_version: str | None = None
    app_version: str | None = None


class HeartbeatOut(msgspec.Struct):
    status: str
    device_id: str
    last_seen: str


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


class DeviceUpdate(msgspec.Struct, forbid_unknown_fields=True):
    device_name: str | None = None
    segments_per_minute: int | None = None
    segments_per_day: int | None = None


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
    )


class PhoneController(Controller):
    """What a paired phone calls."""

    path = "/api/devices"
    tags = ["phone"]

    @post("/register/", status_code=201, guards=[auth_rate_guard("register")], operation_id="registerDevice")
    async def register(self, data: RegisterBody, broker: Broker) -> Registered:
        """Redeem a one-time pairing code from the dashboard's Add Device screen."""
        device = await broker.devices.register(data.code, data.device_name, data.phone_number)
        return Registered(device.device_id, device.device_token, device.device_name)

    # The phone's hot paths take the request itself rather than the ``device`` and
    # ``broker`` dependencies: Litestar resolves two or more dependencies in an anyio
    # task group, two tasks per request, a cost these endpoints pay thousands of times
    # a second.

    @get("/{device_id:str}/tasks/", guards=[device_guard], operation_id="claimTasks")
    async def tasks(
        self, request: Request, limit: Annotated[int, Parameter(ge=1, le=MAX_CLAIM_LIMIT)] = 10
    ) -> Response[list[Task]]:
        """Atomically claim the messages this phone should send now (leased 120 s).
        Polling faster than the tasks limit gets 429 with ``Retry-After``."""
        try:
            result = await request.app.state.broker.messages.claim_tasks(request.state.device, limit)
        except errors.DeviceNotFound:
            raise unpaired(request) from None
        claimed(len(result.messages))
        return Response([Task(m.id, m.to, m.message) for m in result.messages], headers=rate_headers(result.rate))

    @post("/{device_id:str}/heartbeat/", status_code=200, guards=[device_guard], operation_id="heartbeat")
    async def heartbeat(self, request: Request, data: HeartbeatBody | None = None) -> HeartbeatOut:
        """The only presence signal: call every ~15 s."""
        data = data or HeartbeatBody()
        device: DeviceRef = request.state.device
        try:
            seen = await request.app.state.broker.presence.heartbeat(
                device, battery=data.battery, android_version=data.android_version, app_version=data.app_version
            )
        except errors.DeviceNotFound:
            raise unpaired(request) from None
        return HeartbeatOut("ok", device.device_id, iso_utc(seen) or "")


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

    @post("/pairing-codes/", status_code=201, operation_id="createPairingCode")
    async def pairing_code(
        self, account: Account, broker: Broker, data: PairingCodeBody | None = None
    ) -> PairingCodeOut:
        """A one-time code (10 minutes) that pairs a phone; ``{"pool": true}`` pairs a
        platform pool phone (operator only)."""
        pool = bool(data and data.pool)
        if pool and not account.operator:
            raise forbidden("only the operator pairs platform pool phones")
        if not pool and account.account_type == "api_only":
            raise ApiError(
                403, "api_only_account", "API-only accounts send through the platform pool and pair no phones"
            )
        code = await broker.devices.create_pairing_code(None if pool else account)
        return PairingCodeOut(code.code, iso_utc(code.expires_at_ms) or "")

    @get("/", operation_id="listDevices")
    async def list_devices(self, account: Account, broker: Broker, pool: bool = False) -> list[DeviceOut]:
        """The account's devices with presence; ``?pool=true``: the platform pool's (operator)."""
        if pool and not account.operator:
            raise forbidden("only the operator sees the platform pool")
        return [device_out(d) for d in await broker.devices.list_for(None if pool else account)]

    @patch("/{device_id:str}/", operation_id="updateDevice")
    async def update(self, device_id: DeviceId, data: DeviceUpdate, account: Account, broker: Broker) -> DeviceOut:
        """Rename a device or change its send budget (segments per minute and per day)."""
        ref = await owned_device(broker, account, device_id)
        await broker.devices.update(
            ref,
            name=data.device_name,
            segments_per_minute=data.segments_per_minute,
            segments_per_day=data.segments_per_day,
        )
        return device_out(await broker.devices.info(ref))

    @delete("/{device_id:str}/", status_code=204, operation_id="removeDevice")
    async def remove(self, device_id: DeviceId, account: Account, broker: Broker) -> Response[None]:
        """Remove a device: its token stops working at once."""
        ref = await owned_device(broker, account, device_id)
        try:
            await broker.devices.remove(ref)
        except errors.DeviceNotFound:
            raise not_found("device") from None
        return Response(None, status_code=204)
