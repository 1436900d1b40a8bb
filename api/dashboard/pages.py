"""The dashboard's pages: read through the broker and the JSON API's converters, render
with Jinja. Changes go through the JSON API from ``static/app.js``.

A page request without a live session is redirected to the login page (HTML), never
answered with the JSON 401 of the API.
"""

from __future__ import annotations

import csv
import io
import zoneinfo
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
from litestar import Controller, MediaType, Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException, NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Stream, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.api_keys import key_out
from api.campaigns import campaign_out
from api.credentials import SESSION_COOKIE, account_of, session_guard
from api.dashboard.activity import RECENT_MESSAGES, hourly_activity
from api.dashboard.guides import android_guide_html
from api.dashboard.pairing_qr import pairing_qr_svg, pairing_uri
from api.devices import device_out
from api.errors import ApiError, http_error
from api.limits import limits_out, request_out
from api.sms import MessageOut, message_out
from api.state import broker_of
from api.suppressions import suppression_out
from api.webhooks import webhook_out
from broker import Broker, errors, ids, schedule
from broker.campaign_files import MAX_FILE_BYTES, MAX_ROWS
from broker.clock import duration_text, iso_utc
from broker.history import counterpart
from broker.messages import MAX_SIM_SLOTS, MAX_VALID_FOR_S, MIN_VALID_FOR_S
from broker.records import STATUSES, Account
from broker.segments import GSM_BASIC, GSM_EXTENSION
from broker.suppressions import PAGE_MAX as SUPPRESSIONS_PAGE_MAX
from broker.validation import MAX_NAME_CHARS
from broker.webhooks.events import EVENT_TYPES, SIGNATURE_HEADER

HERE = Path(__file__).parent
LOGIN_PATH = "/login/"
THREADS_PER_PAGE = 50
THREAD_PAGE = 50  # messages of one conversation a page
DAY_MS = 86_400_000


def utc_day_ms(day: str | None, field: str) -> int | None:
    """The start of a UTC day written ``YYYY-MM-DD`` (a date field's value), in ms since
    the epoch; None when not given; InvalidInput naming ``field`` for anything else."""
    if day is None:
        return None
    try:
        moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise errors.InvalidInput(f"{field}: a day is written YYYY-MM-DD", field=field) from None
    return int(moment.timestamp() * 1000)


SUPPRESSIONS_PER_PAGE = 50
CAMPAIGNS_PER_PAGE = 50
MAX_SERVER_ADDRESS = 200  # characters of a server address typed for the phone
# The GSM 03.38 tables, for the pages that count segments as a person types.
GSM_TABLES = {"basic": "".join(sorted(GSM_BASIC)), "extension": "".join(sorted(GSM_EXTENSION))}
# Everything the pages load comes from this server; they are never framed by another site.
PAGE_HEADERS = [
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
    ),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Cache-Control", value="no-store"),  # pages show account data
]


class LoginRequired(Exception):
    """A page was asked for without a live session."""


async def page_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The API's session guard, with "log in first" turned into a redirect."""
    try:
        await session_guard(connection, handler)
    except ApiError as exc:
        if exc.status_code == 401:
            raise LoginRequired from None
        raise


@cache
def time_zones() -> list[str]:
    """The IANA time zone names a send window may use, for the Devices page to offer."""
    return sorted(zoneinfo.available_timezones())


def see_other(location: str) -> Response[str]:
    return Response("", status_code=303, media_type=MediaType.TEXT, headers={"location": location})


def _to_login(request: Request[Any, Any, Any], _: LoginRequired) -> Response[str]:
    path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path  # as asked: trailing slash kept
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(f"{LOGIN_PATH}?next={quote(target, safe='')}")


def wants_page(request: Request[Any, Any, Any]) -> bool:
    """A browser asking for a page (HTML preferred to JSON), not a call to the JSON API."""
    if request.url.path.startswith("/api/"):
        return False
    return request.accept.best_match(["application/json", "text/html"]) == "text/html"


def page_or_json_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A wrong address answers a browser with an HTML page "not found" (404); the JSON API,
    and anyone asking for JSON, keep the JSON error."""
    if exc.status_code == 404 and wants_page(request):
        return Template(
            template_name="not_found.html",
            context={"account": None, "nav": "not-found", "unread": 0, "path": request.url.path},
            status_code=404,
            headers={h.name: h.value for h in PAGE_HEADERS if h.value is not None},
        )
    return http_error(request, exc)


def local_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server only (no open redirect).

    A single leading "/", then printable ASCII only (0x21-0x7E) and no backslash: browsers
    drop TAB, CR and LF from a URL ("/\t/evil.example" becomes "//evil.example") and read
    "\\" as "/"; a non-ASCII value could not be sent in the Location header. Anything
    else goes home."""
    if (
        value
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and all("\x21" <= c <= "\x7e" for c in value)
    ):
        return value
    return "/"


def is_server_address(value: str) -> bool:
    """An address a phone can be given: http or https, a host, no query or fragment."""
    if len(value) > MAX_SERVER_ADDRESS or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment


def server_url(request: Request[Any, Any, Any]) -> str:
    """The base URL the browser used to reach the dashboard: what the phone should call."""
    return str(request.base_url).rstrip("/")


async def _page(
    name: str, request: Request[Any, Any, Any], nav: str, *, unread: int | None = None, **context: Any
) -> Template:
    """A page; behind the login, with the inbox's count of new SMS for the navigation
    (``unread``: already known), which the page's script then reads again every
    ``CONNECFY_INBOX_POLL_MS`` from ``GET /api/inbox/``."""
    account: Account | None = getattr(request.state, "account", None)
    broker = broker_of(request)
    if account is not None and unread is None:
        unread = await broker.inbox.unread(account)
    return Template(
        template_name=name,
        context={
            "account": account,
            "nav": nav,
            "unread": unread or 0,
            "inbox_poll_ms": broker.settings.inbox_poll_ms,
            **context,
        },
    )


class PublicPages(Controller):
    """Sign up and log in: the only pages open without a session."""

    path = "/"

    @get("/login/")
    async def login(self, request: Request[Any, Any, Any], next: str | None = None) -> Response[Any]:
        broker = broker_of(request)
        target = local_next(next)
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id and await broker.sessions.get(session_id) is not None:
            return see_other(target)
        return await _page("login.html", request, "login", next=target)

    @get("/signup/")
    async def signup(self, request: Request[Any, Any, Any]) -> Template:
        return await _page("signup.html", request, "signup", signup_open=broker_of(request).settings.signup_open)

    @get("/help/android-app/")
    async def android_app(self, request: Request[Any, Any, Any]) -> Template:
        """How to build and install the phone app (``docs/android.md``)."""
        return await _page("guide.html", request, "help", title="The Android app", guide=android_guide_html())


class AccountPages(Controller):
    """Everything behind the login."""

    path = "/"
    guards = [page_guard]

    @get("/")
    async def overview(self, request: Request[Any, Any, Any]) -> Template:
        account, broker = account_of(request), broker_of(request)
        page = await broker.message_log.page(account, limit=RECENT_MESSAGES)
        activity = hourly_activity(page.items, broker.clock(), truncated=page.next_cursor is not None)
        return await _page("overview.html", request, "overview", activity=activity)

    @get("/devices/")
    async def devices(self, request: Request[Any, Any, Any]) -> Template:
        account, broker = account_of(request), broker_of(request)
        devices = [] if account.account_type == "api_only" else await broker.devices.list_for(account)
        return await _page(
            "devices.html",
            request,
            "devices",
            devices=[device_out(d) for d in devices],
            time_zones=time_zones(),
            max_name_chars=MAX_NAME_CHARS,
        )

    @get("/devices/add/")
    async def add_device(self, request: Request[Any, Any, Any], pool: str | None = None) -> Template:
        account, broker = account_of(request), broker_of(request)
        # A string, not a bool: "?pool=maybe" is a page, not a JSON 400; only "true" asks for the pool.
        pool_code = pool == "true" and account.operator
        owner = None if pool_code else account  # None: the platform pool
        known = [] if owner is not None and owner.account_type == "api_only" else await broker.devices.list_for(owner)
        return await _page(
            "add_device.html",
            request,
            "devices",
            pool=pool_code,
            server_url=server_url(request),
            max_server_address=MAX_SERVER_ADDRESS,
            known_device_ids=[d.device_id for d in known],
            code_ttl_seconds=broker.settings.pairing_code_ttl_seconds,
        )

    @get("/devices/pairing-qr.svg")
    async def pairing_qr(self, request: Request[Any, Any, Any], code: str, server: str | None = None) -> Response[str]:
        """The QR code of a pairing code (the code itself is made by the JSON API), for
        the address the browser used or ``server``, the one the person typed for the phone."""
        if not ids.is_plain_id(code, max_chars=32):
            raise ApiError(400, "invalid_request", "code must be letters and digits")
        if server is not None and not is_server_address(server):
            raise ApiError(400, "invalid_request", "server must be an http:// or https:// address with a host")
        svg = pairing_qr_svg(pairing_uri(server or server_url(request), code))
        return Response(svg, media_type="image/svg+xml", headers={"cache-control": "no-store"})

    @get("/send/")
    async def send(self, request: Request[Any, Any, Any]) -> Template:
        account, broker = account_of(request), broker_of(request)
        devices = [] if account.account_type == "api_only" else await broker.devices.list_for(account)
        return await _page(
            "send.html",
            request,
            "send",
            devices=[device_out(d) for d in devices],
            gsm_tables=GSM_TABLES,
            max_sim_slots=MAX_SIM_SLOTS,
            default_expiry=duration_text(broker.settings.message_ttl_seconds),
            expiry_range=f"{duration_text(MIN_VALID_FOR_S)} to {duration_text(MAX_VALID_FOR_S)}",
            max_days_ahead=schedule.MAX_AHEAD_MS // 86_400_000,
        )

    @get("/campaigns/")
    async def campaigns(self, request: Request[Any, Any, Any], cursor: str | None = None) -> Template:
        """The account's campaigns, newest first, and the form for a new one: the file is read
        in the browser for its columns and a preview, then uploaded to ``POST /api/campaigns/``."""
        account, broker = account_of(request), broker_of(request)
        problem = None
        items: list[Any] = []
        next_cursor = None
        try:
            page = await broker.campaigns.page(account, limit=CAMPAIGNS_PER_PAGE, cursor=cursor or None)
            items = [campaign_out(c) for c in page.items]
            next_cursor = page.next_cursor
        except errors.InvalidInput as exc:
            problem = exc.detail
        devices = [] if account.account_type == "api_only" else await broker.devices.list_for(account)
        return await _page(
            "campaigns.html",
            request,
            "campaigns",
            campaigns=items,
            next_cursor=next_cursor,
            paged=bool(cursor),
            problem=problem,
            devices=[device_out(d) for d in devices],
            gsm_tables=GSM_TABLES,
            max_file_mib=MAX_FILE_BYTES // (1024 * 1024),
            max_file_bytes=MAX_FILE_BYTES,
            max_rows=MAX_ROWS,
            max_name_chars=MAX_NAME_CHARS,
            max_days_ahead=schedule.MAX_AHEAD_MS // 86_400_000,
        )

    @get("/campaigns/{campaign_id:str}/")
    async def campaign(self, request: Request[Any, Any, Any], campaign_id: str) -> Template:
        """One campaign: its report, Start and Cancel, and its progress, which the page's
        script reads again from ``GET /api/campaigns/<id>/`` while it goes on."""
        account, broker = account_of(request), broker_of(request)
        if not ids.is_plain_id(campaign_id):
            raise NotFoundException()
        try:
            found = await broker.campaigns.get(account, campaign_id)
        except errors.CampaignNotFound:
            raise NotFoundException() from None
        return await _page(
            "campaign.html",
            request,
            "campaigns",
            campaign=msgspec.to_builtins(campaign_out(found)),
            device_names=await _device_names(broker, account),
        )

    @get("/messages/")
    async def messages(
        self,
        request: Request[Any, Any, Any],
        status: str | None = None,
        device_id: str | None = None,
        direction: str | None = None,
        phone: str | None = None,
        campaign_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
    ) -> Template:
        """The account's messages, 50 a page, with the filters of ``GET /api/sms/``; the
        dates (``since``, ``until``: days, both included) are UTC days, as the page shows
        times in UTC."""
        account, broker = account_of(request), broker_of(request)
        given = {
            "status": status,
            "device_id": device_id,
            "direction": direction,
            "phone": phone,
            "campaign_id": campaign_id,
            "since": since,
            "until": until,
        }
        filters = {k: v.strip() for k, v in given.items() if v and v.strip()}
        devices = [] if account.account_type == "api_only" else await broker.devices.list_for(account)
        problem = None
        items: list[Any] = []
        next_cursor = None
        try:
            named = {k: v for k, v in filters.items() if k not in ("campaign_id", "since", "until")}
            first_day, last_day = utc_day_ms(filters.get("since"), "since"), utc_day_ms(filters.get("until"), "until")
            page = await broker.message_log.page(
                account,
                limit=50,
                cursor=cursor or None,
                campaign=filters.get("campaign_id"),
                since_ms=first_day,
                until_ms=None if last_day is None else last_day + DAY_MS - 1,
                **named,
            )
            items = [message_out(r) for r in page.items]
            next_cursor = page.next_cursor
        except errors.InvalidInput as exc:
            problem = exc.detail
        return await _page(
            "messages.html",
            request,
            "messages",
            messages=items,
            next_cursor=next_cursor,
            statuses=STATUSES,
            devices=[device_out(d) for d in devices],
            device_names={d.device_id: d.device_name for d in devices},
            filters=filters,
            paged=bool(cursor),
            problem=problem,
        )

    @get("/messages/{message_id:str}/")
    async def message(self, request: Request[Any, Any, Any], message_id: str) -> Template:
        """One message with its status timeline, read again by the page's script while it
        is open; another account's message, or none, is the page "not found"."""
        account, broker = account_of(request), broker_of(request)
        if not ids.is_plain_id(message_id):
            raise NotFoundException()
        try:
            record = await broker.message_log.get(account.shard, message_id)
        except errors.MessageNotFound:
            raise NotFoundException() from None
        if record.account != account.id:
            raise NotFoundException()
        return await _page(
            "message.html",
            request,
            "messages",
            message=message_out(record),
            device_names=await _device_names(broker, account),
        )

    @get("/inbox/")
    async def inbox(self, request: Request[Any, Any, Any], cursor: str | None = None) -> Template:
        """One thread per number that wrote, at its latest message either way, newest
        first. Opening it is what makes the SMS received so far seen (the navigation's
        count); a thread whose latest message is an SMS received since the previous visit
        is marked new (one answered since is not)."""
        account, broker = account_of(request), broker_of(request)
        visit = await broker.inbox.open(account)
        problem = None
        threads: list[Thread] = []
        next_cursor = None
        try:
            page = await broker.message_log.conversations(account, limit=THREADS_PER_PAGE, cursor=cursor or None)
            threads = [
                Thread(counterpart(r), message_out(r), r.direction == "inbound" and r.created > visit.previous_ms)
                for r in page.items
            ]
            next_cursor = page.next_cursor
        except errors.InvalidInput as exc:
            problem = exc.detail
        devices = await _device_names(broker, account)
        return await _page(
            "inbox.html",
            request,
            "inbox",
            unread=0,
            threads=threads,
            device_names=devices,
            next_cursor=next_cursor,
            paged=bool(cursor),
            problem=problem,
        )

    @get("/inbox/thread/")
    async def thread(
        self, request: Request[Any, Any, Any], phone: str | None = None, cursor: str | None = None
    ) -> Response[Any]:
        """The messages to and from one number, oldest first on the page (the newest 50,
        or older ones by cursor), with a reply form: through the phone that number last
        wrote to (self-managed), or the platform pool (API-only)."""
        account, broker = account_of(request), broker_of(request)
        if not phone or not phone.strip():
            return see_other("/inbox/")
        counterpart = phone.strip()
        problem = None
        items: list[Any] = []
        next_cursor = None
        last_received = None
        try:
            page = await broker.message_log.page(account, limit=THREAD_PAGE, cursor=cursor or None, phone=counterpart)
            items = [message_out(r) for r in reversed(page.items)]
            next_cursor = page.next_cursor
            # The newest SMS from that number: on this page when it is the latest one, else looked up.
            last_received = next((r for r in page.items if r.direction == "inbound"), None) if not cursor else None
            if last_received is None:
                newest = await broker.message_log.page(account, limit=1, phone=counterpart, direction="inbound")
                last_received = newest.items[0] if newest.items else None
        except errors.InvalidInput as exc:
            problem = exc.detail
        devices = [] if account.account_type == "api_only" else await broker.devices.list_for(account)
        reply_device = next(
            (d for d in devices if last_received is not None and d.device_id == last_received.device), None
        )
        suppressed = None
        if counterpart.startswith("+") and problem is None:
            try:
                suppressed = suppression_out(await broker.suppressions.get(account, counterpart))
            except errors.NotSuppressed:
                pass
        return await _page(
            "thread.html",
            request,
            "inbox",
            counterpart=counterpart,
            messages=items,
            next_cursor=next_cursor,
            paged=bool(cursor),
            problem=problem,
            can_reply=counterpart.startswith("+") and problem is None,
            wrote_to=last_received.device if last_received is not None else None,
            reply_device=device_out(reply_device) if reply_device is not None else None,
            devices=[device_out(d) for d in devices],
            device_names={d.device_id: d.device_name for d in devices},
            suppressed=suppressed,
            gsm_tables=GSM_TABLES,
        )

    @get("/suppressions/")
    async def suppressions(self, request: Request[Any, Any, Any], cursor: str | None = None) -> Template:
        account, broker = account_of(request), broker_of(request)
        problem = None
        entries: list[Any] = []
        next_cursor = None
        try:
            page = await broker.suppressions.page(account, cursor or None, SUPPRESSIONS_PER_PAGE)
            entries = [suppression_out(e) for e in page.items]
            next_cursor = page.next_cursor
        except errors.InvalidInput as exc:
            problem = exc.detail
        return await _page(
            "suppressions.html",
            request,
            "suppressions",
            entries=entries,
            count=await broker.suppressions.count(account),
            next_cursor=next_cursor,
            paged=bool(cursor),
            problem=problem,
        )

    @get("/suppressions/export.csv")
    async def export_suppressions(self, request: Request[Any, Any, Any]) -> Stream:
        """The whole suppression list as CSV (phone, reason, added_at), read a page at a
        time as it is sent."""
        account, broker = account_of(request), broker_of(request)
        day = (iso_utc(broker.clock()) or "")[:10]
        return Stream(
            suppression_rows(broker, account),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="suppressions-{day}.csv"'},
        )

    @get("/api-keys/")
    async def api_keys(self, request: Request[Any, Any, Any]) -> Template:
        account, broker = account_of(request), broker_of(request)
        keys_ = [key_out(k) for k in await broker.api_keys.list_for(account)]
        return await _page("api_keys.html", request, "api-keys", keys=keys_, server_url=server_url(request))

    @get("/webhooks/")
    async def webhooks(self, request: Request[Any, Any, Any]) -> Template:
        account, broker = account_of(request), broker_of(request)
        """The endpoints as the API lists them (no secrets); each one's delivery log is read
        from the deliveries API by the page's script, so it can follow retries live."""
        endpoints = [webhook_out(e) for e in await broker.webhooks.list_for(account)]
        return await _page(
            "webhooks.html",
            request,
            "webhooks",
            endpoints=endpoints,
            event_types=EVENT_TYPES,
            signature_header=SIGNATURE_HEADER,
            timeout_seconds=broker.settings.webhook_timeout_seconds,
            retry_window=duration_text(broker.settings.webhook_retry_seconds),
        )

    @get("/settings/")
    async def settings(self, request: Request[Any, Any, Any]) -> Template:
        account, broker = account_of(request), broker_of(request)
        own = [request_out(r) for r in await broker.limits.list_requests(account_id=account.id)]
        operator: dict[str, Any] = {}
        if account.operator:
            operator = {
                "pending": [request_out(r) for r in await broker.limits.list_requests(status="pending")],
                "pool": [device_out(d) for d in await broker.devices.list_for(None)],
            }
        return await _page(
            "settings.html",
            request,
            "settings",
            limits=await limits_out(broker, account),
            requests=own,
            operator=operator,
        )


class Thread(msgspec.Struct, frozen=True):
    """One conversation in the inbox: the number (or sender name) and its latest message,
    received or sent."""

    counterpart: str
    last: MessageOut
    new: bool  # the latest message was received since the inbox was opened before


async def _device_names(broker: Broker, account: Account) -> dict[str, str]:
    if account.account_type == "api_only":
        return {}
    return {d.device_id: d.device_name for d in await broker.devices.list_for(account)}


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one that begins like a formula (``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return) gets a leading apostrophe. Numbers are
    E.164 and written as they are."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def suppression_rows(broker: Broker, account: Account) -> AsyncIterator[str]:
    """The CSV of an account's suppression list, a chunk per page of it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["phone", "reason", "added_at"])
    cursor = None
    while True:
        page = await broker.suppressions.page(account, cursor, SUPPRESSIONS_PAGE_MAX)
        for entry in page.items:
            writer.writerow([entry.phone, csv_cell(entry.reason), iso_utc(entry.created_ms) or ""])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
        cursor = page.next_cursor
        if cursor is None:
            return


template_config = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)

dashboard_router = Router(
    path="/",
    route_handlers=[
        PublicPages,
        AccountPages,
        create_static_files_router(path="/static", directories=[HERE / "static"], include_in_schema=False),
    ],
    include_in_schema=False,
    response_headers=PAGE_HEADERS,
    exception_handlers={LoginRequired: _to_login},
)
