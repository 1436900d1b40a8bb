"""A request worker of ``connecfy serve`` stops once however many SIGTERMs or SIGINTs it
gets (connecfy.workers.set_loop_signals_once). granian 2.8's own handler sets the
worker's stop event on each one, and that ``set()`` blocks for good, holding the GIL,
once the event's one-place channel is full: a worker of a ``serve`` killed with SIGKILL
(several parent-death SIGTERMs) hung that way.

The signals go to a child Python process, so a handler that blocks shows as a timeout
here and no signal reaches pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import granian._signals
import pytest
from granian.server import MPServer

from connecfy import workers

SIGNALLED = textwrap.dedent(
    """
    import asyncio, os, signal, sys

    import uvloop

    import connecfy.workers as workers

    class Counted:
        sets = 0

        def set(self):
            Counted.sets += 1

    if sys.argv[1] == "counted":
        workers.WorkerSignal = Counted
    async def signals():
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            await asyncio.sleep(0.05)  # the loop runs the handler

    loop = uvloop.new_event_loop()
    workers.set_loop_signals_once(loop)
    loop.run_until_complete(signals())
    print(Counted.sets if sys.argv[1] == "counted" else "done", flush=True)
    """
)


def signalled(kind: str) -> str:
    """Run SIGNALLED: four signals to a loop with the worker's handlers; its output."""
    result = subprocess.run([sys.executable, "-c", SIGNALLED, kind], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result
    return result.stdout.strip()


def test_the_stop_event_is_set_on_the_first_signal_only() -> None:
    assert signalled("counted") == "1"


def test_granians_stop_event_signalled_again_and_again_does_not_block() -> None:
    # Nobody reads the event's channel here, as nobody reads it again in a worker once
    # its stopping thread took the first message: a second set() would block for good.
    assert signalled("granian") == "done"


def test_every_worker_granian_starts_takes_these_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def granians_worker(*args: object, **kwargs: object) -> None:
        seen.append(granian._signals.set_loop_signals)

    monkeypatch.setattr(MPServer, "_spawn_asgi_lifespan_worker", staticmethod(granians_worker))
    monkeypatch.setattr(granian._signals, "set_loop_signals", granian._signals.set_loop_signals)
    workers.Workers._spawn_asgi_lifespan_worker(1, "worker")
    assert seen == [workers.set_loop_signals_once]
