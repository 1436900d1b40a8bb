"""Users, phones and senders of one running server, over real HTTP, for the end-to-end
tests: a :class:`World` signs people up, pairs phones and makes API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.e2e_server import Api, ServerProcess, expect

TO = "+15551234567"
PASSWORD = "correct horse battery staple"
OPERATOR_EMAIL = "operator@connecfy.test"
OPERATOR_PASSWORD = "operator-password-1"


@dataclass
class Phone:
    device_id: str
    token: str
    name: str
    api: Api  # sends X-Device-Token on every request

    def heartbeat(self, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.api.post(f"/api/devices/{self.device_id}/heartbeat/", **kwargs)

    def tasks(self, **params: Any) -> httpx.Response:
        return self.api.get(f"/api/devices/{self.device_id}/tasks/", params=params)

    def claim(self, **params: Any) -> list[dict[str, Any]]:
        tasks = expect(self.tasks(**params), 200)
        assert isinstance(tasks, list)
        for task in tasks:
            assert set(task) == {"id", "to", "message"}, tasks
        return tasks

    def report(self, message_id: str, status: str, **extra: Any) -> httpx.Response:
        return self.api.post(f"/api/sms/{message_id}/status/", json={"status": status, **extra})


class World:
    """Accounts, phones and clients on the one server; closes every client at the end."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.clients: list[Api] = []

    def api(self, **headers: str) -> Api:
        client = Api(self.server.base_url, **headers)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def signup(self, account_type: str = "self_managed", prefix: str = "user", **headers: str) -> Api:
        user = self.api(**headers)
        email = f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
        response = user.post(
            "/api/auth/signup/", json={"email": email, "password": PASSWORD, "account_type": account_type}
        )
        account = expect(response, 201)
        assert account["email"] == email and account["account_type"] == account_type, account
        user.account = account
        return user

    def pair(
        self, owner: Api, name: str = "Pixel 7", *, pool: bool = False, online: bool = True, phone_number: str = TO
    ) -> Phone:
        if pool:
            code = expect(owner.post("/api/devices/pairing-codes/", json={"pool": True}), 201)
        else:
            code = expect(owner.post("/api/devices/pairing-codes/"), 201)
        registered = expect(
            self.api().post(
                "/api/devices/register/", json={"code": code["code"], "device_name": name, "phone_number": phone_number}
            ),
            201,
        )
        phone = Phone(
            registered["device_id"],
            registered["device_token"],
            name,
            self.api(**{"X-Device-Token": registered["device_token"]}),
        )
        if online:
            expect(phone.heartbeat({"battery": 90}), 200)
        return phone

    def api_key(self, owner: Api, name: str = "backend") -> dict[str, Any]:
        return expect(owner.post("/api/api-keys/", json={"name": name}), 201)

    def external(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.api().post("/api/external/send/", json=body, **kwargs)

    def batch(self, api_key: str, messages: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
        return self.api().post("/api/external/send-batch/", json={"api_key": api_key, "messages": messages}, **kwargs)
