"""Every message the server accepted and every claim a phone made, and the invariants
checked against them at the end of a run.

The invariants, each a count that must be zero:

- ``lost``: accepted with a 202 but never claimed by any phone, or not in a final
  state on the server when the drain ended;
- ``claimed_twice``: claimed by two different phones (one phone getting its own
  message again after its lease ran out is a redelivery, counted apart: the phone
  de-duplicates by id, as the real app does);
- ``status_mismatch``: the server's final status is not what the phone reported;
- ``unknown_claims``: a phone was handed an id no sender was told about and the
  server's history does not hold either;
- ``not_final_on_server``: any message of a bench account, accepted or not (a send
  whose answer was lost may still have been queued), left unfinished on the server.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

FINAL = frozenset({"sent", "delivered", "failed", "expired", "cancelled"})
QUEUES = ("device queue", "own pool", "platform pool")


@dataclass
class Accepted:
    sender: str  # the sending account's label
    planned: float  # when the sender planned the send (run seconds)
    accepted: float  # when its 202 arrived
    claimed: float | None = None
    claimed_by: str | None = None
    sent: float | None = None  # when the phone's "sent" (or "failed") report was acknowledged
    reported: str | None = None  # the phone's last acknowledged status
    queue: str = ""  # where it waited: QUEUES


@dataclass
class Ledger:
    accepted: dict[str, Accepted] = field(default_factory=dict)
    claims: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    unplanned: dict[str, Accepted] = field(default_factory=dict)
    redeliveries: int = 0
    uncertain_sends: int = 0  # sends with no HTTP answer: queued or not, nobody knows

    def accept(self, message_id: str, sender: str, planned: float, at: float, queue: str = "") -> None:
        self.accepted[message_id] = Accepted(sender, planned, at, queue=queue)

    def claim(self, message_id: str, device_id: str, at: float) -> bool:
        """Record a claim; False when this phone already holds or finished the id."""
        holders = self.claims[message_id]
        if device_id in holders:
            self.redeliveries += 1
            return False
        holders.add(device_id)
        entry = self.accepted.get(message_id)
        if entry is None:
            # Claimed before its sender's 202 arrived (the phone was quicker), or a send
            # whose answer never came: settled at the end against the server's history.
            entry = self.unplanned.setdefault(message_id, Accepted("?", at, at))
        if entry.claimed is None:
            entry.claimed, entry.claimed_by = at, device_id
        return True

    def reported(self, message_id: str, status: str, at: float) -> None:
        entry = self.accepted.get(message_id) or self.unplanned.get(message_id)
        if entry is None:
            return
        entry.reported = status
        if status in ("sent", "failed") and entry.sent is None:
            entry.sent = at

    def settle(self) -> None:
        """Fold claims that beat their sender's 202 into the accepted entries."""
        for message_id in list(self.unplanned):
            entry = self.accepted.get(message_id)
            if entry is not None:
                early = self.unplanned.pop(message_id)
                entry.claimed, entry.claimed_by = early.claimed, early.claimed_by
                entry.reported = entry.reported or early.reported
                entry.sent = entry.sent or early.sent

    def open_count(self) -> int:
        """Accepted messages the phones have not finished yet (a final report acknowledged)."""
        return sum(1 for entry in self.accepted.values() if entry.reported not in FINAL)

    def check(self, server_status: dict[str, str]) -> dict[str, Any]:
        """The invariants against the server's history (id → status for every message of
        every bench account)."""
        self.settle()
        lost = [i for i, e in self.accepted.items() if e.claimed is None or server_status.get(i) not in FINAL]
        claimed_twice = [i for i, holders in self.claims.items() if len(holders) > 1]
        mismatch = [
            i for i, e in self.accepted.items() if e.reported is not None and server_status.get(i) != e.reported
        ]
        unknown = [i for i in self.unplanned if i not in server_status]
        unfinished = [i for i, status in server_status.items() if status not in FINAL]
        finals = Counter(server_status.get(i, "missing") for i in self.accepted)
        return {
            "accepted": len(self.accepted),
            "final_states": dict(finals),
            "lost": len(lost),
            "claimed_twice": len(claimed_twice),
            "status_mismatch": len(mismatch),
            "unknown_claims": len(unknown),
            "not_final_on_server": len(unfinished),
            "queued_without_202": len(self.unplanned),
            "uncertain_sends": self.uncertain_sends,
            "redeliveries": self.redeliveries,
            "examples": {
                "lost": lost[:5],
                "claimed_twice": claimed_twice[:5],
                "status_mismatch": mismatch[:5],
                "unknown_claims": unknown[:5],
                "not_final_on_server": unfinished[:5],
            },
            "ok": not (lost or claimed_twice or mismatch or unknown or unfinished),
        }
