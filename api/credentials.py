"""The three credentials, resolved by guards before any body is read.

- device token: ``X-Device-Token`` or ``Authorization: Bearer``; acts as one device;
- dashboard session: cookie ``sessionid``, and on unsafe methods the ``csrftoken`` cookie
  echoed in ``X-CSRFToken`` (checked against the session's own token);
- external API key: ``api_key`` in the JSON body, send-only.

Each guard stores what it resolved on ``connection.state``; handlers read it back with
:func:`device_of`, :func:`account_of` and :func:`session_of`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from api.errors import forbidden, not_authenticated, not_json, not_sent_as_json
from api.state import broker_in, broker_of
from broker import Broker, errors
from broker.api_keys import Admission
from broker.records import Account, DeviceRef, Session

T = TypeVar("T")

SESSION_COOKIE = "sessionid"
CSRF_COOKIE = "csrftoken"
CSRF_HEADER = "X-CSRFToken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def device_token(token: str | None, authorization: str | None) -> str | None:
    """The device token sent as ``X-Device-Token`` (first) or ``Authorization: Bearer``, from
    those two headers' values; None when neither carries one."""
    if token:
        return token.strip()
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _device_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    headers = connection.headers
    return device_token(headers.get("x-device-token"), headers.get("authorization"))


async def device_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A paired device, acting only as itself: another device's id is 403.

    The token's device comes from the broker's per-process memory of tokens (one Redis
    round trip saved on every poll and heartbeat); a device removed since is caught by
    the handler's script call, which then answers through :func:`unpaired`."""
    await admit_device(
        broker_of(connection), connection.scope["state"], _device_token(connection), connection.path_params
    )


async def admit_device(
    broker: Broker, state: dict[str, Any], token: str | None, path_params: dict[str, Any]
) -> DeviceRef:
    """:func:`device_guard`'s work, on the request's parts (the phone's hot path,
    ``api/hot_path.py``, calls it without a connection object): the device of ``token``,
    kept in the connection's ``state`` (the scope's) with the token, or the guard's 401
    or 403."""
    if not token:
        raise not_authenticated("send the device token as X-Device-Token or Authorization: Bearer")
    device = await broker.devices.for_token(token)
    if device is None:
        raise not_authenticated("unknown device token")
    state["device"] = device
    state["device_token"] = token
    path_device = path_params.get("device_id")
    if path_device is not None and path_device != device.device_id:
        # A removed device's token is unknown, not another's: a fresh lookup tells.
        if await broker.devices.find_by_token(token) is None:
            raise unpaired_token(broker, token)
        raise forbidden("this token belongs to another device")
    return device


DEVICE_CREDENTIALS = frozenset({b"x-device-token", b"authorization"})
"""The headers that carry a device token (as the ASGI scope names them)."""


async def admit_device_in(scope: Any, headers: dict[bytes, bytes]) -> tuple[Broker, DeviceRef]:
    """A hot path's :func:`device_guard` (``api/hot_path.py``): the broker and the device
    of the token in ``headers`` (the request's :data:`DEVICE_CREDENTIALS`, each sent once),
    admitted as the guard admits it."""
    broker = broker_in(scope)
    token = headers.get(b"x-device-token")
    authorization = headers.get(b"authorization")
    sent = device_token(
        None if token is None else token.decode("latin-1"),
        None if authorization is None else authorization.decode("latin-1"),
    )
    return broker, await admit_device(broker, scope["state"], sent, scope["path_params"])


def unpaired(connection: ASGIConnection[Any, Any, Any, Any]) -> Exception:
    """The 401 for a token whose device was removed after the token was remembered:
    the token is forgotten, and answered as any unknown token is."""
    return unpaired_token(broker_of(connection), connection.state.device_token)


def unpaired_token(broker: Broker, token: str) -> Exception:
    """:func:`unpaired`, given the broker and the token."""
    broker.devices.forget_token(token)
    return not_authenticated("unknown device token")


async def still_paired(broker: Broker, state: dict[str, Any]) -> bool:
    """Whether the device token :func:`device_guard` let in (kept in the connection's
    ``state``) still names a device (a fresh lookup)."""
    return await broker.devices.find_by_token(state["device_token"]) is not None


async def session_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A logged-in dashboard user; unsafe methods must echo the CSRF token."""
    session_id = connection.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise not_authenticated("log in first")
    broker = broker_of(connection)
    session = await broker.sessions.get(session_id)
    if session is None:
        raise not_authenticated("the session expired or was logged out")
    if connection.scope["method"] not in SAFE_METHODS:
        header = connection.headers.get(CSRF_HEADER, "")
        if not header or not hmac.compare_digest(header.encode(), session.csrf_token.encode()):
            raise forbidden("CSRF token missing or wrong: echo the csrftoken cookie in X-CSRFToken")
    try:
        account = await broker.accounts.get(session.account_id)
    except errors.AccountNotFound:
        raise not_authenticated("the account no longer exists") from None
    connection.state.session = session
    connection.state.account = account


async def operator_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Runs after session_guard: only the operator passes."""
    if not connection.state.account.operator:
        raise forbidden("only the operator may do that")


class _ApiKeyField(msgspec.Struct):
    api_key: str = ""


async def api_key_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The send-only API key, read from the JSON body before anything else in it.

    No body, or JSON without a string ``api_key`` (an array, a number, an object
    without one), is a missing key: 401. A body that is not JSON at all hides whatever
    key it holds: 400 ``invalid_json`` (415 when it is not even sent as JSON)."""
    request: Request[Any, Any, Any] = connection  # type: ignore[assignment]
    body = await request.body()
    key = ""
    if body.strip():
        try:
            try:
                key = msgspec.json.decode(body, type=_ApiKeyField).api_key
            except msgspec.ValidationError:  # stopped at a wrong value: is the rest JSON?
                msgspec.json.decode(body)
        except RecursionError:
            pass  # a value nested thousands deep, skipped on the way to api_key
        except msgspec.DecodeError as exc:  # a ValidationError is one too, caught above
            if request.content_type[0] != "application/json":
                raise not_sent_as_json() from None
            raise not_json(exc) from None
    await admit_api_key(broker_of(connection), connection.scope["state"], key)


async def admit_api_key(broker: Broker, state: dict[str, Any], key: str) -> Admission:
    """:func:`api_key_guard`'s check of the key it read (the external send's hot path,
    ``api/hot_path.py``, calls it on the key of a body it decoded): the key's admission
    (:meth:`broker.api_keys.ApiKeys.admit`), kept in the connection's ``state`` (the
    scope's) with its account and the key, or the guard's 401."""
    if not key:
        raise not_authenticated("send the API key as api_key in the JSON body")
    admission = await broker.api_keys.admit(key)
    if admission is None:
        raise not_authenticated("unknown or revoked API key")
    state["account"] = admission.account
    state["admission"] = admission
    state["api_key"] = key
    return admission


async def as_key_holder(
    broker: Broker, state: dict[str, Any], enqueue: Callable[[Account, int | None], Awaitable[T]]
) -> T:
    """``enqueue(account, epoch)`` as the account whose API key :func:`admit_api_key`
    admitted, under the credentials epoch it was admitted under. When the epoch has moved
    since (a key of the account revoked, its limits changed; nothing was queued), the key
    is checked afresh (401 if it was revoked) and ``enqueue`` runs once more, with the
    account as it is now and no epoch to hold."""
    admission: Admission = state["admission"]
    try:
        return await enqueue(admission.account, admission.epoch)
    except errors.StaleCredentials:
        broker.api_keys.forget(state["api_key"])
        admission = await admit_api_key(broker, state, state["api_key"])
        return await enqueue(admission.account, None)


def device_of(connection: ASGIConnection[Any, Any, Any, Any]) -> DeviceRef:
    """The device that :func:`device_guard` let in."""
    return connection.state.device  # type: ignore[no-any-return]


def account_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Account:
    """The account that :func:`session_guard` or :func:`api_key_guard` let in."""
    return connection.state.account  # type: ignore[no-any-return]


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Session:
    """The dashboard session that :func:`session_guard` let in."""
    return connection.state.session  # type: ignore[no-any-return]
