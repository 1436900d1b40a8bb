"""The parts of the OpenAPI document that every route shares, declared once; each route
names its own with ``**documented(...)``: the error statuses it answers and the
credential it takes.

- One ``Error`` schema, ``{"status_code", "code", "detail"}`` plus optional ``field``,
  ``index`` and ``errors`` (every bad item of a batch), and one component response per
  error status, pinning ``status_code`` to the HTTP status. A 429 carries
  ``Retry-After`` (always) and ``RateLimit-Limit/Remaining/Reset`` (on a rate limit; a
  daily quota has no window to describe); a 503 carries ``Retry-After``. 500 is never
  documented: it is a bug.
- The credentials as security schemes: ``deviceToken`` (``X-Device-Token``) or
  ``deviceBearer`` (``Authorization: Bearer``), ``session`` (cookie ``sessionid``) with
  ``csrf`` (``X-CSRFToken``) on unsafe methods. The API key travels in the JSON body
  (``api_key``), so it is described there, on the property.
- Every ``/api/`` path as it is called, with its trailing slash (Litestar matches paths
  without it, and would list them so); a 204 has no body; a body the handler defaults
  (``data: X | None = None``) is optional; a Struct that forbids unknown fields forbids
  additional properties.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition
from msgspec import UNSET, UnsetType

from api.credentials import CSRF_HEADER, SESSION_COOKIE

JSON = "application/json"

DESCRIPTION = (
    "Connecfy turns Android phones into an SMS gateway.\n\n"
    "Credentials, never overlapping: a device token (`X-Device-Token` or `Authorization: Bearer`) acts as one "
    "phone; the dashboard session (cookie `sessionid`, and on unsafe methods the `csrftoken` cookie echoed in "
    "`X-CSRFToken`); a send-only API key, sent as `api_key` in the JSON body. A missing or unknown credential is "
    "401, checked before the body; as the API key is in the body, a body there that is not JSON is 400 "
    "`invalid_json`, JSON without a valid key 401.\n\n"
    'Every error is JSON `{"status_code", "code", "detail"}` (schema `Error`), some with `field`, `index` '
    "or a batch's `errors`. Bodies are JSON (415 otherwise; 400 `invalid_json` when one does not parse), at most "
    "64 KiB (413), the batch 2 MiB. `OPTIONS` answers 204 with `Allow`, without a credential. A 429 carries "
    "`Retry-After`, and on a rate limit `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a 503 "
    "(the message store unreachable, `unavailable`, or refusing: `store_full`, `store_read_only`, "
    "`store_loading`, `store_busy`, or not copied to its replicas in time: `store_not_replicated`) carries "
    "`Retry-After`. A path with a method it does not serve is 405."
)


# forbid_unknown_fields: an error says nothing beyond these (ClosedStructs below).
class BatchItemError(msgspec.Struct, forbid_unknown_fields=True):
    """One problem with one item of a batch."""

    index: int
    field: str
    detail: str


class Error(msgspec.Struct, forbid_unknown_fields=True):
    """Every error, everywhere."""

    status_code: Annotated[int, msgspec.Meta(description="The HTTP status, repeated.")]
    code: Annotated[str, msgspec.Meta(description="A machine-readable code, e.g. invalid_input.")]
    detail: Annotated[str, msgspec.Meta(description="A sentence a person understands.")]
    field: Annotated[str, msgspec.Meta(description="The request field at fault, when there is one.")] | UnsetType = (
        UNSET
    )
    index: Annotated[int, msgspec.Meta(description="The batch item at fault, when there is one.")] | UnsetType = UNSET
    errors: list[BatchItemError] | UnsetType = UNSET  # every bad item of a batch


@dataclass(frozen=True)
class ErrorStatus:
    name: str  # of the component response
    description: str


ERRORS: dict[int, ErrorStatus] = {
    400: ErrorStatus(
        "BadRequest",
        "The body, a query or a path parameter is not valid (`field` names the first bad field), or the body is "
        "not JSON at all (`invalid_json`).",
    ),
    401: ErrorStatus(
        "Unauthorized", "The credential is missing, unknown, expired or revoked (checked before the body)."
    ),
    403: ErrorStatus(
        "Forbidden",
        "The credential may not do this: CSRF token missing or wrong, another device's id, "
        "operator only, API-only accounts pair no phones, or signup is closed.",
    ),
    404: ErrorStatus("NotFound", "No such object for this credential (another account's ids are not found either)."),
    405: ErrorStatus("MethodNotAllowed", "The path exists but not with this method."),
    409: ErrorStatus(
        "Conflict",
        "The request conflicts with the current state: email taken, a status change the message's "
        "state does not allow, or an Idempotency-Key reused with another body.",
    ),
    413: ErrorStatus("PayloadTooLarge", "The body is larger than the endpoint accepts."),
    415: ErrorStatus("UnsupportedMediaType", "The body is not sent as Content-Type: application/json."),
    429: ErrorStatus(
        "TooManyRequests", "A rate limit or the account's daily quota was reached: retry after `Retry-After` seconds."
    ),
    503: ErrorStatus(
        "ServiceUnavailable",
        "The message store is unreachable or too slow (`unavailable`), refusing (`store_full`, `store_read_only`, "
        "`store_loading`, `store_busy`), did not copy a change to its replicas in time (`store_not_replicated`: "
        "the change was made; a send retried with its `Idempotency-Key` is not queued twice), or the server is "
        "not ready: retry after `Retry-After` seconds.",
    ),
}

# The error statuses, in named sets a route combines.
BODY = (400, 413, 415)  # a JSON body: not valid, too large, not JSON
PARAMETERS = (400,)  # a query or path parameter
NOT_FOUND = (404,)  # an id in the path or the body that names nothing of this credential
CONFLICT = (409,)  # the object's state, a reused Idempotency-Key, a taken name
FORBIDDEN = (403,)  # operator only, API-only accounts, signup closed
LIMITED = (429,)  # a rate limit or the daily quota
STORE = (503,)  # the message store (Redis) unreachable or refusing
PUBLIC = (*LIMITED, *STORE)  # signup, login, register: limited per client address
DEVICE = (401, *LIMITED, *STORE)  # a device token
ANOTHER_DEVICE = (403,)  # a device token on another device's path
SESSION = (401, *LIMITED, *STORE)  # the dashboard session, reading
SESSION_CSRF = (401, 403, *LIMITED, *STORE)  # the dashboard session, changing (403: CSRF)
API_KEY = (401, *LIMITED, *STORE)  # the send-only API key in the body

# The security requirement of each credential (the API key is a body property instead).
DEVICE_TOKEN: list[dict[str, list[str]]] = [{"deviceToken": []}, {"deviceBearer": []}]
SESSION_COOKIE_ONLY: list[dict[str, list[str]]] = [{"session": []}]
SESSION_AND_CSRF: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]

API_KEY_DESCRIPTION = (
    "The send-only API key (from POST /api/api-keys/), sent in the JSON body as `api_key`. "
    "It authenticates the request: a missing, unknown or revoked key is 401, whatever else the "
    "body holds, and so is JSON that is not an object holding one; a body that is not JSON at all is 400 "
    "`invalid_json`."
)


def documented(*statuses: Iterable[int], security: list[dict[str, list[str]]] | None = None) -> dict[str, Any]:
    """A route's OpenAPI declaration: the error statuses it answers (named sets above,
    each an ``Error``) and its credential's security requirement."""
    codes = sorted({status for group in statuses for status in group})
    unknown = [status for status in codes if status not in ERRORS]
    if unknown:
        raise ValueError(f"no error response is declared for {unknown}")
    return {
        "responses": {
            status: ResponseSpec(data_container=Error, description=ERRORS[status].description, generate_examples=False)
            for status in codes
        },
        "security": security,
        "operation_class": DocumentedOperation,
    }


@dataclass
class DocumentedOperation(Operation):
    """An operation as the shared components describe it: each error status is the
    component response of that status (with its headers), a 204 has no body, and a body
    the handler defaults is optional."""

    def __post_init__(self) -> None:
        for status, response in list((self.responses or {}).items()):
            error = ERRORS.get(int(status))
            if error is not None:
                self.responses[status] = Reference(ref=f"#/components/responses/{error.name}")  # type: ignore[index]
            elif status == "204" and isinstance(response, OpenAPIResponse):
                response.content = None
        body = self.request_body
        if body is not None and not isinstance(body, Reference):
            media = (body.content or {}).get(JSON)
            schema = media.schema if media else None
            if isinstance(schema, Schema) and any(
                isinstance(s, Schema) and s.type == OpenAPIType.NULL for s in schema.one_of or []
            ):
                body.required = False


class ClosedStructs(OpenAPISchemaPlugin):
    """A request Struct declared with ``forbid_unknown_fields`` is refused with any other
    property, so its schema says ``additionalProperties: false``, and with an
    ``openapi_any_of`` class variable it says which of its optional properties must be
    there (one of them at least); the schema itself is Litestar's own."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return (
            not field_definition.is_union
            and field_definition.is_subclass_of(msgspec.Struct)
            and field_definition.type_.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        litestar_own = next(
            plugin
            for plugin in schema_creator.plugins
            if plugin is not self and schema_creator.plugin_supports_field(plugin, field_definition)
        )
        schema: Schema = litestar_own.to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        schema.any_of = getattr(field_definition.type_, "openapi_any_of", None)
        return schema


def _error_response(status: int, error: ErrorStatus) -> OpenAPIResponse:
    pinned = Schema(
        all_of=[
            Reference(ref="#/components/schemas/Error"),
            Schema(type=OpenAPIType.OBJECT, properties={"status_code": Schema(type=OpenAPIType.INTEGER, const=status)}),
        ]
    )
    seconds = Schema(type=OpenAPIType.INTEGER)
    headers: dict[str, OpenAPIHeader | Reference] | None = None
    if status in (429, 503):
        headers = {
            "Retry-After": OpenAPIHeader(schema=seconds, required=True, description="Seconds to wait before retrying.")
        }
    if status == 429:
        headers = {
            **(headers or {}),
            "RateLimit-Limit": OpenAPIHeader(
                schema=seconds, description="On a rate limit: the requests (or messages) of a full burst."
            ),
            "RateLimit-Remaining": OpenAPIHeader(
                schema=seconds, description="On a rate limit: what is left of the burst now."
            ),
            "RateLimit-Reset": OpenAPIHeader(
                schema=seconds, description="On a rate limit: seconds until the burst is whole again."
            ),
        }
    return OpenAPIResponse(description=error.description, headers=headers, content={JSON: OpenAPIMediaType(pinned)})


SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
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
        name=CSRF_HEADER,
        security_scheme_in="header",
        description="On unsafe methods (POST, PUT, PATCH, DELETE) with a session: the "
        "`csrftoken` cookie echoed in this header.",
    ),
}


class ServedOpenAPI(OpenAPI):
    """The document with every ``/api/`` path as it is served and called: ``.../``."""

    def to_schema(self) -> dict[str, Any]:
        schema = super().to_schema()
        schema["paths"] = {
            path + "/" if path.startswith("/api/") and not path.endswith("/") else path: item
            for path, item in schema.get("paths", {}).items()
        }
        return schema


class ServedOpenAPIConfig(OpenAPIConfig):
    def to_openapi_schema(self) -> OpenAPI:
        plain = super().to_openapi_schema()
        return ServedOpenAPI(**{name: getattr(plain, name) for name in plain.__dataclass_fields__})


def openapi_config(version: str) -> OpenAPIConfig:
    return ServedOpenAPIConfig(
        title="Connecfy",
        version=version,
        description=DESCRIPTION,
        path="/schema",
        components=Components(
            responses={error.name: _error_response(status, error) for status, error in ERRORS.items()},
            security_schemes=SECURITY_SCHEMES,
        ),
    )
