"""Keep a child process of ``connecfy serve`` running: its private Redis, its
background-jobs process.

A :class:`Supervisor` watches anything with a ``process`` (a ``subprocess.Popen``) and a
``start()`` that makes a new one, and restarts it whenever it exits until :meth:`stop`.
A Redis that crashed or was killed comes back by itself from its append-only file
(writes of the last second may be lost, as with any ``appendfsync everysec`` Redis); the
API answers 503 in the meantime and recovers on its own. A restart that fails is tried
again, waiting twice as long each time, up to 30 s.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("connecfy.supervisor")


class Supervisor:
    def __init__(self, child: Any, name: str, *, interval: float = 0.5) -> None:
        self.child = child
        self.name = name
        self.interval = interval
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=15)

    def _watch(self) -> None:
        delay = self.interval
        while not self._stopping.wait(delay):
            process = self.child.process
            if process is None or process.poll() is None:
                delay = self.interval
                continue
            log.warning("%s exited with %s; restarting it", self.name, process.returncode)
            try:
                self.child.start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                delay = min(30.0, max(1.0, delay * 2))
                log.error("%s did not restart (%s); trying again in %.0f s", self.name, exc, delay)
                continue
            self.restarts += 1
            log.warning("%s is back (restart %d)", self.name, self.restarts)
            delay = self.interval
