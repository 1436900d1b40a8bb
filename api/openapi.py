"""The served OpenAPI document, made to describe what the API really does.

Litestar documents each handler's success response and a generic 400. At start-up
:func:`complete_schema` adds what it cannot know, derived from each route handler rather
than from a list of paths, so a new endpoint is documented the moment it is routed:

- trailing slashes: every ``/api/`` path as it is called, ``.../``;
- one ``Error`` schema, ``{"status_code", "code", "detail"}`` plus optional ``field``,
  ``index`` and ``errors`` (per-item problems of a batch), and per operation the error
  statuses it can answer, each pinning ``status_code`` to the HTTP status:

  ====  =====================================================================
  400   a body, a query or a path parameter (or the handler raises one)
  401   a credential guard (device token, session, API key), or raised
  403   CSRF on an unsafe session request, a device token on another
        device's path, operator-only, or raised by the handler
  404   an id in the path or the body (``*_id``), or raised
  409   a POST on a path id (state transitions: cancel, status, decide), an
        Idempotency-Key, a broker method raising a 409 error (email taken, a
        request already pending), or raised
  413   POST/PUT/PATCH (the body cap), 415 the same (non-JSON body)
  429   every endpoint with a guard or a body: rate limits and quotas, with
        ``Retry-After`` (always) and ``RateLimit-Limit/Remaining/Reset`` (on a
        rate limit; a daily quota has no window to describe)
  503   every endpoint that reaches Redis, with ``Retry-After``
  ====  =====================================================================

  500 is never documented: it is a bug.
- a 204 has no body; a body with a default (``data: X | None = None``) is optional;
  a Struct with ``forbid_unknown_fields`` forbids additional properties;
- the credentials as security schemes: ``deviceToken`` (``X-Device-Token``) or
  ``deviceBearer`` (``Authorization: Bearer``), ``session`` (cookie ``sessionid``) with
  ``csrf`` (``X-CSRFToken``) on unsafe methods; the API key travels in the body, so it is
  described on the body and its ``api_key`` property.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, get_args

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)

from api.credentials import SESSION_COOKIE, api_key_guard, device_guard, operator_guard, session_guard
from api.errors import _BROKER_STATUS
from broker.accounts import Accounts
from broker.api_keys import ApiKeys
from broker.devices import Devices
from broker.limits import AccountLimits
from broker.message_log import MessageLog
from broker.messages import Messages
from broker.presence import Presence
from broker.sessions import Sessions
from broker.webhooks.endpoints import WebhookEndpoints

SERVICES: dict[str, type] = {
    "accounts": Accounts,
    "sessions": Sessions,
    "api_keys": ApiKeys,
    "devices": Devices,
    "presence": Presence,
    "messages": Messages,
    "message_log": MessageLog,
    "limits": AccountLimits,
    "webhooks": WebhookEndpoints,
}

DESCRIPTION = (
    "Connecfy turns Android phones into an SMS gateway.\n\n"
    "Credentials, never overlapping: a device token (`X-Device-Token` or `Authorization: Bearer`) acts as one "
    "phone; the dashboard session (cookie `sessionid`, and on unsafe methods the `csrftoken` cookie echoed in "
    "`X-CSRFToken`); a send-only API key, sent as `api_key` in the JSON body. A missing or unknown credential is "
    "401, checked before the body.\n\n"
    'Every error is JSON `{"status_code", "code", "detail"}` (schema `Error`), some with `field`, `index` '
    "or a batch's `errors`. Bodies are JSON (415 otherwise), at most 64 KiB (413), the batch 2 MiB. A 429 carries "
    "`Retry-After`, and on a rate limit `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a 503 "
    "(the message store unreachable) carries `Retry-After`. A path with a method it does not serve is 405."
)
JSON = "application/json"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CREDENTIAL_GUARDS = (device_guard, session_guard, api_key_guard)

IDEMPOTENCY_MARKERS = re.compile(r"IDEMPOTENCY_HEADER|[Ii]dempotency-[Kk]ey")
RAISED_STATUS = re.compile(r"\bApiError\(\s*(\d{3})")
RAISED_HELPERS = {"not_authenticated": 401, "forbidden": 403, "not_found": 404}
RESPONSE_STATUS = re.compile(r"\bstatus_code\s*=\s*(\d{3})")

ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body, a query or a path parameter is not valid (`field` names the first bad field)."),
    401: ("Unauthorized", "The credential is missing, unknown, expired or revoked (checked before the body)."),
    403: (
        "Forbidden",
        "The credential may not do this: CSRF token missing or wrong, another device's id, "
        "operator only, API-only accounts pair no phones, or signup is closed.",
    ),
    404: ("NotFound", "No such object for this credential (another account's ids are not found either)."),
    405: ("MethodNotAllowed", "The path exists but not with this method."),
    409: (
        "Conflict",
        "The request conflicts with the current state: email taken, a status change the message's "
        "state does not allow, or an Idempotency-Key reused with another body.",
    ),
    413: ("PayloadTooLarge", "The body is larger than the endpoint accepts."),
    415: ("UnsupportedMediaType", "The body is not sent as Content-Type: application/json."),
    429: (
        "TooManyRequests",
        "A rate limit or the account's daily quota was reached: retry after `Retry-After` seconds.",
    ),
    503: ("ServiceUnavailable", "The message store is unreachable: retry after `Retry-After` seconds."),
}

_INTEGER = Schema(type=OpenAPIType.INTEGER)
_STRING = Schema(type=OpenAPIType.STRING)
RATE_LIMIT_HEADERS = {
    "Retry-After": "Seconds to wait before retrying.",
    "RateLimit-Limit": "On a rate limit: the requests (or messages) of a full burst.",
    "RateLimit-Remaining": "On a rate limit: what is left of the burst now.",
    "RateLimit-Reset": "On a rate limit: seconds until the burst is whole again.",
}


def complete_schema(app: Litestar) -> None:
    schema = app.openapi_schema
    _trailing_slashes(app)
    components = schema.components
    components.schemas = {**(components.schemas or {}), **_error_schemas()}
    components.responses = {**(components.responses or {}), **_error_responses()}
    components.security_schemes = {**(components.security_schemes or {}), **_security_schemes()}
    forbidding = _structs_forbidding_unknown_fields(app)
    for name in forbidding:
        component = (components.schemas or {}).get(name)
        if isinstance(component, Schema):
            component.additional_properties = False
    for method, _, operation, handler in _operations(app):
        _describe(method, operation, handler, components)
    if not schema.info.description:
        schema.info.description = DESCRIPTION


def _trailing_slashes(app: Litestar) -> None:
    """Litestar matches paths without their trailing slash; the API is documented (and
    called) with it, so the OpenAPI document lists every /api/ path as served: ".../"."""
    schema = app.openapi_schema
    if schema.paths:
        schema.paths = {_served(path): item for path, item in schema.paths.items()}


def _served(path: str) -> str:
    return path + "/" if path.startswith("/api/") and not path.endswith("/") else path


def _operations(app: Litestar) -> Iterator[tuple[str, str, Operation, HTTPRouteHandler]]:
    """(method, documented path, its Operation, its handler) for every documented route."""
    schema = app.openapi_schema
    plugin = app.plugins.get(OpenAPIPlugin)
    for route in plugin.included_routes.values():
        path = _served(route.path_format or "/")
        item = (schema.paths or {}).get(path)
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, str(method).lower(), None)
            if isinstance(operation, Operation) and handler.resolve_include_in_schema():
                yield str(method).upper(), path, operation, handler


# What a handler does -----------------------------------------------------------------------


def _source(handler: HTTPRouteHandler) -> str:
    """The handler's source and that of the module functions it calls (one level deep)."""
    fn = handler.fn
    fn = getattr(fn, "__func__", fn)
    texts = []
    for obj in (fn, *(fn.__globals__.get(name) for name in getattr(fn, "__code__", None).co_names)):
        if inspect.isfunction(obj):
            try:
                texts.append(inspect.getsource(obj))
            except (OSError, TypeError):
                continue
    return "\n".join(texts)


def _raised_statuses(source: str) -> set[int]:
    statuses = {int(s) for s in RAISED_STATUS.findall(source)}
    statuses |= {status for name, status in RAISED_HELPERS.items() if re.search(rf"\b{name}\(", source)}
    return statuses


def _broker_conflicts(source: str) -> bool:
    """Whether a broker method the handler calls raises a domain error that is a 409."""
    conflicts = [cls.__name__ for cls, status in _BROKER_STATUS.items() if status == 409]
    called = [
        (SERVICES[service], name)
        for service, name in re.findall(r"\bbroker\.(\w+)\.(\w+)\(", source)
        if service in SERVICES
    ]
    for owner, name in set(called):
        method = getattr(owner, name, None)
        try:
            text = inspect.getsource(method) if callable(method) else ""
        except (OSError, TypeError):
            continue
        if any(re.search(rf"\b{cls}\b", text) for cls in conflicts):
            return True
    return False


def _body_field(handler: HTTPRouteHandler) -> Any:
    return handler.parsed_fn_signature.parameters.get("data")


def _uses_broker(handler: HTTPRouteHandler) -> bool:
    return "broker" in handler.parsed_fn_signature.parameters


def _structs(annotation: Any, seen: set[Any] | None = None) -> Iterator[type[msgspec.Struct]]:
    """Every msgspec Struct a body annotation holds, nested ones included."""
    seen = set() if seen is None else seen
    if annotation in seen:
        return
    seen.add(annotation)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        yield annotation
        for field in msgspec.structs.fields(annotation):
            yield from _structs(field.type, seen)
    for arg in get_args(annotation):
        yield from _structs(arg, seen)


def _body_structs(handler: HTTPRouteHandler) -> list[type[msgspec.Struct]]:
    field = _body_field(handler)
    return [] if field is None else list(_structs(field.annotation))


def _structs_forbidding_unknown_fields(app: Litestar) -> set[str]:
    return {
        struct.__name__
        for _, _, _, handler in _operations(app)
        for struct in _body_structs(handler)
        if struct.__struct_config__.forbid_unknown_fields
    }


# One operation -----------------------------------------------------------------------------


def _describe(method: str, operation: Operation, handler: HTTPRouteHandler, components: Components) -> None:
    guards = handler.resolve_guards()
    source = _source(handler)
    parameters = [p for p in operation.parameters or [] if isinstance(p, Parameter)]
    path_parameters = {p.name for p in parameters if p.param_in == "path"}
    has_body = operation.request_body is not None
    credential = any(guard in guards for guard in CREDENTIAL_GUARDS)

    if IDEMPOTENCY_MARKERS.search(source) and not any(p.name.lower() == "idempotency-key" for p in parameters):
        parameters.append(
            Parameter(
                name="Idempotency-Key",
                param_in="header",
                required=False,
                schema=Schema(type=OpenAPIType.STRING),
                description="Makes a retry safe: the same key with the same body within 24 h returns the first answer "
                "and queues nothing; with another body it is 409 idempotency_key_reused.",
            )
        )
        operation.parameters = parameters

    statuses: set[int] = set()
    if has_body or parameters:
        statuses.add(400)
    if credential:
        statuses.add(401)
    if session_guard in guards and method in UNSAFE_METHODS:
        statuses.add(403)
    if device_guard in guards and "device_id" in path_parameters:
        statuses.add(403)
    if operator_guard in guards:
        statuses.add(403)
    body_ids = {
        f.name for struct in _body_structs(handler) for f in msgspec.structs.fields(struct) if f.name.endswith("_id")
    }
    if path_parameters or body_ids:
        statuses.add(404)  # an id in the path or the body that names nothing of this account
    object_ids = path_parameters - ({"device_id"} if device_guard in guards else set())  # not the caller itself
    if (method == "POST" and object_ids) or IDEMPOTENCY_MARKERS.search(source) or _broker_conflicts(source):
        statuses.add(409)  # an action on a stored object, a reused Idempotency-Key, a broker conflict
    if method in BODY_METHODS:
        statuses |= {413, 415}
    if credential or has_body or guards:
        statuses.add(429)
    if credential or _uses_broker(handler):
        statuses.add(503)
    statuses |= {s for s in _raised_statuses(source) if s in ERRORS}

    responses = operation.responses or {}
    success = _success_response(responses)
    for status in sorted({int(s) for s in RESPONSE_STATUS.findall(source)}):
        # A handler that answers a status of its own (readyz's 503) answers it with its own body.
        if str(status) not in responses and success is not None and status >= 400:
            responses[str(status)] = OpenAPIResponse(description=HTTPStatus(status).phrase, content=success.content)
    for status in sorted(statuses):
        if str(status) not in responses or status == 400:
            responses[str(status)] = Reference(ref=f"#/components/responses/{ERRORS[status][0]}")
    for status, response in responses.items():
        if status == "204" and isinstance(response, OpenAPIResponse):
            response.content = None  # a 204 has no body, hence no Content-Type
    operation.responses = responses

    _security(method, operation, guards)
    _request_body(operation, handler, guards, components)


def _success_response(responses: dict[str, Any]) -> OpenAPIResponse | None:
    for status, response in sorted(responses.items()):
        if status.startswith("2") and isinstance(response, OpenAPIResponse):
            return response
    return None


def _security(method: str, operation: Operation, guards: list[Callable[..., Any]]) -> None:
    if device_guard in guards:
        operation.security = [{"deviceToken": []}, {"deviceBearer": []}]
    elif session_guard in guards:
        operation.security = [{"session": [], "csrf": []}] if method in UNSAFE_METHODS else [{"session": []}]


API_KEY_DESCRIPTION = (
    "The send-only API key (from POST /api/api-keys/), sent in the JSON body as `api_key`. "
    "It authenticates the request: a missing, unknown or revoked key is 401, whatever else the "
    "body holds."
)


def _request_body(
    operation: Operation, handler: HTTPRouteHandler, guards: list[Callable[..., Any]], components: Components
) -> None:
    body = operation.request_body
    if body is None or isinstance(body, Reference):
        return
    field = _body_field(handler)
    if field is not None and field.has_default:
        body.required = False
    if api_key_guard in guards:
        body.description = API_KEY_DESCRIPTION
        media = (body.content or {}).get(JSON)
        schema = media.schema if media else None
        if isinstance(schema, Reference):
            schema = (components.schemas or {}).get(schema.ref.rsplit("/", 1)[-1])
        if isinstance(schema, Schema) and schema.properties and isinstance(schema.properties.get("api_key"), Schema):
            schema.properties["api_key"].description = API_KEY_DESCRIPTION


# Shared components -------------------------------------------------------------------------


def _error_schemas() -> dict[str, Schema]:
    item = Schema(
        type=OpenAPIType.OBJECT,
        required=["index", "field", "detail"],
        additional_properties=False,
        properties={"index": _INTEGER, "field": _STRING, "detail": _STRING},
        description="One problem with one item of a batch.",
    )
    error = Schema(
        type=OpenAPIType.OBJECT,
        required=["status_code", "code", "detail"],
        additional_properties=False,
        description="Every error, everywhere.",
        properties={
            "status_code": Schema(type=OpenAPIType.INTEGER, description="The HTTP status, repeated."),
            "code": Schema(type=OpenAPIType.STRING, description="A machine-readable code, e.g. invalid_phone_number."),
            "detail": Schema(type=OpenAPIType.STRING, description="A sentence a person understands."),
            "field": Schema(type=OpenAPIType.STRING, description="The request field at fault, when there is one."),
            "index": Schema(type=OpenAPIType.INTEGER, description="The batch item at fault, when there is one."),
            "errors": Schema(
                type=OpenAPIType.ARRAY,
                items=Reference(ref="#/components/schemas/BatchItemError"),
                description="Every bad item of a batch.",
            ),
        },
    )
    return {"Error": error, "BatchItemError": item}


def _error_responses() -> dict[str, OpenAPIResponse]:
    responses: dict[str, OpenAPIResponse] = {}
    for status, (name, description) in ERRORS.items():
        schema = Schema(
            all_of=[
                Reference(ref="#/components/schemas/Error"),
                Schema(
                    type=OpenAPIType.OBJECT, properties={"status_code": Schema(type=OpenAPIType.INTEGER, const=status)}
                ),
            ]
        )
        headers: dict[str, OpenAPIHeader | Reference] | None = None
        if status == 429:
            headers = {
                name_: OpenAPIHeader(schema=_INTEGER, required=name_ == "Retry-After", description=text)
                for name_, text in RATE_LIMIT_HEADERS.items()
            }
        elif status == 503:
            headers = {
                "Retry-After": OpenAPIHeader(
                    schema=_INTEGER, required=True, description=RATE_LIMIT_HEADERS["Retry-After"]
                )
            }
        responses[name] = OpenAPIResponse(
            description=description, headers=headers, content={JSON: OpenAPIMediaType(schema=schema)}
        )
    return responses


def _security_schemes() -> dict[str, SecurityScheme]:
    return {
        "deviceToken": SecurityScheme(
            type="apiKey",
            name="X-Device-Token",
            security_scheme_in="header",
            description="A paired phone's device token; it acts only as that device.",
        ),
        "deviceBearer": SecurityScheme(
            type="http", scheme="bearer", description="The same device token as `Authorization: Bearer <token>`."
        ),
        "session": SecurityScheme(
            type="apiKey",
            name=SESSION_COOKIE,
            security_scheme_in="cookie",
            description="The dashboard session, set by signup and login.",
        ),
        "csrf": SecurityScheme(
            type="apiKey",
            name="X-CSRFToken",
            security_scheme_in="header",
            description="On unsafe methods (POST, PUT, PATCH, DELETE) with a session: the "
            "`csrftoken` cookie echoed in this header.",
        ),
    }
