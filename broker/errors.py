"""Domain errors raised by the broker. Callers never see a Redis error string.

Each error carries a stable machine ``code``; scripts reply ``CODE detail`` and
:func:`from_script_reply` turns that reply into the matching exception.
"""

from __future__ import annotations

from broker.records import RateDecision


class BrokerError(Exception):
    code = "broker_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip()


class InvalidInput(BrokerError):
    """The request is malformed."""

    code = "invalid_input"

    def __init__(
        self, detail: str, *, field: str = "", index: int | None = None, problems: list[Problem] | None = None
    ) -> None:
        super().__init__(detail)
        self.field = field
        self.index = index
        self.problems = problems or []


class Problem:
    """One bad item of a batch: its index, the field, what is wrong, and the error it
    raised alone."""

    __slots__ = ("detail", "field", "index", "kind")

    def __init__(self, index: int, field: str, detail: str, kind: type[InvalidInput] = InvalidInput) -> None:
        self.index = index
        self.field = field
        self.detail = detail
        self.kind = kind


class RecipientOptedOut(InvalidInput):
    """The recipient is on the sender's suppression list (replied STOP, or was added)."""

    code = "recipient_opted_out"


class NotSuppressed(BrokerError):
    """This number is not on the suppression list."""

    code = "not_suppressed"


class AlreadySuppressed(BrokerError):
    """This number is on the suppression list already."""

    code = "already_suppressed"


class AccountNotFound(BrokerError):
    """No such account."""

    code = "account_not_found"


class EmailTaken(BrokerError):
    """An account with this email exists already."""

    code = "email_taken"


class DeviceNotFound(BrokerError):
    """No such device: it was removed, or never paired."""

    code = "device_not_found"

    def __init__(self, detail: str = "", *, index: int | None = None, indexes: list[int] | None = None) -> None:
        super().__init__(detail)
        self.index = index
        self.indexes = indexes or ([] if index is None else [index])


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


class StaleCredentials(BrokerError):
    """The account's credentials epoch moved since its API key was admitted (a key was
    revoked or its limits changed): nothing was queued; check the key again."""

    code = "stale_credentials"


class RateLimited(BrokerError):
    """Too many requests: try again after ``decision.retry_after_ms``."""

    code = "rate_limited"

    def __init__(self, decision: RateDecision, what: str = "requests") -> None:
        seconds = -(-decision.retry_after_ms // 1000)
        super().__init__(f"too many {what}: the limit allows {decision.limit} at once; try again in {seconds} s")
        self.decision = decision


class WebhookNotFound(BrokerError):
    """No such webhook endpoint for this account."""

    code = "webhook_not_found"


class WebhookLimitReached(BrokerError):
    """This account has as many webhook endpoints as it may."""

    code = "webhook_limit_reached"


class WebhookEventNotFound(BrokerError):
    """No such event in this endpoint's recent deliveries."""

    code = "webhook_event_not_found"


class WebhookDisabled(BrokerError):
    """This webhook endpoint is disabled; enable it first."""

    code = "webhook_disabled"


class LimitRequestNotFound(BrokerError):
    """No such limit request."""

    code = "limit_request_not_found"


class LimitRequestPending(BrokerError):
    """This account has a request for higher limits waiting for the operator already."""

    code = "limit_request_pending"


class LimitRequestDecided(BrokerError):
    """This request was approved or rejected already."""

    code = "limit_request_decided"


class CampaignNotFound(BrokerError):
    """No such campaign for this account."""

    code = "campaign_not_found"


class CampaignStateConflict(BrokerError):
    """The campaign's state does not allow that."""

    code = "invalid_campaign_state"

    def __init__(self, current: str, action: str) -> None:
        super().__init__(f"the campaign is {current}: it cannot be {action}")
        self.current = current


class LockLost(BrokerError):
    """A background job's lock is another holder's now (its lease lapsed): stop."""

    code = "lock_lost"

    def __init__(self, lock: str) -> None:
        super().__init__(f"the lock {lock} is held by another holder now")
        self.lock = lock


OPTED_OUT = "the recipient opted out (replied STOP) or was added to the suppression list"


def opted_out_problems(indexes: list[int]) -> list[Problem]:
    """Messages ``indexes`` of a send go to suppressed numbers: one item error each."""
    return [Problem(i, "to", OPTED_OUT, RecipientOptedOut) for i in indexes]


def opted_out(indexes: list[int]) -> RecipientOptedOut:
    """The error for messages ``indexes`` of a send going to suppressed numbers."""
    detail = OPTED_OUT
    problems = opted_out_problems(indexes)
    if len(indexes) == 1:
        return RecipientOptedOut(f"message {indexes[0]}: {detail}", field="to", index=indexes[0], problems=problems)
    named = ", ".join(str(i) for i in indexes[:20]) + (", ..." if len(indexes) > 20 else "")
    return RecipientOptedOut(
        f"{len(indexes)} messages go to numbers that opted out (messages {named}); nothing was queued",
        field="to",
        problems=problems,
    )


def from_script_reply(message: str) -> BrokerError | None:
    """Map a script's ``CODE detail`` error reply to its domain error, if it is one."""
    code, _, detail = message.partition(" ")
    if code == "DEVICE_NOT_FOUND":
        indexes = [int(i) for i in detail.split(",")] if detail and all(i.isdigit() for i in detail.split(",")) else []
        if not indexes:
            return DeviceNotFound("no such device")
        named = ", ".join(str(i) for i in indexes)
        return DeviceNotFound(f"message {named}: no such device", index=indexes[0], indexes=indexes)
    if code == "RECIPIENT_OPTED_OUT":
        indexes = [int(i) for i in detail.split(",")]
        return opted_out(indexes)
    if code == "RATE_LIMITED":
        retry_after, remaining, reset, burst = (int(float(x)) for x in detail.split())
        return RateLimited(RateDecision(False, burst, remaining, retry_after, reset))
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
    if code == "CAMPAIGN_NOT_FOUND":
        return CampaignNotFound()
    if code == "CAMPAIGN_STATE":
        return CampaignStateConflict(detail, "changed so")
    if code == "BAD_REQUEST":
        return InvalidInput(detail)
    if code == "STALE_CREDENTIALS":
        return StaleCredentials(detail)
    return None
