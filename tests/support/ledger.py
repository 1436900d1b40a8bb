"""What a fault test promises about messages, kept while the faults happen.

:class:`Ledger` records every message the server accepted (answered 202: its id is a
promise) and every message a phone received from a claim. At the end,
:meth:`Ledger.check` asserts the two promises a fault must not break: every accepted
message ends finished (sent, delivered, failed, expired or cancelled, read back with
``GET /api/sms/<id>/``), and no message was handed to a phone twice.

A send whose answer never came (the connection was cut) is not a promise: the message
may or may not be queued, and if it is, the phone claims it like any other (it counts
for the twice-claimed check, not for the finished one). A claim whose answer was lost
leaves its messages leased to nobody until the lease runs out; the sweep then queues
them again, and the phone gets them once. :func:`drain` is the phone's side: claim,
report each message sent, retry what did not get through, until every accepted message
is finished.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from broker.history import FINISHED
from tests.support.e2e_server import Api, describe
from tests.support.http_world import Phone


class Ledger:
    def __init__(self) -> None:
        self.accepted: dict[str, Api] = {}  # message id -> a client of its account, to read it back
        self.claims: Counter[str] = Counter()  # message id -> times a phone received it
        self.unanswered_sends = 0
        self.seen_finished: set[str] = set()  # finished is for good: no need to read these again

    def sent(self, response: httpx.Response | None, reader: Api) -> list[str]:
        """Record a send's answer (None: no answer came); the ids it accepted."""
        if response is None:
            self.unanswered_sends += 1
            return []
        if response.status_code != 202:
            return []
        body = response.json()
        ids = [body["id"]] if "id" in body else [m["id"] for m in body["messages"]]
        for message_id in ids:
            assert message_id not in self.accepted, f"{message_id} accepted twice: {describe(response)}"
            self.accepted[message_id] = reader
        return ids

    def claimed(self, tasks: list[dict[str, Any]]) -> None:
        """Record the messages one claim handed to a phone."""
        self.claims.update(task["id"] for task in tasks)

    def claimed_twice(self) -> dict[str, int]:
        return {message_id: n for message_id, n in self.claims.items() if n > 1}

    def unfinished(self, *, all_again: bool = False) -> dict[str, str]:
        """The accepted messages not finished, with their status, read back over HTTP
        (only those not seen finished before, unless ``all_again``)."""
        left = {}
        for message_id, reader in self.accepted.items():
            if message_id in self.seen_finished and not all_again:
                continue
            response = reader.get(f"/api/sms/{message_id}/")
            assert response.status_code == 200, describe(response)
            status = response.json()["status"]
            if status in FINISHED:
                self.seen_finished.add(message_id)
            else:
                left[message_id] = status
        return left

    def check(self) -> None:
        """Every accepted message finished, none handed to a phone twice."""
        assert self.accepted, "the ledger holds no accepted message: the test checked nothing"
        assert self.claimed_twice() == {}, f"claimed more than once: {self.claimed_twice()}"
        left = self.unfinished(all_again=True)
        assert left == {}, f"accepted but not finished: {left}"


def try_request(call: Any) -> httpx.Response | None:
    """``call()``'s response, or None when the connection failed or was cut."""
    try:
        response: httpx.Response = call()
    except httpx.TransportError:
        return None
    return response


class PhoneLoop:
    """One phone's side of a fault test: claim, report each message sent at once, and
    try again later whatever did not get through (a report whose answer was lost may
    have been applied: a second one is then refused 409, and the message is finished)."""

    def __init__(self, phone: Phone, ledger: Ledger) -> None:
        self.phone = phone
        self.ledger = ledger
        self.unreported: list[str] = []

    def step(self) -> list[httpx.Response | None]:
        """One claim and the reports due; every answer (None for a cut one)."""
        answers: list[httpx.Response | None] = []
        claim = try_request(self.phone.tasks)
        answers.append(claim)
        if claim is not None and claim.status_code == 200:
            tasks = claim.json()
            self.ledger.claimed(tasks)
            self.unreported += [task["id"] for task in tasks]
        pending, self.unreported = self.unreported, []
        for message_id in pending:
            report = try_request(lambda message_id=message_id: self.phone.report(message_id, "sent"))
            answers.append(report)
            if report is None or report.status_code not in (200, 409):
                self.unreported.append(message_id)
        return answers


def drain(loop: PhoneLoop, timeout: float) -> None:
    """Run the phone until every message the ledger accepted is finished (a message
    whose claim was lost comes back when its lease runs out), or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claim = loop.step()[0]
        answered = claim is not None and claim.status_code == 200
        if claim is not None and answered and not claim.json() and not loop.unreported:
            if not loop.ledger.unfinished():
                return
            time.sleep(0.2)  # leased to nobody (a lost claim): back when its lease runs out
        elif not answered:
            time.sleep(0.05)
    # Ledger.check says what is left.
