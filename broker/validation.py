"""Checks of what people and phones send, each raising InvalidInput naming the field,
and the size limits they enforce (one source for each)."""

from __future__ import annotations

import re

import phonenumbers

from broker import errors

MAX_MESSAGE_CHARS = 1_600
"""A message's text: 1 to this many characters."""
MAX_FIELD_CHARS = 32
"""A phone's reported versions (Android, app)."""
MAX_ERROR_CHARS = 200
"""A failure's error text, as a phone reports it."""
MAX_NAME_CHARS = 64
"""A device's or an API key's name."""
MAX_NOTE_CHARS = 1_000
"""The operator's note on a limit request."""
MAX_LIMIT = 10_000_000
"""The largest rate or quota an operator may set."""
MAX_CLAIM_LIMIT = 100
"""The most messages one claim hands a phone (``?limit=``), as the API documents it; the
``claim_max_limit`` setting may lower it, not raise it."""
MAX_BATCH_MESSAGES = 1_000
"""The most messages one send takes (the batch endpoint), as the API documents it; the
``batch_max_messages`` setting may lower it, not raise it."""

E164 = r"^\+[1-9][0-9]{1,14}$"
"""E.164 as a pattern: ``+``, a country code and the number, at most 15 digits."""
_E164 = re.compile(E164)
SENDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._&'-]{0,14}")
"""Who a received SMS may come from when not a number: an alphanumeric sender name."""


def check_text(value: object, field: str, *, min_chars: int = 0, max_chars: int) -> str:
    """A string of ``min_chars`` to ``max_chars`` characters that encodes as UTF-8, or InvalidInput."""
    if not isinstance(value, str) or not min_chars <= len(value) <= max_chars:
        raise errors.InvalidInput(f"'{field}' must be {min_chars} to {max_chars} characters", field=field)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise errors.InvalidInput(f"'{field}' is not valid text", field=field) from None
    return value


def check_name(value: object, field: str) -> str:
    """A name a person typed: surrounding spaces dropped, then 1 to MAX_NAME_CHARS characters."""
    if isinstance(value, str):
        value = value.strip()
    return check_text(value, field, min_chars=1, max_chars=MAX_NAME_CHARS)


def check_whole_number(value: object, field: str, *, low: int, high: int) -> int:
    """A whole number (not a bool) from ``low`` to ``high``, or InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


def normalize_phone_number(number: object, field: str = "to") -> str:
    """Return ``number`` if it is E.164, or raise InvalidInput.

    E.164 means ``+``, a country code and the number, digits only (no spaces, letters or
    extensions), at most 15 digits; ``phonenumbers`` then checks that the country code
    exists and the length is possible for it. Whether the number is allocated is not
    checked: the carrier decides that, and the API doc's own +1555... examples must work.
    """
    if not isinstance(number, str) or not _E164.fullmatch(number):
        raise errors.InvalidInput(f"'{field}' must be an E.164 number such as +15551234567", field=field)
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise errors.InvalidInput(f"'{field}' is not a phone number", field=field) from None
    if not phonenumbers.is_possible_number(parsed):
        raise errors.InvalidInput(f"'{field}' is not a possible phone number for its country", field=field)
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def check_sender(sender: object, field: str = "from") -> str:
    """A number (E.164, normalised) or an alphanumeric sender name of 1 to 15 characters:
    whom a received SMS came from."""
    if isinstance(sender, str) and sender.startswith("+"):
        return normalize_phone_number(sender, field)
    if not isinstance(sender, str) or not SENDER_NAME.fullmatch(sender):
        raise errors.InvalidInput(
            f"{field} must be a number in E.164 or a sender name of 1 to 15 letters, digits and spaces", field=field
        )
    return sender


COUNTRY_CODES = tuple(sorted(phonenumbers.SUPPORTED_REGIONS))
"""The ISO 3166 codes ``phonenumbers`` reads national numbers of."""


def check_country(value: object, field: str = "default_country") -> str:
    """An ISO 3166 two-letter country code that ``phonenumbers`` knows (any case), upper-cased."""
    code = value.strip().upper() if isinstance(value, str) else ""
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise errors.InvalidInput(f"{field} must be a two-letter country code such as US or DE", field=field)
    return code
