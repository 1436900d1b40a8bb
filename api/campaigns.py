"""Campaigns from the dashboard: upload a CSV file with a template (validated, stored as a
draft with its report), start, follow, cancel, list. The queueing itself is the
background job's (:mod:`broker.campaigns`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from api.credentials import account_of, session_guard
from api.errors import ApiError
from api.inputs import Cursor, PathId
from api.openapi import (
    BODY,
    CONFLICT,
    NOT_FOUND,
    PARAMETERS,
    SESSION,
    SESSION_AND_CSRF,
    SESSION_COOKIE_ONLY,
    SESSION_CSRF,
    documented,
)
from api.state import broker_of
from broker.campaign_files import MAX_FILE_BYTES
from broker.campaigns import PAGE_MAX, Campaign, CampaignRequest, Counts, Report, campaign_times

MULTIPART = "multipart"
"""A route's ``opt`` flag: its body is ``multipart/form-data``, not JSON."""
UPLOAD_MAX_BYTES = MAX_FILE_BYTES + 256 * 1024
"""The whole multipart body: the file and the other fields (the file alone is checked
against its own limit, 413 either way)."""
CampaignLimit = Annotated[int, Parameter(ge=1, le=PAGE_MAX)]


@dataclass
class CampaignForm:
    """The upload: ``file`` (CSV, UTF-8, comma or semicolon, a header row; at most 10 MiB
    and 100,000 rows) and what to send."""

    file: UploadFile
    template: str
    name: str = ""
    phone_column: str = "phone"
    device_id: str | None = None
    send_at: str | None = None
    priority: str | None = None
    valid_for: str | None = None
    default_country: str | None = None


class CampaignOut(msgspec.Struct):
    id: str
    name: str
    state: str  # draft, sending, paused, done, cancelled
    reason: str | None  # paused: quota_exceeded or rate_limited; cancelled: cancelled or device_removed
    template: str
    phone_column: str
    device_id: str | None
    send_at: str | None
    priority: str
    valid_for: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    resume_at: str | None  # paused: when it tries again
    report: Report
    counts: Counts


class CampaignPageOut(msgspec.Struct):
    items: list[CampaignOut]
    next_cursor: str | None


def campaign_out(campaign: Campaign) -> CampaignOut:
    times = campaign_times(campaign)
    return CampaignOut(
        campaign.id,
        campaign.name,
        campaign.state,
        campaign.reason or None,
        campaign.template,
        campaign.phone_column,
        campaign.device_id,
        times["send_at"],
        campaign.priority,
        campaign.valid_for,
        times["created_at"] or "",
        times["started_at"],
        times["finished_at"],
        times["resume_at"],
        campaign.report,
        campaign.counts,
    )


def campaign_request(form: CampaignForm) -> CampaignRequest:
    valid_for: int | None = None
    if form.valid_for not in (None, ""):
        try:
            valid_for = int(form.valid_for)  # type: ignore[arg-type]
        except ValueError:
            raise ApiError(
                400, "invalid_request", "valid_for must be a whole number of seconds", field="valid_for"
            ) from None
    return CampaignRequest(
        name=form.name,
        template=form.template,
        phone_column=form.phone_column or "phone",
        device_id=form.device_id or None,
        send_at=form.send_at or None,
        priority=form.priority or None,
        valid_for=valid_for,
        default_country=form.default_country or None,
    )


class CampaignsController(Controller):
    path = "/api/campaigns"
    guards = [session_guard]
    tags = ["dashboard: campaigns"]

    @post(
        "/",
        status_code=201,
        operation_id="createCampaign",
        request_max_body_size=UPLOAD_MAX_BYTES,
        opt={MULTIPART: True},
        **documented(BODY, SESSION_CSRF, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[CampaignForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> CampaignOut:
        """Upload a campaign (``multipart/form-data``): the file is checked row by row and
        the campaign stored as a ``draft`` with its validation report; nothing is queued
        until it is started. A file that cannot make a campaign (not CSV, not UTF-8, no
        header, no phone column, more than 100,000 rows, a template naming a column the
        file lacks) is 400, one over 10 MiB 413, and nothing is stored."""
        campaigns = broker_of(request).campaigns
        campaign = await campaigns.create(account_of(request), campaign_request(data), data.file.file)
        return campaign_out(campaign)

    @get("/", operation_id="listCampaigns", **documented(PARAMETERS, SESSION, security=SESSION_COOKIE_ONLY))
    async def list_campaigns(
        self, request: Request[Any, Any, Any], limit: CampaignLimit = 50, cursor: Cursor = None
    ) -> CampaignPageOut:
        """The account's campaigns, newest first, 50 a page."""
        page = await broker_of(request).campaigns.page(account_of(request), limit=limit, cursor=cursor)
        return CampaignPageOut([campaign_out(c) for c in page.items], page.next_cursor)

    @get(
        "/{campaign_id:str}/",
        operation_id="getCampaign",
        **documented(PARAMETERS, SESSION, NOT_FOUND, security=SESSION_COOKIE_ONLY),
    )
    async def detail(self, request: Request[Any, Any, Any], campaign_id: PathId) -> CampaignOut:
        """One campaign: its state, report and counts."""
        return campaign_out(await broker_of(request).campaigns.get(account_of(request), campaign_id))

    @post(
        "/{campaign_id:str}/start/",
        status_code=202,
        operation_id="startCampaign",
        **documented(BODY, SESSION_CSRF, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def start(self, request: Request[Any, Any, Any], campaign_id: PathId) -> CampaignOut:
        """Start a draft: 202 ``sending``; the background process queues its valid rows
        (409 ``invalid_campaign_state`` for a campaign that is not a draft)."""
        return campaign_out(await broker_of(request).campaigns.start(account_of(request), campaign_id))

    @post(
        "/{campaign_id:str}/cancel/",
        status_code=200,
        operation_id="cancelCampaign",
        **documented(BODY, SESSION_CSRF, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def cancel(self, request: Request[Any, Any, Any], campaign_id: PathId) -> CampaignOut:
        """Cancel: no further row is queued, and its messages no phone holds yet are
        cancelled by the background process, 200 at a time."""
        return campaign_out(await broker_of(request).campaigns.cancel(account_of(request), campaign_id))
