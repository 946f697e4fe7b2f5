"""The worker process: threads that reserve jobs and hand each to a :class:`JobRunner`.

Each thread owns its Beanstalkd connection (the adapter keeps one per thread) and its own
database sessions; a connection loss is logged once, backed off and reconnected. SIGTERM or
SIGINT stops reserving and lets running jobs finish (bounded by their TTR); a second signal
exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING

from postburner_py.beanstalk import QueuedJob
from postburner_py.errors import QueueUnavailableError
from postburner_py.history import HistoryStore
from postburner_py.job_runner import JobRunner, Outcome, RunnerServices, default_backoff

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.worker")

RESERVE_TIMEOUT = 1.0
MAX_BACKOFF = 5.0


class Worker:
    """Runs at most ``concurrency`` jobs at once from ``queues`` until stopped.

    ``concurrency + prefetch`` threads reserve (``prefetch`` defaults to ``concurrency``): a
    job reserved before its ``run_at`` is admitted and waits for its instant without taking a
    slot, so a cluster of occurrences due together starts on time; a reserved job waits at most
    for a slot to free up, its Beanstalkd job and lease kept alive meanwhile. ``prefetch=0``
    holds no job beyond the running ones.

    With ``burst=True`` each thread exits once no job is ready (for scripts and tests).
    ``clock`` and ``sleep`` are injectable; ``history`` defaults to a database-backed store;
    ``backoff(attempt)`` gives the seconds before a failed attempt is retried.
    """

    def __init__(
        self,
        pb: Postburner,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 1,
        prefetch: int | None = None,
        burst: bool = False,
        history: HistoryStore | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        reserve_timeout: float = RESERVE_TIMEOUT,
        backoff: Callable[[int], int] = default_backoff,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency: must be >= 1")
        if prefetch is not None and prefetch < 0:
            raise ValueError("prefetch: must be >= 0 (0 holds no job beyond the running ones)")
        self.prefetch = concurrency if prefetch is None else prefetch
        self.pb = pb
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.burst = burst
        self.clock = clock or pb.clock
        self.sleep = sleep
        self.reserve_timeout = 0.0 if burst else reserve_timeout
        self.history = history or HistoryStore(pb.session_factory, clock=self.clock)
        self.backoff = backoff
        # One counter per thread, written only by its thread (no lock on the hot path).
        self._counts: list[Counter[Outcome]] = []
        self._counts_lock = threading.Lock()
        self._stopping = threading.Event()
        #: With ``burst``: why the worker gave up (Beanstalkd unreachable), else None.
        self.failure: QueueUnavailableError | None = None

    def run(self) -> None:
        """Run until :meth:`stop` (or, with ``burst``, until nothing is ready)."""
        services = RunnerServices.start(
            self.pb, self.history, self.clock, concurrency=self.concurrency
        )
        threads = [
            threading.Thread(
                target=self._thread_main, args=(index, services), name=f"worker-{index}"
            )
            for index in range(self.concurrency + self.prefetch)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            services.close()
        log.info("worker stopped: %s", dict(self.outcomes))

    def stop(self) -> None:
        """Stop reserving; jobs already running finish first."""
        self._stopping.set()

    @property
    def outcomes(self) -> Counter[Outcome]:
        """How many deliveries came to each :class:`Outcome` so far, over all threads."""
        with self._counts_lock:
            counts = list(self._counts)
        total: Counter[Outcome] = Counter()
        for count in counts:
            total.update(dict(count))  # dict() copies in one step, safe while it grows
        return total

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    def _thread_main(self, index: int, services: RunnerServices) -> None:
        worker_id = f"{self.pb.settings.node_id}/{index}"
        runner = JobRunner(
            self.pb,
            worker_id=worker_id,
            history=self.history,
            services=services,
            clock=self.clock,
            sleep=self.sleep,
            backoff=self.backoff,
        )
        counts: Counter[Outcome] = Counter()
        with self._counts_lock:
            self._counts.append(counts)
        try:
            self._loop(runner, counts)
        finally:
            counts.update(runner.close())

    def _loop(self, runner: JobRunner, counts: Counter[Outcome]) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            counts.update(runner.flush(wait=False))
            # While outcomes are being committed, only take a job that is ready now: with
            # none ready, act on those outcomes first rather than hold them through a wait.
            timeout = 0.0 if runner.unsettled else self.reserve_timeout
            deletes = runner.take_deletes()
            try:
                job = self.pb.queue.reserve(self.queues, timeout, delete_first=deletes)
            except QueueUnavailableError as exc:
                if deletes:
                    # Their outcomes are recorded: back after the TTR, the log turns them away.
                    log.warning("jobs %s may not be deleted: %s", deletes, exc)
                if self.burst:  # a script waits for this worker: give up, do not wait
                    self.failure = exc
                    return
                backoff = self._back_off(backoff, exc)
                continue
            backoff = 0.0
            if job is None:
                if runner.unsettled:
                    counts.update(runner.flush(wait=True))
                elif self.burst:
                    return
                continue
            outcome = self._handle(runner, job)
            if outcome is not None:
                counts[outcome] += 1

    def _handle(self, runner: JobRunner, job: QueuedJob) -> Outcome | None:
        try:
            return runner.handle(job)
        except QueueUnavailableError as exc:
            log.warning("Beanstalkd went away while handling job %s: %s", job.id, exc)
        except Exception:
            log.exception("job %s could not be handled; it returns after its TTR", job.id)
        return None

    def _back_off(self, previous: float, exc: Exception) -> float:
        if previous == 0.0:
            log.warning("Beanstalkd unreachable (%s); retrying", exc)
        delay = min(MAX_BACKOFF, max(0.1, previous * 2))
        self._stopping.wait(delay)
        return delay


def run_worker(
    pb: Postburner,
    *,
    queues: Sequence[str] = ("default",),
    concurrency: int = 1,
    prefetch: int | None = None,
    burst: bool = False,
) -> int:
    """Run a worker in the foreground with signal handling; returns the exit code.

    With ``burst``, Beanstalkd becoming unreachable ends the run with
    :class:`~postburner_py.errors.QueueUnavailableError` (after the running jobs finish).
    """
    worker = Worker(pb, queues=queues, concurrency=concurrency, prefetch=prefetch, burst=burst)
    if threading.current_thread() is threading.main_thread():
        _install_signal_handlers(worker)
    log.info(
        "worker %s: queues %s, concurrency %d, prefetch %d%s",
        pb.settings.node_id,
        ",".join(queues),
        concurrency,
        worker.prefetch,
        ", burst" if burst else "",
    )
    worker.run()
    if worker.failure is not None:
        raise worker.failure
    return 0


def _install_signal_handlers(worker: Worker) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("signal %d: finishing running jobs, then stopping", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
