"""Keeping running jobs alive: one thread per worker process renews what the jobs hold.

A worker thread runs its job inline (handing each job to another thread cost more than a
trivial job itself), so it cannot touch the Beanstalkd job while the job runs. Instead it
hands the :class:`LeaseKeeper` a renewal for the duration of the job: a touch on the worker
thread's own connection (:meth:`~postburner_py.queue.beanstalk.BeanstalkQueue.toucher`, the only
connection that may touch a reserved job) and a renewal of the dispatch lease, for every job
the thread holds (the running one, and finished ones whose outcome is not committed yet).
The keeper runs it every ``interval`` seconds (a third of the TTR) until the job returns; a
job that returns sooner costs two dictionary operations and no wake-up.

The worker thread does not use its connection while its job runs, and leaving
:meth:`LeaseKeeper.keeping` waits for a renewal in progress: the two threads never use the
connection at once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("postburner_py.worker")

#: How often the keeper looks for renewals that are due, in seconds.
DEFAULT_POLL = 0.1


@dataclass
class _Kept:
    renew: Callable[[], None]
    interval: float
    due: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: bool = True


class LeaseKeeper:
    """Runs the renewals of running jobs on one thread until :meth:`close`."""

    def __init__(
        self, *, poll: float = DEFAULT_POLL, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if poll <= 0:
            raise ValueError(f"poll: must be > 0 seconds, got {poll!r}")
        self.poll = poll
        self.renewals = 0
        self._monotonic = monotonic
        self._kept: dict[int, _Kept] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    @contextmanager
    def keeping(self, renew: Callable[[], None], interval: float) -> Iterator[None]:
        """Call ``renew`` every ``interval`` seconds (from the keeper's thread) until the
        block ends; leaving the block waits for a renewal in progress to finish."""
        kept = _Kept(renew, interval, self._monotonic() + interval)
        token = next(self._tokens)
        with self._lock:
            self._kept[token] = kept
        try:
            yield
        finally:
            with self._lock:
                del self._kept[token]
            with kept.lock:
                kept.active = False

    def close(self) -> None:
        """Stop the thread (jobs still running are no longer kept alive)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self.poll):
            now = self._monotonic()
            with self._lock:
                due = [kept for kept in self._kept.values() if kept.due <= now]
            for kept in due:
                self._renew(kept)

    def _renew(self, kept: _Kept) -> None:
        with kept.lock:
            if not kept.active:
                return
            try:
                kept.renew()
                self.renewals += 1
            except Exception:
                log.exception("could not keep a running job alive")
            kept.due = self._monotonic() + kept.interval
