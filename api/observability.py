"""Metrics, request ids and JSON logs.

- ``MIDDLEWARE``: gives every request an id (``X-Request-ID``), logs one JSON access
  line per request and counts requests by route and status with their latency.
- ``MetricsController``: ``GET /metrics`` in the Prometheus text format.
- ``configure_logging``: JSON log lines carrying the request id.
- ``claimed`` and ``swept``: counters the handlers and the sweeper feed.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller

from broker.records import SweepReport

MIDDLEWARE: list[Any] = []


class MetricsController(Controller):
    path = "/metrics"


def configure_logging() -> None:
    """Send every log record to stderr as one JSON object per line."""


def claimed(messages: int) -> None:
    """One claim by a phone that took ``messages`` messages."""


def swept(report: SweepReport) -> None:
    """One sweep pass over every shard."""
