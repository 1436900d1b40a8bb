"""The webhook benchmark still runs end to end and its checks mean something: a small
run against a real ``connecfy serve`` and a real receiver process over real HTTP,
asserting the invariants (every status change arrives once, correctly signed), never
the speed; and the receiver and the matcher each catching what they must."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from bench.webhook_bench import CEILING_PATH, HOOK_PATH, ReceiverProcess, match_events
from broker.webhooks import events

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_every_change_arrives_once_and_signed(tmp_path: Path) -> None:
    out = tmp_path / "webhooks.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.webhook_bench",
            "--rate",
            "50",
            "--seconds",
            "3",
            "--phones",
            "4",
            "--baseline-seconds",
            "2",
            "--ceiling-seconds",
            "0.5",
            "--grace-seconds",
            "0.5",
            "--drain-seconds",
            "60",
            "--quiet",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "webhooks OK" in result.stdout and "no webhooks" in result.stdout
    figures = json.loads(out.read_text())
    hooks, load = figures["webhooks"], figures["load"]
    accepted = load["invariants"]["accepted"]
    assert accepted >= 20, load["invariants"]  # 12.5 messages/s for 3 s
    assert load["invariants"]["final_states"] == {"delivered": accepted}
    assert hooks["missing"] == hooks["duplicates"] == hooks["unexpected"] == hooks["signature_failures"] == 0
    assert hooks["expected"] == hooks["unique"] == hooks["received"] == load["changes"] >= 4 * accepted
    # Each message went queued → claimed → sent → delivered, and each change came as an event.
    assert hooks["by_type"]["message.sent"] == hooks["by_type"]["message.delivered"] == accepted, hooks["by_type"]
    assert hooks["by_type"]["message.queued"] >= accepted and hooks["by_type"]["message.claimed"] >= accepted
    assert hooks["delay_ms"]["count"] == hooks["unique"] and hooks["delay_ms"]["p50"] > 0
    assert hooks["endpoint"]["queued"] == 0 and hooks["endpoint"]["dropped"] == 0
    assert figures["baseline"]["messages_accepted"] > 0 and figures["baseline"]["changes"] > 0
    assert figures["receiver_ceiling"]["requests_per_second"] > 0
    assert figures["receiver_ceiling"]["signature_failures"] == figures["receiver_ceiling"]["errors"] == 0
    assert figures["ok"] and figures["wrong"] == []


def test_the_receiver_counts_every_badly_signed_event() -> None:
    """A delivery signed as the server signs (``broker.webhooks.events``) passes the
    receiver's own check; a wrong secret, a stale timestamp and an event id header that
    is not the body's each count as a failure, and each is still recorded."""
    secret = "whsec_bench_test"

    async def scenario() -> dict:
        receiver = ReceiverProcess()
        receiver.start()
        try:
            await receiver.set_secret(secret)

            async def post(
                event_id: str, *, key: str = secret, at: int | None = None, header_id: str | None = None
            ) -> int:
                body = msgspec.json.encode(
                    {
                        "id": event_id,
                        "type": "message.sent",
                        "created_at": "2026-01-01T00:00:00.000Z",
                        "data": {"message_id": "m1", "status": "sent"},
                    }
                )
                stamp = int(time.time()) if at is None else at
                status, _, _ = await receiver.control.request(
                    "POST",
                    HOOK_PATH,
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        events.SIGNATURE_HEADER: events.signature_header([key], stamp, body),
                        events.EVENT_ID_HEADER: header_id or event_id,
                        events.EVENT_TYPE_HEADER: "message.sent",
                    },
                )
                return status

            assert await post("evt_good") == 204
            assert await post("evt_wrong_secret", key="whsec_other") == 204
            assert await post("evt_stale", at=int(time.time()) - 3600) == 204
            assert await post("evt_header", header_id="evt_someone_else") == 204
            records = await receiver.records()
            stats = await receiver.stats()
            return {"records": records, "stats": stats}
        finally:
            await receiver.stop()

    got = asyncio.run(scenario())
    assert got["stats"][HOOK_PATH] == {"received": 4, "unique": 4, "bad": 3}
    assert got["stats"][CEILING_PATH]["received"] == 0
    assert [row[0] for row in got["records"]["rows"]] == ["evt_good", "evt_wrong_secret", "evt_stale", "evt_header"]
    assert got["records"]["bad"] == 3
    # The receiver's check is the documented HMAC, not the server's function.
    body = b'{"id":"x"}'
    assert events.sign(secret, 7, body) == hmac.new(secret.encode(), b"7." + body, hashlib.sha256).hexdigest()


def test_the_matcher_catches_missing_duplicate_and_unexpected_events() -> None:
    timelines = {
        "m1": [
            {"status": s, "at": f"2026-01-01T00:00:0{n}.000Z"}
            for n, s in enumerate(("queued", "claimed", "sent", "delivered"))
        ],
        "m2": [{"status": "queued", "at": "2026-01-01T00:00:00.000Z"}],
    }

    def row(event_id: str, message_id: str, status: str) -> tuple[str, str, str, str, float]:
        return (event_id, f"message.{status}", message_id, "2026-01-01T00:00:00.000Z", 1767225600.5)

    complete = [
        row("e1", "m1", "queued"),
        row("e2", "m1", "claimed"),
        row("e3", "m1", "sent"),
        row("e4", "m1", "delivered"),
        row("e5", "m2", "queued"),
    ]
    healthy = match_events(timelines, complete)
    assert (
        healthy["expected"],
        healthy["unique"],
        healthy["missing"],
        healthy["duplicates"],
        healthy["unexpected"],
    ) == (5, 5, 0, 0, 0)
    assert [round(arrival - created, 3) for created, arrival in healthy["firsts"]] == [0.5] * 5

    broken = match_events(timelines, [*complete[:3], complete[0], row("e9", "m3", "sent"), complete[4]])
    assert broken["missing"] == 1 and broken["examples"]["missing"] == [["m1", "message.delivered"]]
    assert broken["duplicates"] == 1 and broken["examples"]["duplicates"] == ["e1"]
    assert broken["unexpected"] == 1 and broken["examples"]["unexpected"] == [["m3", "message.sent"]]
    # The same change delivered under two event ids is not the one expected event either.
    twice = match_events(timelines, [*complete, row("e6", "m2", "queued")])
    assert twice["unexpected"] == 1 and twice["missing"] == 0
