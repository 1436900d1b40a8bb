"""The request workers of ``connecfy serve``: granian's process server, except that a
worker that dies is always replaced and the server goes on.

granian on its own (``respawn_failed_workers=False``, its default) stops the whole server
when one worker exits: a ``kill -9`` or an out-of-memory kill of one worker took the
API, the private Redis and the background process down with it. With
``respawn_failed_workers=True`` it replaces the worker, but when the same worker dies
again within 5.5 s of its replacement it calls that a crash loop and stops everything
just the same (two out-of-memory kills in a row, a kill of a fresh worker).

Here a dead worker is replaced at once. Only a worker that dies young (within
:data:`QUICK_DEATH_SECONDS` of its start) a second time in a row waits for its
replacement: 1 s, then twice as long each time up to 30 s (as the supervisor waits for
Redis), so a worker that cannot start does not fork in a tight loop. SIGTERM during that wait still
stops the server at once.

Measured with ``--workers 2``: the replacement is forked within about 30 ms and serves
0.5 to 0.9 s after the kill (it imports and builds the app); the other worker serves
meanwhile, and about one request per kill fails: the one in flight on the killed worker,
or the next on a keep-alive connection it held. On Linux each granian worker listens on
a socket of its own (``SO_REUSEPORT``), so connections still waiting in the killed
worker's queue are reset too unless ``sysctl net.ipv4.tcp_migrate_req=1`` (Linux 5.14+)
hands them to the others; and with ``--workers 1`` new connections are refused until the
replacement listens (about 0.7 s). Run two workers or more to ride out a kill.

A worker also stops once however many SIGTERMs (or SIGINTs) it gets
(:func:`set_loop_signals_once`). granian 2.8's worker hands each one to its stop event,
whose ``set()`` puts a message in a channel of one place that the worker's stopping
thread reads once: the second message waits in the channel, and a third ``set()`` before
that thread is done waits for room that never comes, in the worker's main thread and
holding the GIL, which the stopping thread needs to finish: the worker hangs for good.
And a ``serve`` killed outright sends its workers one SIGTERM to several: their
parent-death signal (:func:`connecfy.supervisor.die_with_parent`) comes again each time
the kernel hands them on from one of serve's dying threads to the next. Measured with
granian's own handler: a worker outlived 1 in 80 ``serve`` processes killed with
SIGKILL, and 1 in 6 when serve had 12 idle threads more.

This reaches into granian's server (``_respawn_workers``, ``wrks``, ``respawned_wrks``,
``interrupt_signal``, ``_spawn_asgi_lifespan_worker``, ``granian._signals``, as in
granian 2.8); ``tests/e2e/test_process_faults.py`` kills workers of a real ``serve`` to
check it still holds, and ``tests/unit/test_worker_signals.py`` signals a worker's loop
again and again.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import granian._signals
from granian._granian import WorkerSignal
from granian.server import MPServer

import api.shutdown

log = logging.getLogger("connecfy.workers")

QUICK_DEATH_SECONDS = 10.0
FIRST_WAIT_SECONDS = 1.0
LONGEST_WAIT_SECONDS = 30.0
WAIT_STEP_SECONDS = 0.1  # how often a wait looks for SIGTERM


def _death(exitcode: int | None) -> str:
    if exitcode is None:
        return "exited"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def set_loop_signals_once(loop: Any) -> WorkerSignal:
    """granian's ``set_loop_signals`` for a worker's event loop, except that the worker's
    stop event is set on the first SIGTERM or SIGINT only: a later one finds the worker
    stopping already and does nothing (granian's own would block the worker for good on
    the third)."""
    event = WorkerSignal()
    stopping = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            event.set()
            api.shutdown.stopping()  # answer the long polls now, not when they end

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig, None)
    return event


class Workers(MPServer):
    """granian's multi-process server whose dead workers are always replaced, and whose
    workers stop once however many signals they get."""

    @staticmethod
    def _spawn_asgi_lifespan_worker(*args: Any, **kwargs: Any) -> None:
        # Runs in the new worker (granian's serve() takes it from the instance), first:
        # granian's worker imports set_loop_signals from granian._signals when it sets
        # its handlers, later, so it takes this one. Respawned workers come here too.
        granian._signals.set_loop_signals = set_loop_signals_once
        MPServer._spawn_asgi_lifespan_worker(*args, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "respawn_failed_workers": True})
        self.quick_deaths: dict[int, int] = {}  # worker index -> its quick deaths in a row

    def _wait_before_replacing(self, idx: int) -> float:
        worker = self.wrks[idx]
        lived = time.monotonic() - getattr(worker, "birth", 0.0)
        if lived >= QUICK_DEATH_SECONDS:
            self.quick_deaths.pop(idx, None)
            wait = 0.0
        else:
            deaths = self.quick_deaths[idx] = self.quick_deaths.get(idx, 0) + 1
            wait = 0.0 if deaths == 1 else min(LONGEST_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** (deaths - 2))
        log.warning(
            "worker-%d (pid %s) %s after %.1f s; replacing it%s",
            idx + 1,
            getattr(worker.inner, "pid", "?"),
            _death(getattr(worker.inner, "exitcode", None)),
            lived,
            f" in {wait:.0f} s" if wait else "",
        )
        return wait

    def _respawn_workers(self, workers: list[int], spawn_target: Any, target_loader: Any, delay: float = 0) -> None:
        dead = [idx for idx in workers if not self.wrks[idx].inner.is_alive()]
        wait = max((self._wait_before_replacing(idx) for idx in dead), default=0.0)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.interrupt_signal:  # SIGTERM or SIGINT: stop, replace nothing
                return
            time.sleep(WAIT_STEP_SECONDS)
        super()._respawn_workers(workers, spawn_target, target_loader, delay)
        # granian stops the server when a worker it replaced dies again within 5.5 s; the
        # waits above take the place of that rule.
        self.respawned_wrks.clear()
