"""JSON log lines: every log record one JSON object per line on stderr, carrying the
request id inside a request, and the access line written the same way."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

JSON_HANDLER_NAME = "connecfy-json"
access_log = logging.getLogger("connecfy.access")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
encoder = msgspec.json.Encoder(enc_hook=repr)
_second = [-1, ""]  # the last whole second formatted, and its text


def iso_utc(t: float) -> str:
    """``2026-01-31T12:00:00.123Z``; strftime once a second, not per line."""
    second = int(t)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((t - second) * 1000):03d}Z"


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def pid() -> int:
    """This process's id, kept current across a fork."""
    return _pid[0]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC), level, logger, message, pid (which worker),
    request_id inside a request, the ``fields`` a record carries (the access line's), exc
    when any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return encoder.encode(entry).decode()


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name(JSON_HANDLER_NAME)
    return handler


def logging_dictconfig(level: str = "INFO") -> dict[str, Any]:
    """The same JSON lines for granian's own loggers (its ``log_dictconfig``)."""
    handler = {"()": "api.observability.logs.json_handler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {"json": handler},
        "loggers": {
            "_granian": {"handlers": ["json"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["json"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["json"], "level": level},
    }


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr as one JSON object per line. Idempotent."""
    root = logging.getLogger()
    root.setLevel(level)
    removed: set[logging.Handler] = set()
    for name in ("", "litestar", "granian", "_granian", "granian.access"):
        logger = logging.getLogger(name)
        removed.update(logger.handlers)
        logger.handlers.clear()
        logger.propagate = True
    for handler in removed:
        listener = getattr(handler, "listener", None)  # Litestar's queue handler owns a thread
        if listener is not None:
            listener.stop()
        handler.close()
    root.addHandler(json_handler())


def _access_line_to_stderr(entry: dict[str, Any]) -> None:
    """The access line straight to stderr, formatted as :class:`JsonFormatter` would: the
    logging machinery (record, handler lock, formatter) costs more than the request."""
    entry["ts"] = iso_utc(time.time())
    with contextlib.suppress(OSError):  # no stderr is no reason to fail a request
        os.write(2, encoder.encode(entry) + b"\n")


_RECORD_KEYS = frozenset({"ts", "level", "logger", "message", "pid", "request_id"})


def _access_line_to_logging(entry: dict[str, Any]) -> None:
    record = logging.LogRecord(access_log.name, logging.INFO, "", 0, entry["message"], None, None)
    record.fields = {k: v for k, v in entry.items() if k not in _RECORD_KEYS}
    access_log.handle(record)


def access_line_writer() -> Callable[[dict[str, Any]], None]:
    """Where access lines go: straight to stderr once :func:`configure_logging` put JSON
    lines there, else through ``logging`` (whatever handlers the embedding program set)."""
    if any(h.get_name() == JSON_HANDLER_NAME for h in logging.getLogger().handlers):
        return _access_line_to_stderr
    return _access_line_to_logging
