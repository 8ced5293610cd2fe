"""Stop signals: SIGINT and SIGTERM turned into a clean stop of a worker.

The first signal interrupts the running trial with :class:`WorkerStopped` (the trial loop fails
and re-queues it) or, between trials, ends the loop at its next check; nothing is left RUNNING.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from search.errors import WorkerStopped

__all__ = ["StopSignals", "WorkerStopped"]


class StopSignals:
    """Turns SIGINT and SIGTERM into a clean stop of the worker loop.

    The first signal sets :attr:`signal_name` and :attr:`event`; if a trial is running it is
    interrupted at once by :class:`WorkerStopped`, otherwise the loop stops at its next check.
    Further signals are ignored, so a signal sent both by the terminal and by a ``workers``
    parent does not interrupt the clean-up.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.event = threading.Event()
        self._in_trial = False
        self._previous: dict[int, Any] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Install the handlers (main thread only; elsewhere a no-op) and restore them after."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            return
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if self._in_trial:
            self._in_trial = False
            raise WorkerStopped(self.signal_name)

    @contextlib.contextmanager
    def trial_running(self) -> Iterator[None]:
        """While inside, a stop signal raises :class:`WorkerStopped` in the main thread."""
        if self.signal_name is not None:
            raise WorkerStopped(self.signal_name)
        self._in_trial = True
        try:
            yield
        finally:
            self._in_trial = False
