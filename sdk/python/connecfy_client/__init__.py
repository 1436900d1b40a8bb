"""Connecfy's Python client.

- :class:`Client` / :class:`AsyncClient`: send through a send-only API key, with an
  ``Idempotency-Key`` per send and retries that honour ``Retry-After``.
- :mod:`connecfy_client.webhooks`: ``verify(body, headers, secret)`` for webhook receivers.
- :class:`SessionClient` / :class:`AsyncSessionClient`: log in and page through the history.
"""

from connecfy_client.client import AsyncClient, Client
from connecfy_client.errors import (
    AuthenticationFailed,
    Conflict,
    ConnecfyError,
    ConnectionFailed,
    InvalidRequest,
    ItemError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)
from connecfy_client.models import BatchQueued, Message, MessagePage, Outgoing, Queued, TimelineEntry
from connecfy_client.retries import Retries
from connecfy_client.session import Account, AsyncSessionClient, HistoryFilters, SessionClient

__version__ = "0.1.0"

__all__ = [
    "Account",
    "AsyncClient",
    "AsyncSessionClient",
    "AuthenticationFailed",
    "BatchQueued",
    "Client",
    "Conflict",
    "ConnecfyError",
    "ConnectionFailed",
    "HistoryFilters",
    "InvalidRequest",
    "ItemError",
    "Message",
    "MessagePage",
    "NotFound",
    "Outgoing",
    "PermissionDenied",
    "Queued",
    "RateLimited",
    "Retries",
    "ServerError",
    "ServiceUnavailable",
    "SessionClient",
    "TimelineEntry",
    "__version__",
]
