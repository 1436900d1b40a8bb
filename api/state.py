"""What the lifespan hook (``api/app.py``) keeps on the app, and the one way a guard, a
handler or an exception handler reaches it: ``broker_of(request)``.

A plain function rather than a Litestar dependency: guards and exception handlers get
no injection, and on the phone's hot paths resolving two or more dependencies costs an
anyio task group per request (see docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from broker import Broker
from broker.webhooks.courier import Courier


def broker_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Broker:
    """The broker made in the lifespan hook."""
    return connection.app.state.broker  # type: ignore[no-any-return]


def broker_in(scope: Any) -> Broker:
    """:func:`broker_of`, from the ASGI scope alone (the phone's hot path makes no
    connection object)."""
    return scope["litestar_app"].state.broker  # type: ignore[no-any-return]


def courier_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Courier:
    """The courier of the dashboard's test events (the dispatcher has its own)."""
    return connection.app.state.webhook_courier  # type: ignore[no-any-return]
