"""What a request's fields may hold, declared once: the types of the request Structs and
parameters, with the limits the broker checks (``broker.validation`` and the services),
so the OpenAPI document shows each limit. Most are checked here too, so a request past
one is refused with a 400 before it reaches Redis; those the broker checks itself with a
better answer (the field named, every bad item of a batch named, the webhook address
explained) are only described (:func:`checked_by_the_broker`).

Patterns say the same thing in Python's ``re`` (the server) and in the document's
ECMA-262 dialect (its readers): a name holds at least one character that both count as
visible (``str.strip`` takes away ``\\x1c``-``\\x1f`` and ``\\x85`` too, ECMA-262's
``\\s`` takes away ``\\ufeff`` too), and ids and cursors are ASCII letters and digits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import HeaderParameter, Parameter

from api.errors import ApiError
from broker.accounts import MAX_EMAIL_CHARS
from broker.devices import MAX_SEGMENTS_BUDGET
from broker.ids import MAX_ID_CHARS
from broker.message_log import MAX_PAGE
from broker.messages import MAX_IDEMPOTENCY_KEY_CHARS
from broker.records import STATUSES
from broker.validation import (
    E164,
    MAX_CLAIM_LIMIT,
    MAX_ERROR_CHARS,
    MAX_FIELD_CHARS,
    MAX_LIMIT,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_NOTE_CHARS,
)
from broker.webhooks.addresses import MAX_URL
from broker.webhooks.events import EVENT_TYPES

VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"
PLAIN_ID = r"^[A-Za-z0-9]+$"


def not_json(exc: Exception) -> ApiError:
    """The 400 for a body sent as JSON that does not parse as JSON."""
    return ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}")


def not_sent_as_json() -> ApiError:
    """The 415 for a body sent with another ``Content-Type``."""
    return ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")


def checked_by_the_broker(description: str | None = None, **schema: Any) -> msgspec.Meta:
    """Constraints (``Schema`` attributes) the broker checks with the same bounds: shown
    in the document, not checked again here."""
    return msgspec.Meta(extra_json_schema={"description": description, "extra": schema})


# Body fields ---------------------------------------------------------------------------------

PhoneNumber = Annotated[
    str,
    checked_by_the_broker(
        "E.164: `+`, the country code and the number, digits only, at most 15 digits "
        "(e.g. +15551234567); the number must also be possible for its country.",
        pattern=E164,
    ),
]
MessageText = Annotated[str, checked_by_the_broker(min_length=1, max_length=MAX_MESSAGE_CHARS)]
Name = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_NAME_CHARS,
        pattern=VISIBLE,
        description=f"Up to {MAX_NAME_CHARS} characters, at least one visible; spaces around it are dropped.",
    ),
]
BodyId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Email = Annotated[str, checked_by_the_broker(max_length=MAX_EMAIL_CHARS, pattern="@")]
VersionText = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_CHARS)]
# Litestar leaves a bound of 0 out of the document (it skips falsy values): it is given again.
Battery = Annotated[int, msgspec.Meta(ge=0, le=100, extra_json_schema={"extra": {"minimum": 0}})]
ErrorText = Annotated[str, msgspec.Meta(max_length=MAX_ERROR_CHARS)]
NoteText = Annotated[str, msgspec.Meta(max_length=MAX_NOTE_CHARS)]
ReasonText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NOTE_CHARS)]
SegmentBudget = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEGMENTS_BUDGET)]
LimitValue = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
WebhookUrl = Annotated[
    str,
    checked_by_the_broker(
        "An https:// URL whose host resolves to public addresses only.", min_length=1, max_length=MAX_URL
    ),
]
EventTypes = Annotated[
    list[str],
    checked_by_the_broker(
        "The message event types to deliver; all when left out.",
        items=Schema(type=OpenAPIType.STRING, enum=list(EVENT_TYPES)),
        min_items=1,
    ),
]
MessageStatus = Literal[STATUSES]  # type: ignore[valid-type]

# Parameters ----------------------------------------------------------------------------------

PathId = Annotated[str, Parameter(min_length=1, max_length=MAX_ID_CHARS)]
ClaimLimit = Annotated[int, Parameter(ge=1, le=MAX_CLAIM_LIMIT)]
PageLimit = Annotated[int, Parameter(ge=1, le=MAX_PAGE)]
Cursor = Annotated[
    str | None,
    Parameter(min_length=1, max_length=MAX_ID_CHARS, pattern=PLAIN_ID, description="`next_cursor` of a page."),
]
QueryId = Annotated[str | None, Parameter(min_length=1, max_length=MAX_ID_CHARS)]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        description="Makes a retry safe: the same key with the same body within 24 h returns the first answer "
        "and queues nothing; with another body it is 409 idempotency_key_reused.",
    ),
]
