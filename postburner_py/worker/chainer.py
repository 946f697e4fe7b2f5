"""Chaining off the start path: one thread per worker process creates the next executions.

A worker thread that starts occurrence N asks for N+1 and goes on; the chainer waits
``linger`` seconds after a first request (the worker uses 0.1 s: occurrences due together
start together, and their chaining should not compete with their starts), then takes every
request waiting and chains them together
(:func:`~postburner_py.schedules.chaining.chain_next_many`: one query, then one pass of the
creation path the watchdog uses too), so a thousand occurrences due in the same second cost
a few passes instead of a thousand. Chaining is requested once ``run_at`` has come, so N+1
never coexists with N as a second live future. If the process dies before a request is
served, the watchdog's next pass creates the missing execution.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from postburner_py.schedules.chaining import chain_next_many

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.worker")

_STOP = (-1, None)


class Chainer:
    """Serves :meth:`request` calls in batches on its own thread until :meth:`close`."""

    def __init__(
        self, pb: Postburner, *, clock: Callable[[], datetime], linger: float = 0.0
    ) -> None:
        self.pb = pb
        self.clock = clock
        self.linger = linger
        self.passes = 0
        self._requests: queue.SimpleQueue[tuple[int, datetime | None]] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._waiting = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="chainer", daemon=True)
        self._thread.start()

    def request(self, schedule_id: int, run_at: datetime) -> None:
        """Ask for the execution after ``run_at`` of ``schedule_id`` (returns at once)."""
        with self._idle:
            if self._closed:
                raise RuntimeError("the chainer is closed; the watchdog creates what it missed")
            self._waiting += 1
        self._requests.put((schedule_id, run_at))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every request so far was served; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._waiting == 0, timeout)

    def close(self) -> None:
        """Serve what is waiting, then stop the thread."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
        self._requests.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch, served, stop = self._next_batch()
            if batch:
                self._chain(batch)
            with self._idle:
                self._waiting -= served
                self._idle.notify_all()
            if stop:
                return

    def _next_batch(self) -> tuple[dict[int, datetime], int, bool]:
        """Every request waiting, newest ``run_at`` per schedule; how many; whether to stop."""
        batch: dict[int, datetime] = {}
        served, stop = 0, False
        item = self._requests.get()
        if self.linger and item[1] is not None:
            # Occurrences due together start together: chaining a moment later keeps this
            # thread's work out of their starts and serves them all in one pass.
            time.sleep(self.linger)
        while True:
            schedule_id, run_at = item
            if run_at is None:
                stop = True
            else:
                served += 1
                batch[schedule_id] = max(run_at, batch.get(schedule_id, run_at))
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return batch, served, stop

    def _chain(self, batch: dict[int, datetime]) -> None:
        try:
            chain_next_many(self.pb, batch, now=self.clock())
            self.passes += 1
        except Exception:
            log.exception("could not chain the next executions of %d schedules", len(batch))
