"""Rate limits over HTTP: the per-address limit of signup, login and register, an
account's limits and its requests for higher ones, and the operator's answers.

The send and poll limits themselves are checked inside the enqueue and claim scripts
(one round trip); this module only shows and changes them.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar, Literal

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import OpenAPIType, Schema

from api.credentials import account_of, operator_guard, session_guard
from api.inputs import LimitValue, NoteText, PathId, ReasonText
from api.openapi import (
    BODY,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    PARAMETERS,
    SESSION,
    SESSION_AND_CSRF,
    SESSION_COOKIE_ONLY,
    SESSION_CSRF,
    documented,
)
from api.state import broker_of
from broker import Broker
from broker.clock import iso_utc
from broker.records import LIMIT_FIELDS, Account, LimitChange, LimitRequest, Limits


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The socket peer, or behind a trusted reverse proxy the address it appended last
    to ``X-Forwarded-For`` (the first ones are whatever the client claimed)."""
    if broker_of(connection).settings.trust_forwarded_for:
        # Every line of the header: a proxy may add its own line rather than append.
        forwarded = ",".join(connection.headers.getall("x-forwarded-for", []))
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last and len(last) <= 64:
            return client_key(last)
    client = connection.client
    return client_key(client.host) if client else "unknown"


def client_key(address: str) -> str:
    """The limiter's name for an address: IPv6 clients by their /64, which one host
    usually holds whole (counting each of its addresses apart would let it rotate)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def auth_rate_guard(name: str) -> Any:
    """A guard spending one request of the ``name`` limiter of the client's address:
    ``auth_per_minute`` with bursts of ``auth_burst``, before the body is read."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        await broker_of(connection).limits.limit_client(name, client_address(connection))

    return guard


class LimitsOut(msgspec.Struct):
    sends_per_second: int
    sends_burst: int
    tasks_per_minute: int
    tasks_burst: int
    daily_quota: int
    quota_used_today: int
    pending_request: LimitRequestOut | None


class LimitChangeBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    sends_per_second: LimitValue | None = None
    sends_burst: LimitValue | None = None
    tasks_per_minute: LimitValue | None = None
    tasks_burst: LimitValue | None = None
    daily_quota: LimitValue | None = None

    def change(self) -> LimitChange:
        return LimitChange(**{name: getattr(self, name) for name in LIMIT_FIELDS})


class LimitRequestBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: ReasonText
    sends_per_second: LimitValue | None = None
    tasks_per_minute: LimitValue | None = None
    daily_quota: LimitValue | None = None

    # The broker refuses a request that asks for no limit at all (400).
    openapi_any_of: ClassVar[list[Schema]] = [
        Schema(required=[name], properties={name: Schema(type=OpenAPIType.INTEGER)})
        for name in ("sends_per_second", "tasks_per_minute", "daily_quota")
    ]


class DecisionBody(LimitChangeBody):
    """What the operator grants (what was asked when left out) and a note for the account."""

    note: NoteText = ""


class LimitRequestOut(msgspec.Struct):
    id: str
    account_id: str
    email: str
    status: str
    reason: str
    requested: LimitChangeBody
    granted: LimitChangeBody | None
    note: str
    created_at: str
    decided_at: str | None


def _change_out(change: LimitChange | None) -> LimitChangeBody | None:
    return None if change is None else LimitChangeBody(**msgspec.structs.asdict(change))


def request_out(request: LimitRequest) -> LimitRequestOut:
    return LimitRequestOut(
        request.id,
        request.account_id,
        request.email,
        request.status,
        request.reason,
        _change_out(request.requested) or LimitChangeBody(),
        _change_out(request.granted),
        request.note,
        iso_utc(request.created_ms) or "",
        iso_utc(request.decided_ms),
    )


async def limits_out(broker: Broker, account: Account) -> LimitsOut:
    limits: Limits = broker.limits.of(account)
    pending = await broker.limits.pending_request(account)
    return LimitsOut(
        limits.sends_per_second,
        limits.sends_burst,
        limits.tasks_per_minute,
        limits.tasks_burst,
        limits.daily_quota,
        await broker.limits.quota_used(account),
        None if pending is None else request_out(pending),
    )


class AccountLimitsController(Controller):
    path = "/api/account"
    guards = [session_guard]
    tags = ["dashboard: account"]

    @get("/limits/", operation_id="getLimits", **documented(SESSION, security=SESSION_COOKIE_ONLY))
    async def limits(self, request: Request[Any, Any, Any]) -> LimitsOut:
        """The account's rate limits, daily quota and use today, and a request waiting for
        the operator, if any. Tasks limits apply to each of the account's phones."""
        return await limits_out(broker_of(request), account_of(request))

    @post(
        "/limit-requests/",
        status_code=201,
        operation_id="requestLimits",
        **documented(BODY, SESSION_CSRF, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def request_limits(self, request: Request[Any, Any, Any], data: LimitRequestBody) -> LimitRequestOut:
        """Ask the operator for higher limits (one request waits at a time: 409 otherwise)."""
        requested = LimitChange(
            sends_per_second=data.sends_per_second, tasks_per_minute=data.tasks_per_minute, daily_quota=data.daily_quota
        )
        return request_out(await broker_of(request).limits.request(account_of(request), requested, data.reason))

    @get("/limit-requests/", operation_id="listOwnLimitRequests", **documented(SESSION, security=SESSION_COOKIE_ONLY))
    async def list_requests(self, request: Request[Any, Any, Any]) -> list[LimitRequestOut]:
        """The account's requests for higher limits, newest first, with the answers."""
        return [
            request_out(r) for r in await broker_of(request).limits.list_requests(account_id=account_of(request).id)
        ]


OPERATOR = (*SESSION_CSRF, *FORBIDDEN)  # the operator's session; 403 for anyone else


class OperatorController(Controller):
    path = "/api/operator"
    guards = [session_guard, operator_guard]
    tags = ["operator"]

    @get(
        "/limit-requests/",
        operation_id="listLimitRequests",
        **documented(PARAMETERS, SESSION, FORBIDDEN, security=SESSION_COOKIE_ONLY),
    )
    async def list_requests(
        self, request: Request[Any, Any, Any], status: Literal["pending", "approved", "rejected"] | None = None
    ) -> list[LimitRequestOut]:
        """Every account's requests for higher limits, newest first."""
        return [request_out(r) for r in await broker_of(request).limits.list_requests(status=status)]

    @post(
        "/limit-requests/{request_id:str}/approve/",
        status_code=200,
        operation_id="approveLimitRequest",
        **documented(BODY, OPERATOR, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def approve(
        self, request: Request[Any, Any, Any], request_id: PathId, data: DecisionBody | None = None
    ) -> LimitRequestOut:
        """Grant a request: what was asked, or the limits given here. A raised rate
        without a burst gets a burst scaled like the default one."""
        data = data or DecisionBody()
        decided = await broker_of(request).limits.decide_request(
            request_id, approve=True, granted=data.change(), note=data.note
        )
        return request_out(decided)

    @post(
        "/limit-requests/{request_id:str}/reject/",
        status_code=200,
        operation_id="rejectLimitRequest",
        **documented(BODY, OPERATOR, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def reject(
        self, request: Request[Any, Any, Any], request_id: PathId, data: DecisionBody | None = None
    ) -> LimitRequestOut:
        """Refuse a request; the note tells the account why."""
        data = data or DecisionBody()
        decided = await broker_of(request).limits.decide_request(request_id, approve=False, note=data.note)
        return request_out(decided)

    @patch(
        "/accounts/{account_id:str}/limits/",
        operation_id="setLimits",
        **documented(BODY, OPERATOR, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def set_limits(self, request: Request[Any, Any, Any], account_id: PathId, data: LimitChangeBody) -> LimitsOut:
        """Set an account's limits directly; fields left out keep their value."""
        broker = broker_of(request)
        account = await broker.limits.set(account_id, data.change())
        return await limits_out(broker, account)
