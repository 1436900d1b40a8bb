"""Status webhooks, from the dashboard's session: register an endpoint, list, delete,
rotate its secret, enable it again, send a test event, read recent deliveries, and
redeliver one. Delivery itself is the dispatcher's (``broker/webhooks/``)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post

from api.credentials import account_of, session_guard
from api.inputs import EventTypes, PathId, WebhookUrl
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
from api.state import broker_of, courier_of
from broker.clock import iso_utc
from broker.webhooks.endpoints import Attempt, Endpoint
from broker.webhooks.events import TEST_EVENT

READ = documented(SESSION, security=SESSION_COOKIE_ONLY)
READ_ONE = documented(PARAMETERS, SESSION, NOT_FOUND, security=SESSION_COOKIE_ONLY)
CHANGE_ONE = documented(BODY, SESSION_CSRF, NOT_FOUND, CONFLICT, security=SESSION_AND_CSRF)


class NewWebhookBody(msgspec.Struct, forbid_unknown_fields=True):
    url: WebhookUrl
    events: EventTypes | None = None


class WebhookOut(msgspec.Struct):
    id: str
    url: str
    events: list[str]
    created_at: str
    enabled: bool
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: str | None  # the first failure since the last success
    last_success_at: str | None
    queued: int  # events waiting to be delivered
    dropped: int  # events not queued because too many were waiting


class NewWebhookOut(WebhookOut):
    secret: str  # signs every delivery; this response is the only time it is shown


class SecretOut(msgspec.Struct):
    id: str
    secret: str
    previous_secret_valid_until: str


class DeliveryOut(msgspec.Struct):
    event_id: str
    event_type: str
    message_id: str | None
    device_id: str | None  # the phone of a message's change, or whose presence changed
    device_name: str | None  # device.offline, device.online: the phone's name then
    attempt: int
    outcome: str  # delivered, failed, gave_up, disabled, test
    status_code: int | None
    latency_ms: int
    error: str | None
    at: str
    next_retry_at: str | None
    manual: bool


class RedeliveryOut(msgspec.Struct):
    event_id: str
    queued_at: str


def webhook_out(endpoint: Endpoint) -> WebhookOut:
    return WebhookOut(
        endpoint.id,
        endpoint.url,
        endpoint.events,
        iso_utc(endpoint.created_ms) or "",
        endpoint.enabled,
        iso_utc(endpoint.disabled_ms or None),
        endpoint.disabled_reason or None,
        iso_utc(endpoint.failing_since_ms or None),
        iso_utc(endpoint.last_success_ms or None),
        max(0, endpoint.queued),
        endpoint.dropped,
    )


def delivery_out(attempt: Attempt) -> DeliveryOut:
    event = attempt.event
    return DeliveryOut(
        event.id,
        event.type,
        None if event.type == TEST_EVENT else event.message_id or None,
        event.device or None,
        event.device_name or None,
        attempt.attempt,
        attempt.outcome,
        attempt.status_code,
        attempt.latency_ms,
        attempt.error or None,
        iso_utc(attempt.at_ms) or "",
        iso_utc(attempt.next_retry_ms),
        event.manual,
    )


class WebhooksController(Controller):
    path = "/api/webhooks"
    guards = [session_guard]
    tags = ["dashboard: webhooks"]

    @post(
        "/",
        status_code=201,
        operation_id="createWebhook",
        **documented(BODY, SESSION_CSRF, CONFLICT, security=SESSION_AND_CSRF),
    )
    async def create(self, request: Request[Any, Any, Any], data: NewWebhookBody) -> NewWebhookOut:
        """Register an HTTPS endpoint for the account's events: its messages' status
        changes, and its phones going offline and coming back online (the platform
        pool's phones' for the operator). The secret in this response is shown only here."""
        endpoint = await broker_of(request).webhooks.create(account_of(request), data.url, data.events)
        return NewWebhookOut(**msgspec.structs.asdict(webhook_out(endpoint)), secret=endpoint.secret)

    @get("/", operation_id="listWebhooks", **READ)
    async def list_webhooks(self, request: Request[Any, Any, Any]) -> list[WebhookOut]:
        """The account's endpoints and how their deliveries stand, without secrets."""
        return [webhook_out(e) for e in await broker_of(request).webhooks.list_for(account_of(request))]

    @get("/{webhook_id:str}/", operation_id="getWebhook", **READ_ONE)
    async def detail(self, request: Request[Any, Any, Any], webhook_id: PathId) -> WebhookOut:
        return webhook_out(await broker_of(request).webhooks.get(account_of(request), webhook_id))

    @delete(
        "/{webhook_id:str}/",
        status_code=204,
        operation_id="deleteWebhook",
        **documented(PARAMETERS, SESSION_CSRF, NOT_FOUND, security=SESSION_AND_CSRF),
    )
    async def remove(self, request: Request[Any, Any, Any], webhook_id: PathId) -> None:
        """Delete the endpoint and the events waiting for it."""
        await broker_of(request).webhooks.delete(account_of(request), webhook_id)

    @post("/{webhook_id:str}/rotate-secret/", status_code=200, operation_id="rotateWebhookSecret", **CHANGE_ONE)
    async def rotate_secret(self, request: Request[Any, Any, Any], webhook_id: PathId) -> SecretOut:
        """A new signing secret, shown only here. For a day deliveries carry a second
        signature made with the previous one, so the receiver can switch over."""
        endpoint = await broker_of(request).webhooks.rotate_secret(account_of(request), webhook_id)
        return SecretOut(endpoint.id, endpoint.secret, iso_utc(endpoint.previous_until_ms) or "")

    @post("/{webhook_id:str}/enable/", status_code=200, operation_id="enableWebhook", **CHANGE_ONE)
    async def enable(self, request: Request[Any, Any, Any], webhook_id: PathId) -> WebhookOut:
        """Deliver to a disabled endpoint again, from the next status change on."""
        return webhook_out(await broker_of(request).webhooks.enable(account_of(request), webhook_id))

    @post("/{webhook_id:str}/test/", status_code=200, operation_id="testWebhook", **CHANGE_ONE)
    async def test(self, request: Request[Any, Any, Any], webhook_id: PathId) -> DeliveryOut:
        """POST a signed ``webhook.test`` event to the endpoint now and answer with what it
        said (status code, latency, error)."""
        attempt = await broker_of(request).webhooks.send_test(account_of(request), webhook_id, courier_of(request))
        return delivery_out(attempt)

    @get("/{webhook_id:str}/deliveries/", operation_id="listWebhookDeliveries", **READ_ONE)
    async def deliveries(self, request: Request[Any, Any, Any], webhook_id: PathId) -> list[DeliveryOut]:
        """The latest delivery attempts (up to 200), newest first."""
        return [delivery_out(a) for a in await broker_of(request).webhooks.deliveries(account_of(request), webhook_id)]

    @post(
        "/{webhook_id:str}/deliveries/{event_id:str}/redeliver/",
        status_code=202,
        operation_id="redeliverWebhookEvent",
        **CHANGE_ONE,
    )
    async def redeliver(self, request: Request[Any, Any, Any], webhook_id: PathId, event_id: PathId) -> RedeliveryOut:
        """Queue an event from the recent deliveries again, with the same event id."""
        again = await broker_of(request).webhooks.redeliver(account_of(request), webhook_id, event_id)
        return RedeliveryOut(again.id, iso_utc(again.queued_ms) or "")
