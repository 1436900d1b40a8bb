"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get

from api.errors import ApiError, store_unavailable
from api.openapi import STORE, documented
from api.state import broker_of
from broker.redis_client import refusal


class Health(msgspec.Struct):
    status: str


class HealthController(Controller):
    path = "/"
    tags = ["operations"]

    @get("/healthz", operation_id="healthz")
    async def healthz(self) -> Health:
        """The process is up."""
        return Health("ok")

    @get("/readyz", operation_id="readyz", **documented(STORE))
    async def readyz(self, request: Request[Any, Any, Any]) -> Health:
        """Redis answers, takes writes, and every script is loaded; 503 (the JSON error)
        otherwise: ``store_full``, ``store_read_only``, ``store_loading`` or
        ``store_busy`` while Redis refuses writes, ``not_ready`` while it is unreachable
        or its scripts cannot be loaded."""
        try:
            await broker_of(request).ready()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            refused = refusal(exc)
            if refused is not None:
                raise store_unavailable(refused) from None
            raise ApiError(
                503, "not_ready", "Redis is unreachable or its scripts are not loaded", headers={"Retry-After": "2"}
            ) from None
        return Health("ok")
