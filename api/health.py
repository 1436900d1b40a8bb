"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get

from broker import Broker


class Health(msgspec.Struct):
    status: str


class HealthController(Controller):
    path = "/"
    tags = ["operations"]

    @get("/healthz", operation_id="healthz")
    async def healthz(self) -> Health:
        """The process is up."""
        return Health("ok")

    @get("/readyz", operation_id="readyz")
    async def readyz(self, broker: Broker) -> Response[Health]:
        """Redis answers and every script is loaded."""
        try:
            await broker.ready()
        except Exception:  # noqa: BLE001 - any failure means not ready
            return Response(Health("redis unreachable"), status_code=503)
        return Response(Health("ok"), status_code=200)
