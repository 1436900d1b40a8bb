"""The Litestar app in-process (Litestar's test client, no HTTP server) on each real
Redis: the phone's and the sender's round trip, credentials checked before bodies (the
API key's body too), the JSON error shape, and the served OpenAPI document, which says
what the server takes and refuses. Fast enough to run on every change; tests/http and
tests/e2e do the same and more against a real ``connecfy serve``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from api.app import create_app
from api.inputs import E164_POSSIBLE, WEBHOOK_URL_PATTERN
from broker import Settings, errors
from broker.records import STATUSES
from broker.validation import normalize_phone_number
from broker.webhooks.addresses import MAX_URL, check_url, parse_url
from connecfy.redis_server import RedisServer
from tests.support.backends import NEWEST_REAL, REAL_REDIS, ROOMY_LIMITS

TO = "+15551234567"


def emptied(server: RedisServer) -> RedisServer:
    """One of the session's servers, flushed: what other tests left in it is not this one's."""
    with redis.Redis.from_url(server.url) as plain:
        plain.flushall()
    return server


@pytest.fixture(params=sorted(REAL_REDIS))
def client(request: pytest.FixtureRequest, real_servers: dict[str, RedisServer], tmp_path: Path) -> Iterator[Any]:
    server = emptied(real_servers[f"redis-{request.param}"])
    settings = Settings(redis_url=server.url, data_dir=str(tmp_path), background_in_workers=False, **ROOMY_LIMITS)
    with TestClient(app=create_app(settings)) as test_client:
        assert test_client.app.state.broker is not None  # the lifespan ran
        yield test_client


def signed_up(client: Any, email: str) -> dict[str, str]:
    """Sign up; the CSRF header the session's unsafe requests must carry."""
    reply = client.post(
        "/api/auth/signup/",
        json={"email": email, "password": "correct horse battery", "account_type": "self_managed"},
    )
    assert reply.status_code == 201, reply.text
    return {"X-CSRFToken": client.cookies["csrftoken"]}


def test_a_message_goes_from_the_dashboard_to_a_phone_and_back(client: Any) -> None:
    csrf = signed_up(client, "owner@example.com")
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    phone = client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"}).json()
    device, token = phone["device_id"], {"X-Device-Token": phone["device_token"]}
    assert client.post(f"/api/devices/{device}/heartbeat/", json={"battery": 80}, headers=token).status_code == 200

    sent = client.post("/api/sms/send/", json={"to": TO, "message": "hello", "device_id": device}, headers=csrf)
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]
    tasks = client.get(f"/api/devices/{device}/tasks/", headers=token)
    assert tasks.status_code == 200 and [t["id"] for t in tasks.json()] == [message_id]
    assert tasks.json()[0]["message"] == "hello"
    reported = client.post(f"/api/sms/{message_id}/status/", json={"status": "delivered"}, headers=token)
    assert reported.json() == {"id": message_id, "status": "delivered"}

    stats = client.get("/api/stats/").json()
    assert (stats["total_messages"], stats["sent"], stats["delivered"]) == (1, 1, 1)
    timeline = [step["status"] for step in client.get(f"/api/sms/{message_id}/").json()["timeline"]]
    assert timeline == ["queued", "claimed", "delivered"]


def test_a_bad_credential_is_401_whatever_the_body(client: Any) -> None:
    # (The API key travels in the body: see the test after this one.)
    for path, headers in (
        ("/api/devices/someone/heartbeat/", {"X-Device-Token": "not-a-token"}),
        ("/api/sms/send/", {}),
    ):
        reply = client.post(path, content=b"{not json", headers={"Content-Type": "application/json", **headers})
        assert reply.status_code == 401, (path, reply.text)
        assert reply.json()["code"] == "not_authenticated"


def test_errors_are_json_with_a_code_and_change_nothing(client: Any) -> None:
    csrf = signed_up(client, "careful@example.com")
    bad = client.post("/api/sms/send/", json={"to": "555", "message": "x"}, headers=csrf)
    assert bad.status_code == 400
    assert set(bad.json()) >= {"status_code", "code", "detail"} and bad.json()["status_code"] == 400
    assert client.get("/api/stats/").json()["total_messages"] == 0
    no_csrf = client.post("/api/sms/send/", json={"to": TO, "message": "x"})
    assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "forbidden"


def test_the_served_document_declares_every_route_with_its_errors(client: Any) -> None:
    document = client.get("/schema/openapi.json").json()
    claim = document["paths"]["/api/devices/{device_id}/tasks/"]["get"]
    assert {"401", "403", "429", "503"} <= set(claim["responses"])
    assert claim["security"] and set(document["components"]["securitySchemes"]) >= {"deviceToken", "session"}
    limit = next(p for p in claim["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100


# The API key's body: JSON or not --------------------------------------------------------------

JSON_TYPE = {"Content-Type": "application/json"}


def test_on_the_api_key_endpoints_a_body_that_is_not_json_is_400_and_json_without_a_key_401(client: Any) -> None:
    """The key travels in the body: a body that does not parse hides it (400
    ``invalid_json``, 415 when it is not even sent as JSON), while JSON that holds no
    key, or no body at all, is a missing credential (401)."""
    csrf = signed_up(client, "keyed@example.com")
    key = client.post("/api/api-keys/", json={"name": "k"}, headers=csrf).json()["api_key"]
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"})
    bodies = {
        "/api/external/send/": {"api_key": key, "to": TO, "message": "hi"},
        "/api/external/send-batch/": {"api_key": key, "messages": [{"to": TO, "message": "hi"}]},
    }
    for path, body in bodies.items():
        whole = json.dumps(body).encode()
        for content, headers, status, code in (
            (whole[:-1], JSON_TYPE, 400, "invalid_json"),  # truncated, the real key inside
            (whole + b"}", JSON_TYPE, 400, "invalid_json"),
            (json.dumps([body]).encode() + b"]", JSON_TYPE, 400, "invalid_json"),  # not an object, nor JSON
            (f"api_key={key}&to=%2B15551234567&message=hi".encode(), JSON_TYPE, 400, "invalid_json"),
            (b"\xff" + whole, JSON_TYPE, 400, "invalid_json"),  # not UTF-8
            (whole[:-1], {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
            (f"api_key={key}".encode(), {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
            (json.dumps([body]).encode(), JSON_TYPE, 401, "not_authenticated"),  # JSON, not an object
            (json.dumps(key).encode(), JSON_TYPE, 401, "not_authenticated"),
            (b"null", JSON_TYPE, 401, "not_authenticated"),
            (b"42", JSON_TYPE, 401, "not_authenticated"),
            (b"", JSON_TYPE, 401, "not_authenticated"),  # no body
            (b" \r\n", JSON_TYPE, 401, "not_authenticated"),
            (json.dumps({**body, "api_key": 42}).encode(), JSON_TYPE, 401, "not_authenticated"),
            (json.dumps({**body, "api_key": key + "x"}).encode(), JSON_TYPE, 401, "not_authenticated"),
            (whole, {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),  # a good key, not sent as JSON
        ):
            reply = client.post(path, content=content, headers=headers)
            assert reply.status_code == status, (path, content[:30], reply.text)
            assert reply.json()["status_code"] == status and reply.json()["code"] == (code or reply.json()["code"])
        missing = client.post(path)  # no body, no Content-Type
        assert (missing.status_code, missing.json()["code"]) == (401, "not_authenticated"), missing.text
        assert client.post(path, content=whole, headers=JSON_TYPE).status_code == 202
    assert client.get("/api/stats/").json()["total_messages"] == 2


def test_a_body_that_does_not_parse_is_400_invalid_json_on_every_route(client: Any) -> None:
    csrf = signed_up(client, "parsing@example.com")
    code = client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"]
    phone = client.post("/api/devices/register/", json={"code": code, "device_name": "Pixel"}).json()
    token = {"X-Device-Token": phone["device_token"]}
    for path, headers in (
        ("/api/sms/send/", csrf),
        ("/api/api-keys/", csrf),
        (f"/api/devices/{phone['device_id']}/heartbeat/", token),
        ("/api/auth/login/", {}),
        ("/api/auth/logout/", csrf),  # a route that takes no body takes none but JSON
    ):
        for content in (b'{"to": ', b"hello", b"{}}", b'{"to": 5}}', b"[1]]"):
            reply = client.post(path, content=content, headers={**JSON_TYPE, **headers})
            assert (reply.status_code, reply.json()["code"]) == (400, "invalid_json"), (path, content, reply.text)
    assert client.get("/api/stats/").status_code == 200  # the refused logout ended nothing


# OPTIONS -----------------------------------------------------------------------------------------


def test_options_lists_every_method_of_the_path_and_needs_no_credential(client: Any) -> None:
    document = client.get("/schema/openapi.json").json()
    for path, item in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "abc", path)
        reply = client.options(concrete)  # no cookie, no token
        assert reply.status_code == 204, (path, reply.text)
        allowed = {method.strip() for method in reply.headers["Allow"].split(",")}
        documented = {method.upper() for method in item if method in {"get", "post", "patch", "put", "delete"}}
        assert allowed == documented | {"OPTIONS"}, (path, reply.headers["Allow"])


# The document and the server agree on what they take ---------------------------------------------


def _body_property(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema["properties"][name]  # type: ignore[no-any-return]


def _document_allows(schema: dict[str, Any], value: str) -> bool:
    """Whether a string property's schema (the keywords the document uses for strings)
    allows ``value``: ``pattern`` as JSON Schema reads it, unanchored."""
    return (
        schema["type"] == "string"
        and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
        and ("pattern" not in schema or re.search(schema["pattern"], value) is not None)
    )


def test_what_the_document_allows_in_a_string_the_server_takes_and_what_it_does_not_the_server_refuses(
    client: Any,
) -> None:
    """Empty and blank strings above all: a field the server refuses empty says so in
    the document (a minLength or a pattern), and one the document allows is taken."""
    document = client.get("/schema/openapi.json").json()
    csrf = signed_up(client, "strings@example.com")

    def code() -> str:
        return str(client.post("/api/devices/pairing-codes/", headers=csrf).json()["code"])

    device = client.post("/api/devices/register/", json={"code": code(), "device_name": "Pixel"}).json()["device_id"]
    cases: list[tuple[str, str, Any, list[str]]] = [
        # (path, field, the body with the field's value, values)
        ("/api/sms/send/", "to", lambda v: {"to": v, "message": "x", "device_id": device}, ["", "+1", "+0", TO]),
        ("/api/sms/send/", "message", lambda v: {"to": TO, "message": v, "device_id": device}, ["", " ", "x"]),
        ("/api/api-keys/", "name", lambda v: {"name": v}, ["", "   ", "\ufeff", " k "]),
        ("/api/devices/register/", "code", lambda v: {"code": v, "device_name": "P"}, ["", " "]),
        ("/api/devices/register/", "device_name", lambda v: {"code": code(), "device_name": v}, ["", " \t", " P "]),
        (
            "/api/devices/register/",
            "phone_number",
            lambda v: {"code": code(), "device_name": "P", "phone_number": v},
            ["", " ", "+1", "+15551234567"],
        ),
        ("/api/webhooks/", "url", lambda v: {"url": v}, ["", " ", "0", "http://example.com/", "https://"]),
        (
            "/api/account/limit-requests/",
            "reason",
            lambda v: {"reason": v, "daily_quota": 20_000},
            ["", "   ", "\u3000", "more, please"],
        ),
        (
            "/api/auth/signup/",
            "email",
            lambda v: {"email": v, "password": "long enough", "account_type": "api_only"},
            ["", "no at sign", "someone@example.com"],
        ),
    ]
    for path, field, body, values in cases:
        schema = _body_property(document, path, "post", field)
        for value in values:
            reply = client.post(path, json=body(value), headers=csrf)
            allowed = _document_allows(schema, value)
            taken = reply.status_code < 300 or reply.status_code == 409
            assert taken == allowed, (path, field, value, allowed, reply.status_code, reply.text)
            if not allowed:
                assert reply.status_code == 400, (path, field, value, reply.text)


def test_the_status_filter_is_the_enum_the_server_takes(client: Any) -> None:
    document = client.get("/schema/openapi.json").json()
    parameters = document["paths"]["/api/sms/"]["get"]["parameters"]
    status = next(p for p in parameters if p["name"] == "status")["schema"]
    assert [s for s in status["enum"] if s is not None] == list(STATUSES)
    signed_up(client, "filters@example.com")
    for value in STATUSES:
        assert client.get("/api/sms/", params={"status": value}).status_code == 200, value
    for value in ("0000", "", "SENT", "sent ", "any"):
        reply = client.get("/api/sms/", params={"status": value})
        assert (reply.status_code, reply.json()["code"]) == (400, "invalid_request"), (value, reply.text)


def _digits(n: int) -> list[str]:
    return sorted({"0" * n, "1" * n, "9" * n, "1" + "0" * (n - 1), "0" + "9" * (n - 1), "2345678901234"[:n]})


def test_every_phone_number_the_document_allows_is_taken_by_the_broker() -> None:
    """Every country code, every national length up to E.164's 15 digits, with leading
    digits a national prefix or a zero would be read from: where the document's
    pattern allows the number, the broker takes it."""
    allowed = 0
    for code in sorted(COUNTRY_CODE_TO_REGION_CODE):
        lengths_allowed = 0
        for n in range(1, 16 - len(str(code))):
            for digits in _digits(n):
                number = f"+{code}{digits}"
                if re.fullmatch(E164_POSSIBLE, number):
                    normalize_phone_number(number)  # raises if refused
                    allowed += 1
                    lengths_allowed += 1
        assert lengths_allowed, f"no number of country code {code} is allowed"
    assert allowed > 3_000
    # What the document refuses, the broker refuses too (a wrong length, no country code).
    for number in ("+1555123456", "+155512345678", "+0123456", "+999123456", "+1"):
        assert not re.fullmatch(E164_POSSIBLE, number)
        with pytest.raises(errors.InvalidInput):
            normalize_phone_number(number)


@hypothesis.settings(max_examples=300, deadline=None)
@given(st.from_regex(E164_POSSIBLE, fullmatch=True))
def test_any_number_drawn_from_the_pattern_is_taken(number: str) -> None:
    normalize_phone_number(number)


@hypothesis.settings(max_examples=300, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@given(st.from_regex(WEBHOOK_URL_PATTERN, fullmatch=True).filter(lambda url: len(url) <= MAX_URL))
def test_any_webhook_url_drawn_from_the_pattern_is_taken_as_written(url: str) -> None:
    hypothesis.assume("localhost" not in url.lower())  # a name judged by what it resolves to
    stored = check_url(url, allow_loopback=False)
    assert len(stored) <= MAX_URL and parse_url(stored, allow_loopback=False).url == stored  # as registration does


def test_webhook_urls_the_document_refuses_the_broker_refuses() -> None:
    for url in ("", " ", "0", "https://", "http://example.com/", "https://10.0.0.1/"):
        assert not re.fullmatch(WEBHOOK_URL_PATTERN, url), url
        with pytest.raises(errors.InvalidInput):
            check_url(url, allow_loopback=False)
    # The longest the document allows is taken; one more character is not.
    longest = "https://example.com/?" + "q" * (MAX_URL - len("https://example.com/?"))
    assert re.fullmatch(WEBHOOK_URL_PATTERN, longest) and len(longest) == MAX_URL
    assert check_url(longest, allow_loopback=False) == longest
    with pytest.raises(errors.InvalidInput):
        check_url(longest + "q", allow_loopback=False)


# Signup says an email is taken, within the per-address limit ------------------------------------


def test_a_taken_email_is_409_and_spends_the_per_address_signup_limit(
    real_servers: dict[str, RedisServer], tmp_path: Path
) -> None:
    """Signup tells that an address has an account (409 ``email_taken``), so it can be
    used to probe for addresses; every try, that one too, spends the client address's
    signup limit, checked before the body is read."""
    server = emptied(real_servers[NEWEST_REAL])
    settings = Settings(
        redis_url=server.url,
        data_dir=str(tmp_path),
        background_in_workers=False,
        **{**ROOMY_LIMITS, "auth_burst": 3, "auth_per_minute": 1},
    )
    with TestClient(app=create_app(settings)) as client:
        document = client.get("/schema/openapi.json").json()
        assert "409" in document["paths"]["/api/auth/signup/"]["post"]["responses"]
        body = {"email": "taken@example.com", "password": "correct horse battery", "account_type": "api_only"}
        assert client.post("/api/auth/signup/", json=body).status_code == 201
        client.cookies.clear()
        for email in ("taken@example.com", " TAKEN@example.com"):
            reply = client.post("/api/auth/signup/", json={**body, "email": email})
            assert (reply.status_code, reply.json()["code"]) == (409, "email_taken"), reply.text
        limited = client.post("/api/auth/signup/", json={**body, "email": "new@example.com"})
        assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited"), limited.text
        assert int(limited.headers["Retry-After"]) >= 1
        assert (
            client.post("/api/auth/login/", json={"email": "taken@example.com", "password": "x" * 9}).status_code == 401
        )
