"""The worker's run slots, with starts before bookkeeping.

At most ``concurrency`` jobs run at once. Occurrences often fall due together (a schedule's
grid is whole seconds), and then every thread competes for the one interpreter lock: a
thread whose job just finished would record its outcome, delete its Beanstalkd job and
reserve the next while jobs due now still wait to start. Each thread announces the instant
its job is due (:meth:`RunSlots.starting`) and says when it began (:meth:`RunSlots.started`);
:meth:`RunSlots.yield_to_starts` lets a finished job's bookkeeping wait (a few milliseconds at
most) while announced jobs are due and not begun, so a cluster starts first and is recorded
right after.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

#: A job due this close (seconds) counts as due: its thread may still be waking up.
DUE_MARGIN = 0.001


class RunSlots:
    """``concurrency`` slots, and the due instants of the jobs about to start."""

    def __init__(
        self, concurrency: int, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {concurrency!r}")
        self._free = concurrency
        self._monotonic = monotonic
        self._starting: dict[int, float] = {}
        self._tokens = itertools.count()
        lock = threading.Lock()
        self._slot_freed = threading.Condition(lock)
        self._begun = threading.Condition(lock)

    def starting(self, due_in: float) -> int:
        """Announce a job due in ``due_in`` seconds; the token for :meth:`started`."""
        token = next(self._tokens)
        with self._begun:
            self._starting[token] = self._monotonic() + due_in
        return token

    def started(self, token: int) -> None:
        """The announced job began (or will not run)."""
        with self._begun:
            del self._starting[token]
            self._begun.notify_all()

    def acquire(self, timeout: float) -> bool:
        """Take a slot; False after ``timeout`` seconds without one."""
        with self._slot_freed:
            if not self._slot_freed.wait_for(lambda: self._free > 0, timeout):
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._slot_freed:
            self._free += 1
            self._slot_freed.notify()

    def yield_to_starts(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, while announced jobs are due and not begun."""
        deadline = self._monotonic() + timeout
        with self._begun:
            while True:
                now = self._monotonic()
                if now >= deadline or not self._any_due(now):
                    return
                self._begun.wait(deadline - now)

    def _any_due(self, now: float) -> bool:
        return any(due <= now + DUE_MARGIN for due in self._starting.values())
