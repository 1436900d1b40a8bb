"""Sign up, log in, log out: the dashboard session."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar import Controller, Request, Response, post
from litestar.datastructures import Cookie

from api.credentials import CSRF_COOKIE, SESSION_COOKIE, session_guard, session_of
from api.errors import ApiError
from api.inputs import Email
from api.limits import auth_rate_guard
from api.openapi import BODY, CONFLICT, FORBIDDEN, PUBLIC, SESSION_AND_CSRF, SESSION_CSRF, documented
from api.state import broker_of
from broker import errors
from broker.records import Account, Session

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both bad pairs take as long.
_DUMMY_HASH = _hasher.hash("connecfy-no-such-account")
MIN_PASSWORD = 8
MAX_PASSWORD = 256


Password = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    account_type: Literal["self_managed", "api_only"]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class AccountOut(msgspec.Struct):
    id: str
    email: str
    account_type: str
    operator: bool
    daily_quota: int


def account_out(account: Account) -> AccountOut:
    return AccountOut(account.id, account.email, account.account_type, account.operator, account.daily_quota)


async def hash_password(password: str) -> str:
    """argon2id, off the event loop (about 150 ms of CPU)."""
    return await asyncio.to_thread(_hasher.hash, password)


async def password_matches(stored_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and bool(stored_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ApiError(400, "invalid_password", f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def with_session_cookies(response: Response[Any], request: Request[Any, Any, Any], session: Session) -> Response[Any]:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    max_age = max(0, (session.expires_at_ms - broker_of(request).clock()) // 1000)
    response.set_cookie(
        Cookie(
            key=SESSION_COOKIE,
            value=session.id,
            httponly=True,
            samesite="lax",
            secure=secure,
            max_age=max_age,
            path="/",
        )
    )
    response.set_cookie(
        Cookie(
            key=CSRF_COOKIE,
            value=session.csrf_token,
            httponly=False,
            samesite="lax",
            secure=secure,
            max_age=max_age,
            path="/",
        )
    )
    return response


class AuthController(Controller):
    path = "/api/auth"
    tags = ["dashboard: account"]

    @post(
        "/signup/",
        status_code=201,
        guards=[auth_rate_guard("signup")],
        operation_id="signup",
        **documented(BODY, PUBLIC, FORBIDDEN, CONFLICT),
    )
    async def signup(self, request: Request[Any, Any, Any], data: SignupBody) -> Response[AccountOut]:
        """Create an account (self-managed or API-only) and log in."""
        broker = broker_of(request)
        if not broker.settings.signup_open:
            raise ApiError(403, "signup_closed", "signup is closed on this server")
        _check_password(data.password)
        account = await broker.accounts.create(
            data.email, data.account_type, password_hash=await hash_password(data.password)
        )
        session = await broker.sessions.create(account)
        return with_session_cookies(Response(account_out(account), status_code=201), request, session)

    @post(
        "/login/",
        status_code=200,
        guards=[auth_rate_guard("login")],
        operation_id="login",
        **documented(BODY, PUBLIC, (401,)),
    )
    async def login(self, request: Request[Any, Any, Any], data: LoginBody) -> Response[AccountOut]:
        """Log in; any bad email/password pair gets the same 401."""
        broker = broker_of(request)
        try:
            account: Account | None = await broker.accounts.find_by_email(data.email)
        except (errors.AccountNotFound, errors.InvalidInput):
            account = None
        if not await password_matches(account.password_hash if account else "", data.password) or account is None:
            raise ApiError(401, "bad_credentials", "wrong email or password")
        session = await broker.sessions.create(account)
        return with_session_cookies(Response(account_out(account), status_code=200), request, session)

    @post(
        "/logout/",
        status_code=204,
        guards=[session_guard],
        operation_id="logout",
        **documented(BODY, SESSION_CSRF, security=SESSION_AND_CSRF),
    )
    async def logout(self, request: Request[Any, Any, Any]) -> Response[None]:
        """End the session; both cookies are cleared."""
        await broker_of(request).sessions.delete(session_of(request).id)
        response: Response[None] = Response(None, status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response
