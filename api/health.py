"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get

from api.errors import ApiError
from api.openapi import STORE, documented
from api.state import broker_of


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
        """Redis answers and every script is loaded; 503 (the JSON error) otherwise."""
        try:
            await broker_of(request).ready()
        except Exception:  # noqa: BLE001 - any failure means not ready
            raise ApiError(
                503, "not_ready", "Redis is unreachable or its scripts are not loaded", headers={"Retry-After": "2"}
            ) from None
        return Health("ok")
