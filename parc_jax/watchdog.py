"""A stall watchdog for command-line runs: end the process when no work completes for a while.

A computation stuck inside XLA (a kernel waiting on a thread pool that never frees up, a device
that stopped answering) cannot be interrupted from Python: no exception reaches the thread
that waits on it. The watchdog is a daemon thread that the main thread feeds with
:meth:`Watchdog.beat` whenever a unit of work completes; when ``timeout`` seconds pass without
one, it prints one line naming the last stage and ends the process with ``os._exit(2)``.

Only the CLI uses it: a library call must not end its caller's process, so the Python API has
no watchdog (a caller that needs one runs scoring in a subprocess with a timeout).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

__all__ = ["DEFAULT_STALL_TIMEOUT", "STALL_TIMEOUT_ENV", "Watchdog"]

# Long enough for a cold compilation of every scorer on a large width bucket.
DEFAULT_STALL_TIMEOUT = 900.0
STALL_TIMEOUT_ENV = "PARC_JAX_STALL_TIMEOUT"
EXIT_STATUS = 2


class Watchdog:
    """``with Watchdog(timeout) as dog: ... dog.stage("scoring ..."); ... dog.beat()``.

    ``timeout``: seconds without a :meth:`beat` before the process ends; 0 or None disables it.
    ``stage(text)`` names what runs now (for the message) without counting as progress.
    """

    def __init__(self, timeout: float | None, *, stream: TextIO | None = None) -> None:
        self.timeout = timeout or 0.0
        self._stream = stream
        self._last = time.monotonic()
        self._stage = "starting"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """A unit of work completed."""
        with self._lock:
            self._last = time.monotonic()

    def stage(self, text: str) -> None:
        """What runs now; named in the message if the run stalls there."""
        with self._lock:
            self._stage = text

    def __enter__(self) -> Watchdog:
        if self.timeout > 0:
            self.beat()
            self._thread = threading.Thread(target=self._watch, name="parc-jax-watchdog",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        poll = min(1.0, self.timeout / 4)
        while not self._stop.wait(poll):
            with self._lock:
                idle, stage = time.monotonic() - self._last, self._stage
            if idle >= self.timeout:
                stream = self._stream or sys.stderr
                stream.write(
                    f"error: no progress for {idle:.0f} s (--stall-timeout {self.timeout:g}) "
                    f"while {stage}; stopping\n"
                )
                stream.flush()
                os._exit(EXIT_STATUS)
