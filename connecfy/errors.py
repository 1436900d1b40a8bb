"""How the ``connecfy`` command reports a mistake: one line on stderr, ``connecfy: ...``,
and an exit status that says whose it was.

``USAGE`` (2): the command line or a setting is wrong (a port out of range, a data
directory that is a file, a malformed ``REDIS_URL``, no terminal to ask a password on);
running it again unchanged fails again. ``RUNTIME`` (1): the command was fine but the
world said no (Redis unreachable, the email taken, the data directory in use by another
``serve``). No traceback either way: a traceback is for a bug of ours.
"""

from __future__ import annotations

import sys

USAGE = 2
RUNTIME = 1


class CommandError(Exception):
    """What the command could not do, in one line, and its exit status."""

    def __init__(self, message: str, status: int = RUNTIME) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the cause's text held
        self.status = status


def report(message: str) -> None:
    """``message`` as the command's one line on stderr."""
    print(f"connecfy: {' '.join(message.split())}", file=sys.stderr, flush=True)
