"""``Client`` and ``AsyncClient``: the external send API with a send-only API key.

``POST /api/external/send/`` and ``/api/external/send-batch/`` take the key in the JSON
body. Each call is one logical send: it gets one ``Idempotency-Key`` (random unless
given) that every retry of it repeats, so however often a lost answer makes the client
try again, the server queues the message (or the batch) once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec

from connecfy_client.connections import DEFAULT_BASE_URL, AsyncConnection, Connection
from connecfy_client.errors import ConnecfyError, ServerError, from_response, no_answer
from connecfy_client.models import BatchQueued, Outgoing, Priority, Queued
from connecfy_client.retries import Retries

SEND_PATH = "/api/external/send/"
BATCH_PATH = "/api/external/send-batch/"


class _Send(msgspec.Struct, frozen=True):
    """One logical send: where it goes, its bytes and its key, the same on every attempt."""

    path: str
    content: bytes
    idempotency_key: str
    result: type[Queued] | type[BatchQueued]

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Idempotency-Key": self.idempotency_key}


class _ExternalApi:
    """What both clients share: the bodies, the answers and the retry decisions."""

    def __init__(self, api_key: str, retries: Retries | None) -> None:
        if not api_key:
            raise ValueError("an API key is needed (create one on the dashboard's API keys page)")
        self.api_key = api_key
        self.retries = retries or Retries()

    def _one(
        self,
        to: str,
        message: str,
        device_id: str | None,
        send_at: datetime | str | None,
        valid_for: int | timedelta | None,
        sim_slot: int | None,
        priority: Priority | None,
        passphrase: str | None,
        idempotency_key: str | None,
    ) -> _Send:
        item = Outgoing(to, message, device_id, send_at, valid_for, sim_slot, priority, passphrase)
        body = {"api_key": self.api_key, **item.body()}
        return _Send(SEND_PATH, msgspec.json.encode(body), idempotency_key or new_key(), Queued)

    def _batch(self, messages: Iterable[Outgoing | Mapping[str, Any]], idempotency_key: str | None) -> _Send:
        items = [m if isinstance(m, Outgoing) else Outgoing(**m) for m in messages]
        body = {"api_key": self.api_key, "messages": [m.body() for m in items]}
        return _Send(BATCH_PATH, msgspec.json.encode(body), idempotency_key or new_key(), BatchQueued)

    def _outcome(self, send: _Send, response: httpx.Response) -> Any:
        """The typed result of a 2xx, or the error the answer stands for (returned, not raised)."""
        if not response.is_success:
            return from_response(response.status_code, response.content, response.headers)
        try:
            result = msgspec.json.decode(response.content, type=send.result)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A 2xx that is not the API's answer (a proxy's page, another service): the
            # message may or may not be queued, and no retry can tell.
            return ServerError(f"unexpected answer to a send: {exc}", status_code=response.status_code)
        replayed = response.headers.get("idempotent-replayed") == "true"
        return msgspec.structs.replace(result, idempotency_key=send.idempotency_key, replayed=replayed)

    def _next_wait(self, attempt: int, error: ConnecfyError) -> float:
        """How long to wait before trying again; raises ``error`` when no retry is left."""
        delay = self.retries.delay(attempt, error)
        if delay is None:
            error.attempts = attempt
            raise error
        return delay


def new_key() -> str:
    """A fresh ``Idempotency-Key``: 128 random bits."""
    return uuid.uuid4().hex


class Client(_ExternalApi, Connection):
    """Sends through the external API, blocking.

    ``http_client`` lets you bring your own ``httpx.Client`` (proxies, TLS, event hooks);
    its ``base_url`` is then used as is. Close the client (or use it in ``with``) to
    release its connections.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 10.0,
        retries: Retries | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        _ExternalApi.__init__(self, api_key, retries)
        Connection.__init__(self, base_url, timeout, http_client)

    def send(
        self,
        to: str,
        message: str,
        *,
        device_id: str | None = None,
        send_at: datetime | str | None = None,
        valid_for: int | timedelta | None = None,
        sim_slot: int | None = None,
        priority: Priority | None = None,
        passphrase: str | None = None,
        idempotency_key: str | None = None,
    ) -> Queued:
        """Queue one message; the answer's ``id`` is the message's. With ``passphrase``
        the text is encrypted end to end here, once: every retry sends the same envelope."""
        send = self._one(to, message, device_id, send_at, valid_for, sim_slot, priority, passphrase, idempotency_key)
        result: Queued = self._post(send)
        return result

    def send_batch(
        self, messages: Iterable[Outgoing | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> BatchQueued:
        """Queue up to 1,000 messages, all or none (a bad item: ``InvalidRequest`` whose
        ``errors`` name every bad index, and nothing queued)."""
        result: BatchQueued = self._post(self._batch(messages, idempotency_key))
        return result

    def _post(self, send: _Send) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.post(send.path, content=send.content, headers=send.headers)
            except httpx.TransportError as exc:
                outcome: Any = no_answer(exc)
            else:
                outcome = self._outcome(send, response)
            if not isinstance(outcome, ConnecfyError):
                return outcome
            time.sleep(self._next_wait(attempt, outcome))


class AsyncClient(_ExternalApi, AsyncConnection):
    """The same as :class:`Client` for asyncio: ``await client.send(...)``."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 10.0,
        retries: Retries | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        _ExternalApi.__init__(self, api_key, retries)
        AsyncConnection.__init__(self, base_url, timeout, http_client)

    async def send(
        self,
        to: str,
        message: str,
        *,
        device_id: str | None = None,
        send_at: datetime | str | None = None,
        valid_for: int | timedelta | None = None,
        sim_slot: int | None = None,
        priority: Priority | None = None,
        passphrase: str | None = None,
        idempotency_key: str | None = None,
    ) -> Queued:
        """Queue one message; the answer's ``id`` is the message's. With ``passphrase``
        the text is encrypted end to end here, once: every retry sends the same envelope."""
        send = self._one(to, message, device_id, send_at, valid_for, sim_slot, priority, passphrase, idempotency_key)
        result: Queued = await self._post(send)
        return result

    async def send_batch(
        self, messages: Iterable[Outgoing | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> BatchQueued:
        """Queue up to 1,000 messages, all or none."""
        result: BatchQueued = await self._post(self._batch(messages, idempotency_key))
        return result

    async def _post(self, send: _Send) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.http.post(send.path, content=send.content, headers=send.headers)
            except httpx.TransportError as exc:
                outcome: Any = no_answer(exc)
            else:
                outcome = self._outcome(send, response)
            if not isinstance(outcome, ConnecfyError):
                return outcome
            await asyncio.sleep(self._next_wait(attempt, outcome))
