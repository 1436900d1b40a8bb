"""What a worker does the moment it is told to stop, before its requests drain: every
long poll it holds is answered ``200 []`` at once, and a new one is answered as a plain
poll, so stopping never waits out the phones' waits. ``connecfy serve``'s worker signal
handler calls :func:`stopping` on the first SIGTERM or SIGINT; the app's lifespan
registers what to run."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("connecfy.shutdown")

_hooks: list[Callable[[], None]] = []


def on_stopping(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` when the worker is told to stop; returns what forgets it again."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook) if hook in _hooks else None


def stopping() -> None:
    for hook in list(_hooks):
        try:
            hook()
        except Exception:
            log.exception("a stopping hook failed")
