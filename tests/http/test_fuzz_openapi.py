"""Property-based fuzzing of every operation in the served OpenAPI document, with every
check schemathesis has.

A real ``connecfy serve`` (rate limits raised so the fuzzing is not all 429s), its
document loaded from ``/schema/openapi.json`` with schemathesis, and for each operation
hypothesis-generated requests, valid (positive) and invalid (negative), then
schemathesis's coverage phase (boundary values, each required part left out, the methods
the path does not serve), over HTTP. Every response must pass every registered check:
no 5xx, a documented status code, content type, body and headers, valid data accepted
and invalid data refused, a missing required header refused, 405 with ``Allow`` for an
unserved method and ``OPTIONS`` listing the path's methods, and credentials enforced
(``ignored_auth`` sends the request again without them and with wrong ones). The stateful
checks (``use_after_free``, ``ensure_resource_availability``, ``object_level_authorization``)
have no scenario to judge here and pass; the credential matrix and contract tests cover
what they would.

Credentials are supplied from what each operation's document says: the security schemes
(a signed-up user's ``sessionid`` cookie and ``X-CSRFToken``, every fourth request the
operator's; a paired phone's token as ``X-Device-Token`` or, every fourth request,
``Authorization: Bearer``), unless a coverage case leaves one out on purpose, and the
checks are told they were given on purpose. Where a part of a case was generated valid,
values the document cannot make valid are replaced with real ones: the ``api_key``, ids
(fresh where the request consumes them: a DELETE gets a throwaway device or key, logout
a throwaway session, a cancel a freshly queued message, a status report a message its
phone has just claimed), a pairing code, the device a self-managed account's dashboard
send must name, and a webhook address (a generated host would be looked up in DNS at
every registration; tests/app checks that every URL the document's pattern allows is
taken as written); what makes a negative case invalid is kept. Phone numbers and emails are sent as
generated (the document says exactly which the server takes), except a number to put on
the suppression list, which is always a fresh one. So the shared credentials
survive the run, and it checks that they did.

Failures are collected per operation (schemathesis's report with a curl command to
reproduce each) and the test fails listing all of them; it also fails unless every
operation in the document was exercised, and every authenticated one got past its
credential check at least once. ``FUZZ_EXAMPLES`` sets the positive cases per operation
(negative ones are half that, boundary cases as many). Runs are derandomized when ``CI``
is set (conftest.py).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from connecfy_client import e2e
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoverageScenario

from broker.long_poll import MAX_WAIT_SECONDS
from broker.validation import MAX_MESSAGE_CHARS
from tests.support.e2e_server import Api, ServerProcess, expect

POSITIVE_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
NEGATIVE_EXAMPLES = max(1, POSITIVE_EXAMPLES // 2)
COVERAGE_EXAMPLES = POSITIVE_EXAMPLES  # boundary cases per operation, besides the missing parts and methods
load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # every check schemathesis has, none left out
PASSWORD = "correct horse battery staple"
OPERATOR_EMAIL = "operator@connecfy.test"
OPERATOR_PASSWORD = "operator-password-1"
TO = "+15551234567"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Far above what a fuzz run spends, so that a 429 is the exception, not the rule.
RAISED_LIMITS = {
    "CONNECFY_AUTH_PER_MINUTE": "100000",
    "CONNECFY_AUTH_BURST": "100000",
    "CONNECFY_TASKS_PER_MINUTE": "100000",
    "CONNECFY_TASKS_BURST": "100000",
    "CONNECFY_SENDS_PER_SECOND": "100000",
    "CONNECFY_SENDS_BURST": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "1000000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "1000000",
    "CONNECFY_QUOTA_SELF_MANAGED": "1000000",
    "CONNECFY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true",  # the webhook endpoints the fuzzing registers
}
# Registered, never delivered to: a URL the document's pattern allows, and a name that
# resolves without asking DNS (to loopback, which the setting above lets through).
WEBHOOK_URL = "https://localhost:9/connecfy-fuzz"


@dataclass
class Phone:
    device_id: str
    token: str


@dataclass
class Session:
    cookie: str
    csrf: str


@dataclass
class Fixtures:
    """The credentials and objects the fuzzed requests use, and makers of throwaway ones."""

    base_url: str
    user: Api
    session: Session
    operator: Session
    phone: Phone  # acts in the phone's own endpoints and reports statuses
    spare: Phone  # renamed and re-budgeted by PATCH, so the phone's budget stays whole
    api_key: str
    message_id: str
    numbers: int = 0

    def fresh_session(self) -> Session:
        return _login(self.base_url, self.user.account["email"], PASSWORD)

    def pairing_code(self) -> str:
        return expect(self.user.post("/api/devices/pairing-codes/"), 201)["code"]

    def fresh_phone(self, name: str = "fuzz phone") -> Phone:
        registered = expect(
            self.user.post(
                "/api/devices/register/", json={"code": self.pairing_code(), "device_name": name, "phone_number": TO}
            ),
            201,
        )
        return Phone(registered["device_id"], registered["device_token"])

    def fresh_number(self) -> str:
        """A number no other request names, for a suppression to add."""
        self.numbers += 1
        return f"+1555{7_000_000 + self.numbers}"

    def fresh_key_id(self) -> str:
        return expect(self.user.post("/api/api-keys/", json={"name": "throwaway"}), 201)["id"]

    def queued_message(self, device_id: str) -> str:
        return expect(
            self.user.post("/api/sms/send/", json={"device_id": device_id, "to": TO, "message": "fuzz"}), 202
        )["id"]

    def held_message(self) -> str:
        """A message the phone has claimed (the phone's queue holds only these)."""
        message_id = self.queued_message(self.phone.device_id)
        tasks = expect(
            self.user.get(
                f"/api/devices/{self.phone.device_id}/tasks/",
                params={"limit": 100},
                headers={"X-Device-Token": self.phone.token},
            ),
            200,
        )
        assert message_id in {t["id"] for t in tasks}, tasks
        return message_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connecfy-fuzz")
    process = ServerProcess(data_dir, settings=RAISED_LIMITS).start()
    try:
        process.create_operator(OPERATOR_EMAIL, OPERATOR_PASSWORD)
        yield process
    finally:
        assert process.stop() == 0, process.output()[-3000:]


def _login(base_url: str, email: str, password: str) -> Session:
    client = Api(base_url)
    try:
        expect(client.post("/api/auth/login/", json={"email": email, "password": password}), 200)
        return Session(client.client.cookies["sessionid"], client.client.cookies["csrftoken"])
    finally:
        client.close()


@pytest.fixture(scope="module")
def fixtures(server: ServerProcess) -> Iterator[Fixtures]:
    user = Api(server.base_url)
    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    user.account = expect(
        user.post("/api/auth/signup/", json={"email": email, "password": PASSWORD, "account_type": "self_managed"}), 201
    )
    session = Session(user.client.cookies["sessionid"], user.client.cookies["csrftoken"])
    fixtures = Fixtures(
        server.base_url,
        user,
        session,
        _login(server.base_url, OPERATOR_EMAIL, OPERATOR_PASSWORD),
        Phone("", ""),
        Phone("", ""),
        "",
        "",
    )
    fixtures.phone = fixtures.fresh_phone("fuzz phone")
    fixtures.spare = fixtures.fresh_phone("spare phone")
    fixtures.api_key = expect(user.post("/api/api-keys/", json={"name": "fuzz"}), 201)["api_key"]
    fixtures.message_id = fixtures.queued_message(fixtures.spare.device_id)
    try:
        yield fixtures
    finally:
        user.close()


# Preparing one case ------------------------------------------------------------------------


@dataclass
class Tally:
    """Per operation: cases sent, statuses answered, failures reported."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failure_titles: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _schemes(operation: Any) -> set[str]:
    security = operation.definition.raw.get("security") or []
    return {name for requirement in security for name in requirement}


def _body_has_api_key(document: dict[str, Any], operation: Any) -> bool:
    """The request body's schema (through its $ref) has an ``api_key`` property."""
    body = operation.definition.raw.get("requestBody") or {}
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return "api_key" in (schema.get("properties") or {})


ENVELOPE = e2e.encrypt("fuzz", "fuzz passphrase")


def _realistic(value: Any, fx: Fixtures) -> Any:
    """The body with real values where the document cannot say which are valid: its
    ``api_key``, ``device_id``, ``url`` and ``received_at`` strings, at any depth (a
    batch's items too): the rest stays as generated."""
    if isinstance(value, list):
        return [_realistic(item, fx) for item in value]
    if not isinstance(value, dict):
        return value
    real = {
        "api_key": fx.api_key,
        "device_id": fx.spare.device_id,
        "url": WEBHOOK_URL,
        "received_at": "2026-12-05T12:00:00.123Z",  # the pattern cannot say which days February has
        # Nor how far ahead a send may be scheduled (30 days), nor that February has no 30th.
        "send_at": (datetime.now(UTC) + timedelta(minutes=10)).isoformat(timespec="seconds"),
        "timezone": "Europe/Berlin",  # nor which names the time zone database has
    }
    made = {
        key: real[key] if isinstance(item, str) and key in real else _realistic(item, fx) for key, item in value.items()
    }
    if isinstance(made.get("start"), str) and made.get("start") == made.get("end"):
        made["end"] = "23:59" if made["start"] != "23:59" else "00:00"  # a send window must not be empty
    if isinstance(made.get("sim_slot"), int | float) and made.get("device_id") is None:
        made["device_id"] = fx.spare.device_id  # a SIM is one phone's: the document cannot say so
    # What ``message`` may hold depends on ``encrypted``, which the document says in words:
    # an envelope with it, at most 1,600 characters of text without it.
    if isinstance(made.get("message"), str) and "to" in made:
        if made.get("encrypted") is True:
            made["message"] = ENVELOPE
        else:
            made["message"] = made["message"][:MAX_MESSAGE_CHARS]
    return made


def _generated_valid(case: Any, location: ParameterLocation) -> bool:
    """Whether schemathesis generated this part of the case valid (a negative case is
    invalid in one part only)."""
    component = case.meta.components.get(location) if case.meta is not None else None
    return component is None or component.mode.is_positive


def prepare(case: Any, fx: Fixtures, n: int) -> dict[str, str]:
    """Give the case credentials, and real ids and values where it was generated valid,
    decided by what its operation documents (what makes a negative case invalid is kept).
    Returns the credential headers, which the checks are told were given on purpose."""
    operation = case.operation
    method = operation.method.upper()
    schemes = _schemes(operation)
    real = _generated_valid(case, ParameterLocation.PATH)
    headers = dict(case.headers or {})
    cookies = dict(case.cookies or {})
    credentials: dict[str, str] = {}
    data = case.meta.phase.data if case.meta is not None else None
    # A coverage case may leave a credential out on purpose (e.g. the CSRF header).
    left_out = data.parameter if getattr(data, "scenario", None) == CoverageScenario.MISSING_PARAMETER else None

    if "session" in schemes:
        session = fx.operator if n % 4 == 1 else fx.session
        if operation.path.endswith("/logout/"):
            session = fx.fresh_session()  # it ends the session it is sent with
        if left_out != "sessionid":
            cookies["sessionid"] = session.cookie
            credentials["Cookie"] = f"sessionid={session.cookie}"
        if method in UNSAFE and left_out != "X-CSRFToken":
            headers["X-CSRFToken"] = credentials["X-CSRFToken"] = session.csrf
    if "deviceToken" in schemes or "deviceBearer" in schemes:
        if n % 4 == 2 or left_out == "X-Device-Token":
            headers.pop("X-Device-Token", None)
            headers["Authorization"] = credentials["Authorization"] = f"Bearer {fx.phone.token}"
        else:
            headers.pop("Authorization", None)
            headers["X-Device-Token"] = credentials["X-Device-Token"] = fx.phone.token

    path_parameters = dict(case.path_parameters or {})
    if real and "device_id" in path_parameters:
        if method == "DELETE":
            path_parameters["device_id"] = fx.fresh_phone("throwaway").device_id
        elif "session" in schemes:
            path_parameters["device_id"] = fx.spare.device_id
        else:
            path_parameters["device_id"] = fx.phone.device_id
    if real and "key_id" in path_parameters:
        path_parameters["key_id"] = fx.fresh_key_id()
    if real and "message_id" in path_parameters:
        if "deviceToken" in schemes:
            path_parameters["message_id"] = fx.held_message()
        elif method in UNSAFE:
            path_parameters["message_id"] = fx.queued_message(fx.spare.device_id)
        else:
            path_parameters["message_id"] = fx.message_id
    if path_parameters:
        case.path_parameters = path_parameters
    wait = (case.query or {}).get("wait")
    if (type(wait) is int or (isinstance(wait, str) and wait.isdigit())) and 1 < int(wait) <= MAX_WAIT_SECONDS:
        # A long poll of a second: its path runs, and the run does not wait out minutes.
        case.query = {**case.query, "wait": type(wait)(1)}
    if case.query and _generated_valid(case, ParameterLocation.QUERY):
        # The pattern of a moment cannot say which days February has, nor that there was no year 0.
        moments = {"since": "2026-12-01T00:00:00Z", "until": "2026-12-31T23:59:59.999+01:00"}
        case.query = {k: moments[k] if k in moments and isinstance(v, str) else v for k, v in case.query.items()}

    if isinstance(case.body, dict) and _generated_valid(case, ParameterLocation.BODY):
        body = _realistic(case.body, fx)
        if operation.path.endswith("/register/"):
            body["code"] = fx.pairing_code()
        if operation.path == "/api/sms/send/":
            body["device_id"] = fx.spare.device_id  # both sessions' accounts are self-managed: they name one
        if operation.path == "/api/suppressions/" and "phone" in body:
            # Added numbers stay on the list: one the DELETE's cases generate must not be on
            # it, or a DELETE that schemathesis counts as negative (it judges a path value
            # in its URL-encoded "%2B..." form) would remove it, 204.
            body["phone"] = fx.fresh_number()
        case.body = body

    case.headers = headers
    case.cookies = cookies
    return credentials


# The run -------------------------------------------------------------------------------------


def _coverage_cases(schema: Any, operation: Any) -> list[Any]:
    """Schemathesis's coverage phase for the operation: boundary values, missing required
    parts, and the methods the path does not serve (405 with ``Allow``); every case of the
    last two kinds, and the first COVERAGE_EXAMPLES of the rest."""
    cases = schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation),
    )
    picked, others = [], 0
    for case in cases:
        scenario = getattr(case.meta.phase.data, "scenario", None)
        if scenario in (CoverageScenario.UNSPECIFIED_HTTP_METHOD, CoverageScenario.MISSING_PARAMETER):
            picked.append(case)
        elif others < COVERAGE_EXAMPLES:
            picked.append(case)
            others += 1
    return picked


def _fuzz(schema: Any, operation: Any, fx: Fixtures, tally: Tally, http: requests.Session, base_url: str) -> None:
    label = operation.label

    def run(case: Any) -> None:
        n = tally.cases[label]
        tally.cases[label] += 1
        try:
            credentials = prepare(case, fx, n)
            http.cookies.clear()
            response = case.call(base_url=base_url, session=http, timeout=15)
        except Exception as exc:  # noqa: BLE001 - a broken connection is a finding too
            _record(tally, label, type(exc).__name__, f"{type(exc).__name__}: {exc}")
            return
        tally.statuses[label][response.status_code] += 1
        try:
            http.cookies.clear()
            case.validate_response(
                response, checks=ALL_CHECKS, headers=credentials, transport_kwargs={"session": http, "timeout": 15}
            )
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected, reported at the end
            titles = [getattr(f, "title", type(f).__name__) for f in getattr(exc, "exceptions", [exc])]
            _record(tally, label, " / ".join(sorted(titles)), str(exc))

    raw = operation.definition.raw
    modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
    if raw.get("parameters") or raw.get("requestBody") or raw.get("security"):
        modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))  # something to make invalid
    for mode, examples in modes:
        test = hypothesis.settings(
            max_examples=examples,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(case=operation.as_strategy(generation_mode=mode))(run))
        test()
    for case in _coverage_cases(schema, operation):
        run(case)


def _record(tally: Tally, label: str, title: str, report: str) -> None:
    if title not in tally.failure_titles[label]:  # one report per kind of failure and operation
        tally.failure_titles[label].add(title)
        tally.failures[label].append(report)


def test_fuzz_every_operation(server: ServerProcess, fixtures: Fixtures) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json")
    document = schema.raw_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    # Those that end a credential they are sent with go last, though each gets a throwaway one.
    operations.sort(key=lambda op: (op.method.upper() == "DELETE" or op.path.endswith("/logout/"), op.label))
    labels = [operation.label for operation in operations]
    documented = [
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete", "head", "options"}
    ]
    assert len(labels) == len(documented) >= 20 and len(set(labels)) == len(labels), (labels, documented)

    tally = Tally()
    with requests.Session() as http:
        for operation in operations:
            _fuzz(schema, operation, fixtures, tally, http, server.base_url)

    report = [
        f"{label}: {tally.cases[label]} cases, statuses {dict(sorted(tally.statuses[label].items()))}"
        for label in labels
    ]
    print("\n".join(report))
    failures = [f"== {label}\n" + "\n".join(tally.failures[label]) for label in labels if tally.failures[label]]
    count = sum(len(tally.failures[label]) for label in labels)
    assert not failures, f"{count} failure(s):\n" + "\n\n".join(failures)

    untested = [label for label in labels if tally.cases[label] == 0]
    assert not untested, f"operations never exercised: {untested}"
    # Each authenticated operation got past its credential check at least once.
    stuck = [
        label
        for label, operation in zip(labels, operations, strict=False)
        if (_schemes(operation) or _body_has_api_key(document, operation)) and set(tally.statuses[label]) <= {401}
    ]
    assert not stuck, f"never past authentication (all 401): {stuck}\n" + "\n".join(report)

    # The shared credentials outlived the run.
    assert fixtures.user.get("/api/stats/").status_code == 200
    assert (
        fixtures.user.get(
            f"/api/devices/{fixtures.phone.device_id}/tasks/", headers={"X-Device-Token": fixtures.phone.token}
        ).status_code
        == 200
    )
    assert (
        requests.post(
            f"{server.base_url}/api/external/send/",
            timeout=10,
            json={"api_key": fixtures.api_key, "to": TO, "message": "still here"},
        ).status_code
        == 202
    )
