"""The HTTP connection each client holds: its own httpx client, or one you bring.

A client made here is closed with the SDK's client; one passed in is left open for its
owner, who may share it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = "connecfy-client-python/0.1.0"


class Connection:
    def __init__(self, base_url: str, timeout: float, http_client: httpx.Client | None) -> None:
        self._owned = http_client is None
        self.http = http_client or httpx.Client(base_url=base_url, timeout=timeout, headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncConnection:
    def __init__(self, base_url: str, timeout: float, http_client: httpx.AsyncClient | None) -> None:
        self._owned = http_client is None
        self.http = http_client or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()
