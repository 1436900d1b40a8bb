"""The bench's dashboard accounts: the operator, and sender accounts it signs up.

Each account keeps its own cookie jar (session cookie and CSRF token). The operator
lifts the bench accounts' send rate, poll rate and daily quota out of the way, so
that what a run measures is the server, not the limits a new account starts with.
"""

from __future__ import annotations

import secrets
from typing import Any

from bench.load.client import Http, Recorder

HIGH_LIMITS = {
    "sends_per_second": 1_000_000,
    "sends_burst": 1_000_000,
    "tasks_per_minute": 1_000_000,
    "tasks_burst": 1_000_000,
    "daily_quota": 10_000_000,
}
# A phone's send budget out of the bench's way (the most the API accepts per day).
MAX_HISTORY_PAGES = 100_000  # 50 million messages: a bound, never reached by a bench
LIFTED_BUDGET = {"segments_per_minute": 100_000, "segments_per_day": 1_000_000}


class SetupError(RuntimeError):
    pass


def expect(status: int, body: Any, wanted: int, what: str) -> Any:
    if status != wanted:
        raise SetupError(f"{what}: expected {wanted}, got {status} {body}")
    return body


class Account:
    def __init__(self, base_url: str, recorder: Recorder, label: str) -> None:
        self.label = label
        self.http = Http(base_url, recorder, connections=64, cookies=True)
        self.id = ""
        self.account_type = ""

    async def close(self) -> None:
        await self.http.close()

    def _csrf(self) -> dict[str, str]:
        assert self.http.session is not None
        for cookie in self.http.session.cookie_jar:
            if cookie.key == "csrftoken":
                return {"X-CSRFToken": cookie.value}
        return {}

    async def call(self, kind: str | None, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        """A dashboard call: the session cookie, and the CSRF token on unsafe methods."""
        if method != "GET":
            kwargs["headers"] = {**self._csrf(), **kwargs.get("headers", {})}
        return await self.http.call(kind, method, path, **kwargs)

    async def signup(self, account_type: str, run_id: str) -> Account:
        email = f"{self.label}-{run_id}@bench.invalid"
        status, body, _ = await self.call(
            None,
            "POST",
            "/api/auth/signup/",
            json={"email": email, "password": secrets.token_urlsafe(16), "account_type": account_type},
        )
        body = expect(status, body, 201, f"signup {email}")
        self.id, self.account_type = body["id"], account_type
        return self

    async def login(self, email: str, password: str) -> Account:
        status, body, _ = await self.call(None, "POST", "/api/auth/login/", json={"email": email, "password": password})
        body = expect(status, body, 200, f"login {email}")
        self.id, self.account_type = body["id"], body["account_type"]
        return self

    async def api_key(self) -> str:
        status, body, _ = await self.call(None, "POST", "/api/api-keys/", json={"name": "bench"})
        return expect(status, body, 201, "create API key")["api_key"]

    async def pairing_code(self, *, pool: bool = False) -> str:
        status, body, _ = await self.call(
            None, "POST", "/api/devices/pairing-codes/", json={"pool": True} if pool else {}
        )
        return expect(status, body, 201, "pairing code")["code"]

    async def raise_limits(self, account_id: str) -> None:
        """As the operator: lift an account's rate limits and quota out of the bench's way."""
        status, body, _ = await self.call(
            None, "PATCH", f"/api/operator/accounts/{account_id}/limits/", json=HIGH_LIMITS
        )
        expect(status, body, 200, f"raise limits of {account_id}")

    async def set_device_budget(self, device_id: str, budget: dict[str, int]) -> None:
        status, body, _ = await self.call(None, "PATCH", f"/api/devices/{device_id}/", json=budget)
        expect(status, body, 200, f"raise budget of {device_id}")

    async def messages(self) -> list[dict[str, Any]]:
        """Every message of this account as the history pages show it, newest first."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_HISTORY_PAGES):
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            status, body, _ = await self.call(None, "GET", "/api/sms/", params=params)
            body = expect(status, body, 200, "history page")
            found += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                break
        return found

    async def history(self) -> dict[str, str]:
        """Every message of this account: id → status."""
        return {item["id"]: item["status"] for item in await self.messages()}
