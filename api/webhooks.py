"""Status webhooks, from the dashboard's session: register an endpoint, list, delete,
rotate its secret, enable it again, send a test event, read recent deliveries, and
redeliver one. Delivery itself is the dispatcher's (``broker/webhooks/``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter

from api.credentials import session_guard
from broker import Broker
from broker.clock import iso_utc
from broker.records import Account
from broker.webhooks.endpoints import Attempt, Endpoint

EndpointId = Annotated[str, Parameter(max_length=64)]
EventId = Annotated[str, Parameter(max_length=64)]


class NewWebhookBody(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    events: list[str] | None = None  # the message event types to deliver; all when left out


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
        None if event.type == "webhook.test" else event.message_id,
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

    @post("/", status_code=201, operation_id="createWebhook")
    async def create(self, data: NewWebhookBody, account: Account, broker: Broker) -> NewWebhookOut:
        """Register an HTTPS endpoint for the account's message status events. The secret
        in this response is shown only here."""
        endpoint = await broker.webhooks.create(account, data.url, data.events)
        return NewWebhookOut(**msgspec.structs.asdict(webhook_out(endpoint)), secret=endpoint.secret)

    @get("/", operation_id="listWebhooks")
    async def list_webhooks(self, account: Account, broker: Broker) -> list[WebhookOut]:
        """The account's endpoints and how their deliveries stand, without secrets."""
        return [webhook_out(e) for e in await broker.webhooks.list_for(account)]

    @get("/{webhook_id:str}/", operation_id="getWebhook")
    async def detail(self, webhook_id: EndpointId, account: Account, broker: Broker) -> WebhookOut:
        return webhook_out(await broker.webhooks.get(account, webhook_id))

    @delete("/{webhook_id:str}/", status_code=204, operation_id="deleteWebhook")
    async def remove(self, webhook_id: EndpointId, account: Account, broker: Broker) -> Response[None]:
        """Delete the endpoint and the events waiting for it."""
        await broker.webhooks.delete(account, webhook_id)
        return Response(None, status_code=204)

    @post("/{webhook_id:str}/rotate-secret/", status_code=200, operation_id="rotateWebhookSecret")
    async def rotate_secret(self, webhook_id: EndpointId, account: Account, broker: Broker) -> SecretOut:
        """A new signing secret, shown only here. For a day deliveries carry a second
        signature made with the previous one, so the receiver can switch over."""
        endpoint = await broker.webhooks.rotate_secret(account, webhook_id)
        return SecretOut(endpoint.id, endpoint.secret, iso_utc(endpoint.previous_until_ms) or "")

    @post("/{webhook_id:str}/enable/", status_code=200, operation_id="enableWebhook")
    async def enable(self, webhook_id: EndpointId, account: Account, broker: Broker) -> WebhookOut:
        """Deliver to a disabled endpoint again, from the next status change on."""
        return webhook_out(await broker.webhooks.enable(account, webhook_id))

    @post("/{webhook_id:str}/test/", status_code=200, operation_id="testWebhook")
    async def test(self, webhook_id: EndpointId, account: Account, broker: Broker, request: Request) -> DeliveryOut:
        """POST a signed ``webhook.test`` event to the endpoint now and answer with what it
        said (status code, latency, error)."""
        attempt = await broker.webhooks.send_test(account, webhook_id, request.app.state.webhook_courier)
        return delivery_out(attempt)

    @get("/{webhook_id:str}/deliveries/", operation_id="listWebhookDeliveries")
    async def deliveries(self, webhook_id: EndpointId, account: Account, broker: Broker) -> list[DeliveryOut]:
        """The latest delivery attempts (up to 200), newest first."""
        return [delivery_out(a) for a in await broker.webhooks.deliveries(account, webhook_id)]

    @post(
        "/{webhook_id:str}/deliveries/{event_id:str}/redeliver/", status_code=202, operation_id="redeliverWebhookEvent"
    )
    async def redeliver(
        self, webhook_id: EndpointId, event_id: EventId, account: Account, broker: Broker
    ) -> RedeliveryOut:
        """Queue an event from the recent deliveries again, with the same event id."""
        again = await broker.webhooks.redeliver(account, webhook_id, event_id)
        return RedeliveryOut(again.id, iso_utc(again.queued_ms) or "")
