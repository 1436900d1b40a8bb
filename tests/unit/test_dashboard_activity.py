"""The overview chart's hourly buckets and the Add Device QR code, without a browser."""

from __future__ import annotations

import segno

from api.dashboard.activity import HOUR_MS, HOURS, hourly_activity
from api.dashboard.pairing_qr import pairing_qr_svg, pairing_uri
from broker.records import MessageRecord

NOW = 1_800_000_000_000


def record(created: int, status: str = "sent") -> MessageRecord:
    return MessageRecord(
        id="m",
        account="a",
        to="+15551234567",
        message="hi",
        segments=1,
        route="device",
        device="d",
        status=status,
        created=created,
        expires=created + 1,
        leases=0,
        lease_until=0,
        updated=created,
        error="",
    )


def test_messages_fall_into_the_hour_they_were_made_and_older_ones_are_left_out() -> None:
    this_hour = NOW // HOUR_MS * HOUR_MS
    activity = hourly_activity(
        [
            record(NOW),
            record(this_hour),
            record(this_hour - 1, "failed"),
            record(this_hour - 23 * HOUR_MS, "expired"),
            record(this_hour - 23 * HOUR_MS - 1),
        ],
        NOW,
    )
    assert len(activity.bars) == HOURS
    assert [(b.total, b.failed) for b in activity.bars if b.total] == [(1, 1), (1, 1), (2, 0)]
    assert activity.bars[-1].start_ms == this_hour and activity.bars[0].start_ms == this_hour - 23 * HOUR_MS
    assert (activity.total, activity.peak, activity.truncated) == (4, 2, False)


def test_pairing_uri_matches_the_phone_apps_format_and_the_svg_draws_exactly_it() -> None:
    uri = pairing_uri("https://sms.example.com/", "K7M2QX9D")
    assert uri == "connecfy://pair?server=https%3A%2F%2Fsms.example.com&code=K7M2QX9D"
    svg = pairing_qr_svg(uri)
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert svg == pairing_qr_svg(uri) and svg != pairing_qr_svg(pairing_uri("https://sms.example.com", "K7M2QX9E"))
    width, height = segno.make(uri, error="m", micro=False).symbol_size(scale=8, border=4)
    assert f'width="{width}" height="{height}"' in svg
