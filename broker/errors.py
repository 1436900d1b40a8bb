"""Domain errors raised by the broker. Callers never see a Redis error string.

Each error carries a stable machine ``code``; scripts reply ``CODE detail`` and
:func:`from_script_reply` turns that reply into the matching exception.
"""

from __future__ import annotations


class BrokerError(Exception):
    code = "broker_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip()


class InvalidInput(BrokerError):
    """The request is malformed."""

    code = "invalid_input"

    def __init__(self, detail: str, *, field: str = "", index: int | None = None) -> None:
        super().__init__(detail)
        self.field = field
        self.index = index


class AccountNotFound(BrokerError):
    """No such account."""

    code = "account_not_found"


class EmailTaken(BrokerError):
    """An account with this email exists already."""

    code = "email_taken"


class DeviceNotFound(BrokerError):
    """No such device: it was removed, or never paired."""

    code = "device_not_found"

    def __init__(self, detail: str = "", *, index: int | None = None) -> None:
        super().__init__(detail)
        self.index = index


class ApiKeyNotFound(BrokerError):
    """No such API key for this account."""

    code = "api_key_not_found"


class MessageNotFound(BrokerError):
    """No such message for this caller."""

    code = "message_not_found"


class InvalidTransition(BrokerError):
    """The message cannot move to that status from the one it has."""

    code = "invalid_transition"

    def __init__(self, current: str, requested: str) -> None:
        super().__init__(f"the message is {current} and cannot become {requested}")
        self.current = current
        self.requested = requested


class QuotaExceeded(BrokerError):
    """The account's daily message quota is used up."""

    code = "quota_exceeded"

    def __init__(self, used: int, quota: int) -> None:
        super().__init__(f"daily quota of {quota} messages reached ({used} used today)")
        self.used = used
        self.quota = quota


class IdempotencyKeyReused(BrokerError):
    """The Idempotency-Key was used before for a different request."""

    code = "idempotency_key_reused"


class PairingCodeInvalid(BrokerError):
    """The pairing code is unknown, expired or already used."""

    code = "pairing_code_invalid"


class RoutingError(InvalidInput):
    """The message names a device where the account's routing forbids it, or omits one."""

    code = "routing_error"


class RateLimited(BrokerError):
    """Too many requests: try again after ``decision.retry_after_ms``."""

    code = "rate_limited"

    def __init__(self, decision: object) -> None:
        super().__init__("rate limit exceeded")
        self.decision = decision


def from_script_reply(message: str) -> BrokerError | None:
    """Map a script's ``CODE detail`` error reply to its domain error, if it is one."""
    code, _, detail = message.partition(" ")
    if code == "DEVICE_NOT_FOUND":
        index = int(detail) if detail.isdigit() else None
        return DeviceNotFound(
            "no such device" if index is None else f"message {index}: no such device",
            index=index,
        )
    if code == "MESSAGE_NOT_FOUND":
        return MessageNotFound(f"no such message: {detail}")
    if code == "INVALID_TRANSITION":
        current, _, requested = detail.partition(" ")
        return InvalidTransition(current, requested)
    if code == "QUOTA_EXCEEDED":
        used, _, quota = detail.partition(" ")
        return QuotaExceeded(int(used), int(quota))
    if code == "IDEMPOTENCY_KEY_REUSED":
        return IdempotencyKeyReused(detail)
    if code == "PAIRING_CODE_INVALID":
        return PairingCodeInvalid(detail)
    if code == "BAD_REQUEST":
        return InvalidInput(detail)
    return None
