"""Sign up, log in, log out: the dashboard session."""

from __future__ import annotations

import asyncio
from typing import Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar import Controller, Request, Response, post
from litestar.datastructures import Cookie

from api.credentials import CSRF_COOKIE, SESSION_COOKIE, session_guard
from api.errors import ApiError
from api.limits import auth_rate_guard
from broker import Broker, errors
from broker.records import Account, Session

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both bad pairs take as long.
_DUMMY_HASH = _hasher.hash("connecfy-no-such-account")
MIN_PASSWORD = 8
MAX_PASSWORD = 256


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str
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


def with_session_cookies(response: Response, request: Request, session: Session) -> Response:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    max_age = max(0, (session.expires_at_ms - request.app.state.broker.clock()) // 1000)
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

    @post("/signup/", status_code=201, guards=[auth_rate_guard("signup")], operation_id="signup")
    async def signup(self, request: Request, data: SignupBody, broker: Broker) -> Response[AccountOut]:
        """Create an account (self-managed or API-only) and log in."""
        if not broker.settings.signup_open:
            raise ApiError(403, "signup_closed", "signup is closed on this server")
        _check_password(data.password)
        account = await broker.accounts.create(
            data.email, data.account_type, password_hash=await hash_password(data.password)
        )
        session = await broker.sessions.create(account)
        return with_session_cookies(Response(account_out(account), status_code=201), request, session)

    @post("/login/", status_code=200, guards=[auth_rate_guard("login")], operation_id="login")
    async def login(self, request: Request, data: LoginBody, broker: Broker) -> Response[AccountOut]:
        """Log in; any bad email/password pair gets the same 401."""
        try:
            account: Account | None = await broker.accounts.find_by_email(data.email)
        except (errors.AccountNotFound, errors.InvalidInput):
            account = None
        if not await password_matches(account.password_hash if account else "", data.password) or account is None:
            raise ApiError(401, "bad_credentials", "wrong email or password")
        session = await broker.sessions.create(account)
        return with_session_cookies(Response(account_out(account), status_code=200), request, session)

    @post("/logout/", status_code=204, guards=[session_guard], operation_id="logout")
    async def logout(self, session: Session, broker: Broker) -> Response[None]:
        """End the session; both cookies are cleared."""
        await broker.sessions.delete(session.id)
        response: Response[None] = Response(None, status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response
