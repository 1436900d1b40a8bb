"""Metrics, request ids and JSON logs, one module each:

- :mod:`api.observability.metrics`: the Prometheus counters (requests, claims, sweeps,
  webhook attempts, the garbage collector's pauses) and ``GET /metrics``;
- :mod:`api.observability.logs`: every log record one JSON object per line on stderr;
- :mod:`api.observability.access`: the ASGI wrapper giving every request an id, an
  access line and its count and latency.

The program (``connecfy``) uses the names below.
"""

from api.observability.access import instrument
from api.observability.logs import configure_logging, logging_dictconfig
from api.observability.metrics import (
    GAUGES_MAX_AGE_SECONDS,
    MetricsController,
    claimed,
    swept,
    watch_gc_pauses,
    webhook_attempted,
)

__all__ = [
    "GAUGES_MAX_AGE_SECONDS",
    "MetricsController",
    "claimed",
    "configure_logging",
    "instrument",
    "logging_dictconfig",
    "swept",
    "watch_gc_pauses",
    "webhook_attempted",
]
