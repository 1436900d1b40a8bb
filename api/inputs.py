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
Where the broker judges a value by more than a pattern can say (a phone number possible
for its country, a webhook URL), the pattern is a part of what the broker takes: every
value it matches is taken as written (tests/app checks that), so a client that follows
the document is not refused for the form of the value. A webhook host is still judged by
the addresses it resolves to, which no pattern can tell.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import phonenumbers
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import HeaderParameter, Parameter
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from broker.accounts import MAX_EMAIL_CHARS
from broker.clock import ISO_MOMENT
from broker.devices import MAX_SEGMENTS_BUDGET
from broker.envelopes import MAX_ENVELOPE_CHARS, MIN_ENVELOPE_CHARS
from broker.ids import MAX_ID_CHARS
from broker.long_poll import MAX_WAIT_SECONDS
from broker.message_log import MAX_PAGE
from broker.messages import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_REPORTED_SEGMENTS,
    MAX_SIM_SLOTS,
    MAX_VALID_FOR_S,
    MIN_VALID_FOR_S,
)
from broker.records import STATUSES
from broker.validation import (
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


def _possible_numbers() -> str:
    """What follows the ``+`` of an E.164 number the broker takes
    (``broker.validation.normalize_phone_number``): a country code and a national number
    of a length ``phonenumbers`` counts possible for it (it checks the length only), at
    most 15 digits in all. Country codes with the same lengths are listed together."""
    codes_by_lengths: dict[tuple[int, ...], list[str]] = {}
    for code in sorted(COUNTRY_CODE_TO_REGION_CODE):
        digits = str(code)
        lengths = tuple(
            n
            for n in range(2, 16 - len(digits))
            if phonenumbers.is_possible_number(
                phonenumbers.PhoneNumber(country_code=code, national_number=int("5" * n))
            )
        )
        if lengths:
            codes_by_lengths.setdefault(lengths, []).append(digits)
    alternatives = []
    for lengths, codes in codes_by_lengths.items():
        runs: list[list[int]] = []
        for n in lengths:
            if runs and runs[-1][1] == n - 1:
                runs[-1][1] = n
            else:
                runs.append([n, n])
        numbers = "|".join(f"[0-9]{{{low}}}" if low == high else f"[0-9]{{{low},{high}}}" for low, high in runs)
        alternatives.append(f"(?:{'|'.join(codes)})" + (f"(?:{numbers})" if len(runs) > 1 else numbers))
    return "(?:" + "|".join(alternatives) + ")"


POSSIBLE_NUMBER = _possible_numbers()
E164_POSSIBLE = rf"^\+{POSSIBLE_NUMBER}$"

# An https:// URL the broker takes as written (``broker.webhooks.addresses.parse_url``):
# a host name of up to four labels of letters, digits and single hyphens, each at most 62
# characters, the last beginning with a letter (a last label of digits would be read as
# an IPv4 address); a port from 1 to 65535; a path (at least "/") and a query of URL
# characters. The path is required because the URL is stored with "/" for an empty one
# and the stored form must fit MAX_URL too: with it, the longest URL allowed is the
# longest taken.
_LABEL = "[A-Za-z0-9]{1,20}(?:-[A-Za-z0-9]{1,20}){0,2}"
_LAST_LABEL = "[A-Za-z][A-Za-z0-9]{0,19}(?:-[A-Za-z0-9]{1,20}){0,2}"
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_URL_CHARACTER = "[A-Za-z0-9._~!$&'()*+,;=:@%/-]"
WEBHOOK_URL_PATTERN = (
    rf"^https://(?:{_LABEL}\.){{0,3}}{_LAST_LABEL}(?::{_PORT})?/{_URL_CHARACTER}*(?:\?{_URL_CHARACTER}*)?$"
)


def checked_by_the_broker(description: str | None = None, **schema: Any) -> msgspec.Meta:
    """Constraints (``Schema`` attributes) the broker checks with the same bounds (or, for
    a pattern, a part of what it takes: see above): shown in the document, not checked
    again here."""
    return msgspec.Meta(extra_json_schema={"description": description, "extra": schema})


# Body fields ---------------------------------------------------------------------------------

PHONE_NUMBER = (
    "E.164: `+`, the country code and the number, digits only, at most 15 digits "
    "(e.g. +15551234567), of a length possible for its country code (the pattern lists the "
    "lengths of each country code)."
)
PhoneNumber = Annotated[str, checked_by_the_broker(PHONE_NUMBER, pattern=E164_POSSIBLE)]
OptionalPhoneNumber = Annotated[
    str,
    checked_by_the_broker(PHONE_NUMBER + " Empty: no number.", pattern=rf"^(?:\+{POSSIBLE_NUMBER})?$"),
]
MessageText = Annotated[
    str,
    checked_by_the_broker(
        f"The text: 1 to {MAX_MESSAGE_CHARS} characters. With `encrypted`, the end-to-end envelope "
        f"`v1:<base64(salt16 ‖ nonce12 ‖ ciphertext ‖ tag16)>` instead ({MIN_ENVELOPE_CHARS} to "
        f"{MAX_ENVELOPE_CHARS} characters).",
        min_length=1,
        max_length=MAX_ENVELOPE_CHARS,
    ),
]
Encrypted = Annotated[
    bool,
    msgspec.Meta(
        description="`message` is an end-to-end envelope that only the account's phones can decrypt (self-managed "
        "accounts; API-only accounts get 400). Budgets are charged the most segments its plaintext's size allows."
    ),
]
SendAt = Annotated[
    str,
    checked_by_the_broker(
        "When to send it: ISO-8601 with seconds and a time zone (e.g. 2026-12-24T09:00:00+01:00), at most 30 days "
        "ahead; until then the message is `scheduled`. A past time means now.",
        pattern=ISO_MOMENT.pattern,
    ),
]
ValidFor = Annotated[
    int,
    checked_by_the_broker(
        "Seconds the message stays valid once due: if no phone took it by then, it expires. Default: the message TTL.",
        minimum=MIN_VALID_FOR_S,
        maximum=MAX_VALID_FOR_S,
    ),
]
Priority = Annotated[
    str,
    checked_by_the_broker(
        "`normal` (the default) or `high`: high messages are claimed before normal ones of the same device "
        "queue, and of the same sender in a pool (senders still take turns).",
        enum=["normal", "high"],
    ),
]
SendSimSlot = Annotated[
    int,
    checked_by_the_broker(
        "The SIM to send it from (1 to 4), for a message to one device (with device_id).",
        minimum=1,
        maximum=MAX_SIM_SLOTS,
    ),
]
SentSimSlot = Annotated[
    int,
    checked_by_the_broker(
        "With sent: the SIM slot (1 to 4) that sent it, shown as the message's sim_slot from then on. "
        "Nothing with delivered or failed.",
        minimum=1,
        maximum=MAX_SIM_SLOTS,
    ),
]
SentSegments = Annotated[
    int,
    checked_by_the_broker(
        "With sent, for an end-to-end encrypted message: the segments it took, counted by the phone from the "
        "decrypted text; kept as the message's segments in place of the upper bound the server charged. "
        "Ignored for a plain message (the server counted it) and with delivered or failed.",
        minimum=1,
        maximum=MAX_REPORTED_SEGMENTS,
    ),
]
Name = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_NAME_CHARS,
        pattern=VISIBLE,
        description=f"Up to {MAX_NAME_CHARS} characters, at least one visible; spaces around it are dropped.",
    ),
]
# Which device sends depends on the account, which no schema can say: the rule, in words.
DashboardSendDevice = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="The device that sends it. Self-managed accounts must name one of theirs (400 "
        "`device_id_required` without it); API-only accounts send through the platform pool and must leave "
        "it out (400 `device_id_not_allowed`). A device the account does not have is 404.",
    ),
]
ExternalSendDevice = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="A self-managed account may name one of its devices; without one the message goes to the "
        "account's own pool. API-only accounts send through the platform pool and must leave it out (400). "
        "A device the account does not have is 404 (in a batch, naming the items; a 400 when other items are "
        "bad too).",
    ),
]
Email = Annotated[str, checked_by_the_broker(max_length=MAX_EMAIL_CHARS, pattern="@")]
VersionText = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_CHARS)]
# Litestar leaves a bound of 0 out of the document (it skips falsy values): it is given again.
Battery = Annotated[int, msgspec.Meta(ge=0, le=100, extra_json_schema={"extra": {"minimum": 0}})]
ErrorText = Annotated[str, msgspec.Meta(max_length=MAX_ERROR_CHARS)]
NoteText = Annotated[str, msgspec.Meta(max_length=MAX_NOTE_CHARS)]
ReasonText = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_NOTE_CHARS,
        pattern=VISIBLE,
        description=f"Up to {MAX_NOTE_CHARS} characters, at least one visible; spaces around it are dropped.",
    ),
]
SegmentBudget = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEGMENTS_BUDGET)]
LimitValue = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
WebhookUrl = Annotated[
    str,
    checked_by_the_broker(
        "An https:// URL with a path (at least `/`), whose host resolves to public addresses only (a name "
        "that does not resolve yet is taken, and checked again at each delivery).",
        pattern=WEBHOOK_URL_PATTERN,
        max_length=MAX_URL,
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

MAX_BODY = 64 * 1024  # bytes of a request body (413 past it)

PathId = Annotated[str, Parameter(min_length=1, max_length=MAX_ID_CHARS)]
ClaimLimit = Annotated[
    int | None,
    Parameter(
        ge=1,
        le=MAX_CLAIM_LIMIT,
        description="Most messages to claim; default: the server's CONNECFY_CLAIM_DEFAULT_LIMIT (10 unless set).",
    ),
]
WaitSeconds = Annotated[
    int,
    Parameter(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for work when there is none now (a long poll); 0, the default, answers at once.",
    ),
]
PageLimit = Annotated[int, Parameter(ge=1, le=MAX_PAGE)]
Cursor = Annotated[
    str | None,
    Parameter(min_length=1, max_length=MAX_ID_CHARS, pattern=PLAIN_ID, description="`next_cursor` of a page."),
]
QueryId = Annotated[str | None, Parameter(min_length=1, max_length=MAX_ID_CHARS)]
QueryMoment = Annotated[
    str | None,
    Parameter(
        pattern=ISO_MOMENT.pattern,
        description="ISO-8601 with seconds and a time zone (e.g. 2026-12-24T00:00:00Z; URL-encode a `+` offset as "
        "`%2B`): the messages made (accepted, or received) then or later for `since`, then or earlier for `until`.",
    ),
]
MessageDirection = Annotated[
    Literal["outbound", "inbound"] | None,
    Parameter(description="`outbound`: what the account sent; `inbound`: the SMS its phones received for it."),
]
# The pattern is described, not checked here: the broker checks the number and names the
# field, rather than quoting the pattern back.
ConversationPhone = Annotated[
    str | None,
    Parameter(
        description="A conversation: the messages sent to this number and those received from it. "
        + PHONE_NUMBER
        + " URL-encode the `+` as `%2B` (a bare `+` in a query reads as a space).",
        schema_extra={"pattern": E164_POSSIBLE, "minLength": 3, "maxLength": 16},
    ),
]
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
