"""The named scenarios: the message rate over time, the traffic mix, and the events
(phones leaving, Redis restarting) each one adds to a steady base.

``steady``         the planned rate throughout.
``burst``          10 × the rate for ``--burst-seconds`` (default 30) from a third in.
``churn``          ``--churn-share`` of the phones go offline a quarter in and come back
                   half way: no heartbeats, no polls, reports held until they return.
``pool-fairness``  one huge API-only sender with a backlog (``--backlog`` messages sent
                   up front, then the rate) and ``--small-senders`` small ones at
                   ``--small-rate`` each, all through pool phones whose send budget
                   (``--pool-budget`` per minute) keeps the backlog from draining at once;
                   reports each small sender's wait from 202 to claimed.
``redis-restart``  Redis restarted a third in; reports the errors and the recovery time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace

from bench.load.senders import Sender, Stream

NAMES = ("steady", "burst", "churn", "pool-fairness", "redis-restart")


def rate_function(args: argparse.Namespace, start: float) -> tuple[Callable[[float], float], dict[str, float]]:
    base = float(args.rate)
    if args.scenario != "burst":
        return (lambda t: base), {}
    begin = args.seconds / 3
    end = begin + args.burst_seconds
    return (lambda t: base * args.burst_factor if begin <= t - start < end else base), {
        "burst starts": begin,
        "burst ends": end,
    }


def mixed_streams(own: Sender, pool: Sender | None, batch_size: int) -> list[Stream]:
    """The steady mix: a self-managed account sending to its own phones through all three
    endpoints and to its own pool, and an API-only account sending to the platform pool."""
    streams = [
        Stream("session → device", own, "session", True, 0.15),
        Stream("external → device", own, "external", True, 0.15),
        Stream("external → own pool", own, "external", False, 0.10),
        Stream("batch → device", own, "batch", True, 0.30, batch_size),
    ]
    if pool is None:  # no platform pool phones: the account's own traffic takes it all
        return [replace(s, share=s.share / 0.7) for s in streams]
    return [
        *streams,
        Stream("external → platform pool", pool, "external", False, 0.1),
        Stream("batch → platform pool", pool, "batch", False, 0.2, batch_size),
    ]


def fairness_streams(huge: Sender, small: list[Sender], args: argparse.Namespace) -> list[Stream]:
    streams = [Stream("huge: batch → platform pool", huge, "batch", False, 1.0, args.batch_size)]
    streams += [
        Stream(f"{s.label}: external → platform pool", s, "external", False, args.small_rate / args.rate) for s in small
    ]
    return streams


def event_marks(args: argparse.Namespace) -> dict[str, float]:
    if args.scenario == "churn":
        return {"phones leave": args.seconds / 4, "phones return": args.seconds / 2}
    if args.scenario == "redis-restart":
        return {"redis restart": args.seconds / 3}
    return {}
