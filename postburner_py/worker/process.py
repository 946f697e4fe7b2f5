"""The worker process: threads that reserve jobs and hand each to a :class:`JobRunner`.

Each thread owns its Beanstalkd connection (the adapter keeps one per thread) and its own
database sessions; a connection loss is logged once, backed off and reconnected. SIGTERM or
SIGINT stops reserving and lets running jobs finish and their outcomes commit, for at most
the shutdown grace (then the worker exits non-zero, leaving what is unfinished to the TTR
take-over); a second signal exits at once.

While it runs, a heartbeat thread (:mod:`postburner_py.worker.heartbeat`) writes the
worker's row once per interval; :meth:`Worker.liveness` is what its health probe answers.
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
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from postburner_py.errors import QueueUnavailableError
from postburner_py.health import OK, HealthOptions, Verdict, servers_ready
from postburner_py.logs import WORKER_STARTED, WORKER_STOPPED, fields
from postburner_py.metrics import DEFAULT_METRICS_HOST, serve_metrics
from postburner_py.queue.beanstalk import QueuedJob, QueueOutage
from postburner_py.store.history import HistoryStore
from postburner_py.worker.heartbeat import HEARTBEAT_INTERVAL, Heartbeat
from postburner_py.worker.metrics import WorkerMetrics
from postburner_py.worker.runner import JobRunner, Outcome, RunnerServices, default_backoff

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.worker")

RESERVE_TIMEOUT = 1.0
MAX_BACKOFF = 5.0
#: Longest a thread waits for outcomes in one go before it looks at its jobs again.
OUTCOME_WAIT = 0.5
#: The outcomes of a delivery whose job was called (what a heartbeat counts as a job run).
RAN = frozenset({Outcome.COMPLETED, Outcome.PARTIAL, Outcome.RETRYING, Outcome.FAILED})


class Worker:
    """Runs at most ``concurrency`` jobs at once from ``queues`` until stopped.

    ``concurrency + prefetch`` threads reserve (``prefetch`` defaults to ``concurrency``): a
    job reserved before its ``run_at`` is admitted and waits for its instant without taking a
    slot, so a cluster of occurrences due together starts on time; a reserved job waits at most
    for a slot to free up, its Beanstalkd job and lease kept alive meanwhile. ``prefetch=0``
    holds no job beyond the running ones.

    ``queues=None`` follows the queues in use (every queue with an enabled schedule or a
    pending one-off job, and ``default``), re-read at each heartbeat.

    With ``burst=True`` each thread exits once no job is ready (for scripts and tests).
    ``clock`` and ``sleep`` are injectable; ``history`` defaults to a database-backed store;
    ``backoff(attempt)`` gives the seconds before a failed attempt is retried.

    After :meth:`stop`, :meth:`run` waits at most ``shutdown_grace`` seconds (default:
    ``POSTBURNER_SHUTDOWN_GRACE``, 30) for the running
    attempts and the commits of their outcomes (retried while the database is away), then
    returns; :attr:`unfinished` then counts the attempts left behind (still running, or
    finished and not recorded), which Beanstalkd hands out again after their TTR and the
    dispatch log gives to the next attempt.

    :attr:`metrics` holds the worker's Prometheus series (``metrics``: give your own, e.g.
    with per-schedule labels); ``tracer_provider`` overrides OpenTelemetry's global one for
    the attempts' spans (:mod:`postburner_py.tracing`).
    """

    def __init__(
        self,
        pb: Postburner,
        *,
        queues: Sequence[str] | None = ("default",),
        concurrency: int = 1,
        prefetch: int | None = None,
        burst: bool = False,
        history: HistoryStore | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        reserve_timeout: float = RESERVE_TIMEOUT,
        backoff: Callable[[int], int] = default_backoff,
        shutdown_grace: float | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        metrics: WorkerMetrics | None = None,
        tracer_provider: Any = None,
    ) -> None:
        if shutdown_grace is None:
            shutdown_grace = pb.settings.shutdown_grace
        if not 0 <= shutdown_grace < float("inf"):
            raise ValueError(f"shutdown_grace: must be >= 0 seconds, got {shutdown_grace!r}")
        if concurrency < 1:
            raise ValueError("concurrency: must be >= 1")
        if prefetch is not None and prefetch < 0:
            raise ValueError("prefetch: must be >= 0 (0 holds no job beyond the running ones)")
        self.prefetch = concurrency if prefetch is None else prefetch
        self.pb = pb
        self.concurrency = concurrency
        self.burst = burst
        self.clock = clock or pb.clock
        self.sleep = sleep
        self.reserve_timeout = 0.0 if burst else reserve_timeout
        self.history = history or HistoryStore(pb.session_factory, clock=self.clock)
        self.backoff = backoff
        self.metrics = metrics or WorkerMetrics()
        self.tracer_provider = tracer_provider
        #: Beanstalkd's reachability over all threads: one line per outage, not per thread.
        self.queue_outage = QueueOutage(log, pb.queue.url)
        # One counter per thread, written only by its thread (no lock on the hot path).
        self._counts: list[Counter[Outcome]] = []
        self._counts_lock = threading.Lock()
        self._stopping = threading.Event()
        self.shutdown_grace = shutdown_grace
        self._deadline: float | None = None
        self._unrecorded = 0
        self._threads: list[threading.Thread] = []
        self._abandoned: set[threading.Thread] = set()
        #: With ``burst``: why the worker gave up (Beanstalkd unreachable), else None.
        self.failure: QueueUnavailableError | None = None
        self.heartbeat = Heartbeat(
            pb,
            queues=queues,
            concurrency=concurrency,
            jobs_run=self.jobs_run,
            clock=self.clock,
            interval=heartbeat_interval,
        )
        self._finished = threading.Event()

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues served now (they change at a heartbeat when following)."""
        return self.heartbeat.queues

    def jobs_run(self) -> int:
        """Deliveries whose job was called so far (completed, failed or retrying)."""
        return sum(count for outcome, count in self.outcomes.items() if outcome in RAN)

    def liveness(self) -> Verdict:
        """The health probe's liveness: the heartbeat loop ticked within three intervals
        and every serving thread is alive (a thread is only expected to end when stopping,
        in burst mode, or when replaced after a timeout)."""
        checks = {"heartbeat loop": self.heartbeat.pulse.check()}
        dead = self._dead_threads()
        checks["threads"] = OK if not dead else f"{dead} serving thread(s) ended unexpectedly"
        return Verdict.of(checks)

    def _dead_threads(self) -> int:
        if self.stopping or self.burst:
            return 0
        with self._counts_lock:
            serving = [t for t in self._threads if t not in self._abandoned]
        return sum(not thread.is_alive() for thread in serving)

    def run(self) -> None:
        """Run until :meth:`stop` (or, with ``burst``, until nothing is ready)."""
        self._start_heartbeat()
        services = RunnerServices.start(
            self.pb,
            self.history,
            self.clock,
            concurrency=self.concurrency,
            metrics=self.metrics,
            tracer_provider=self.tracer_provider,
        )
        self._threads, self._abandoned = [], set()
        try:
            for index in range(self.concurrency + self.prefetch):
                self._start_thread(index, services)
            self._join_threads()
        finally:
            services.close(until=self._deadline)
            self._finished.set()
            self.heartbeat.forget()
        if self.unfinished:
            log.error(
                "worker stopped after its %.0f s shutdown grace with %d attempt(s) unfinished "
                "or unrecorded: Beanstalkd hands them out again after their TTR and the next "
                "attempt takes over",
                self.shutdown_grace,
                self.unfinished,
            )
        outcomes = {str(outcome): count for outcome, count in self.outcomes.items()}
        log.info("worker stopped: %s", outcomes, extra=fields(WORKER_STOPPED, outcomes=outcomes))

    def _start_heartbeat(self) -> None:
        """Expire crashed workers' rows, write this one's first row (so a following worker
        knows its queues before it reserves), say what it serves, then beat on a thread."""
        try:
            self.heartbeat.expire_old_rows()
        except SQLAlchemyError as exc:
            log.debug("old worker heartbeats not expired: %s", exc)
        self.heartbeat.beat()
        log.info(
            "%s",
            self.describe(),
            extra=fields(
                WORKER_STARTED,
                node=self.pb.settings.node_id,
                queues=list(self.queues),
                concurrency=self.concurrency,
                prefetch=self.prefetch,
            ),
        )
        self.heartbeat.start(self._finished)

    def describe(self) -> str:
        """The startup line: who, which queues (and how they were chosen), how many threads."""
        queues = ",".join(self.queues)
        how = (
            "following the queues in use (every queue with schedules, and default)"
            if self.heartbeat.following
            else "as configured"
        )
        return (
            f"worker {self.pb.settings.node_id}: queues {queues} ({how}), concurrency "
            f"{self.concurrency}, prefetch {self.prefetch}{', burst' if self.burst else ''}"
            f"{self._unserved_note()}"
        )

    def _unserved_note(self) -> str:
        if self.heartbeat.following:
            return ""
        try:
            with self.pb.session() as session:
                in_use = self.pb.store.queues_in_use(session)
        except SQLAlchemyError:
            return ""
        unserved = sorted(set(in_use) - set(self.queues))
        if not unserved:
            return ""
        return (
            f"; NOT serving queues with schedules: {','.join(unserved)} "
            "(start a worker with --queue for each, or one without --queue for all)"
        )

    def stop(self) -> None:
        """Stop reserving; running attempts get ``shutdown_grace`` seconds to finish and be
        recorded."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.shutdown_grace
        self._stopping.set()

    @property
    def unfinished(self) -> int:
        """Attempts a stopped worker left behind: threads still in a job past the grace,
        and finished attempts whose outcome could not be recorded."""
        with self._counts_lock:
            serving = [t for t in self._threads if t not in self._abandoned]
        return sum(thread.is_alive() for thread in serving) + self._unrecorded

    @property
    def abandoned_threads(self) -> int:
        """Threads left in a job that ran past its ``timeout`` (replaced by new ones)."""
        with self._counts_lock:
            return len(self._abandoned)

    def _start_thread(self, index: int, services: RunnerServices) -> None:
        # Daemon threads: one stuck in a job that never returns cannot keep the process
        # alive past the shutdown grace.
        thread = threading.Thread(
            target=self._thread_main, args=(index, services), name=f"worker-{index}", daemon=True
        )
        with self._counts_lock:
            self._threads.append(thread)
        thread.start()

    def _replace_thread(self, thread: threading.Thread, services: RunnerServices) -> None:
        """``thread`` was abandoned in a job past its timeout: start one in its place."""
        with self._counts_lock:
            self._abandoned.add(thread)
            index = len(self._threads)
        if not self._stopping.is_set():
            self._start_thread(index, services)

    def _join_threads(self) -> None:
        """Wait for the serving threads (threads started meanwhile included), at most until
        the shutdown deadline once :meth:`stop` was called."""
        joined = 0
        while True:
            with self._counts_lock:
                if joined >= len(self._threads):
                    return
                thread = self._threads[joined]
                abandoned = thread in self._abandoned
            deadline = self._deadline
            if deadline is not None and time.monotonic() >= deadline:
                return
            if abandoned or not thread.is_alive():
                joined += 1
                continue
            thread.join(timeout=OUTCOME_WAIT)

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
            on_abandoned=lambda: self._replace_thread(this_thread, services),
        )
        this_thread = threading.current_thread()
        counts: Counter[Outcome] = Counter()
        with self._counts_lock:
            self._counts.append(counts)
        try:
            self._loop(runner, counts)
        except Exception:
            # A bug, not a job's failure (those never reach here): say so, and let the
            # liveness probe see the thread gone.
            log.exception("serving thread %s ended unexpectedly", worker_id)
        finally:
            until = self._deadline or time.monotonic() + self.shutdown_grace
            counts.update(runner.close(until=until))
            with self._counts_lock:
                self._unrecorded += runner.unsettled

    def _loop(self, runner: JobRunner, counts: Counter[Outcome]) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            counts.update(runner.flush(wait=False))
            if runner.waiting_for_database:
                # Take no new job while an outcome waits for the database (its admission
                # would fail too): retry the outcome, keeping its job and lease alive.
                counts.update(runner.flush(wait=True, until=time.monotonic() + OUTCOME_WAIT))
                continue
            # While outcomes are being committed, only take a job that is ready now: with
            # none ready, act on those outcomes first rather than hold them through a wait.
            timeout = 0.0 if runner.unsettled else self.reserve_timeout
            deletes = runner.take_deletes()
            try:
                job = self.pb.queue.reserve(self.queues, timeout, delete_first=deletes)
            except QueueUnavailableError as exc:
                if deletes:
                    # Their outcomes are recorded: back after the TTR, the log turns them away.
                    log.debug("jobs %s may not be deleted: %s", deletes, exc)
                self.queue_outage.unreachable(exc)
                if self.burst:  # a script waits for this worker: give up, do not wait
                    self.failure = exc
                    return
                backoff = self._back_off(backoff)
                continue
            backoff = 0.0
            self.queue_outage.reachable()
            if job is None:
                if runner.unsettled:
                    counts.update(runner.flush(wait=True, until=time.monotonic() + OUTCOME_WAIT))
                elif self.burst:
                    return
                continue
            outcome = self._handle(runner, job)
            if outcome is not None:
                counts[outcome] += 1
            if runner.abandoned:
                return  # its job ran past its timeout; another thread serves in its place

    def _handle(self, runner: JobRunner, job: QueuedJob) -> Outcome | None:
        try:
            return runner.handle(job)
        except QueueUnavailableError as exc:
            self.queue_outage.unreachable(exc)
            log.debug("Beanstalkd went away while handling job %s: %s", job.id, exc)
        except Exception:
            log.exception("job %s could not be handled; it returns after its TTR", job.id)
        return None

    def _back_off(self, previous: float) -> float:
        delay = min(MAX_BACKOFF, max(0.1, previous * 2))
        self._stopping.wait(delay)
        return delay


def run_worker(
    pb: Postburner,
    *,
    queues: Sequence[str] | None = ("default",),
    concurrency: int = 1,
    prefetch: int | None = None,
    burst: bool = False,
    shutdown_grace: float | None = None,
    health: HealthOptions | None = None,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
    per_schedule_metrics: bool = False,
) -> int:
    """Run a worker in the foreground with signal handling; returns the exit code: 0, or 1
    when the shutdown grace ran out with attempts unfinished or unrecorded.

    ``queues=None`` follows the queues in use (see :class:`Worker`). With ``health``, the
    probes (:mod:`postburner_py.health`) are served while it runs. With ``metrics_port``, its
    Prometheus metrics are served on ``http://metrics_host:metrics_port/metrics`` (default
    host 127.0.0.1: this machine only); ``per_schedule_metrics`` adds a ``schedule`` label
    (one series per schedule).

    With ``burst``, Beanstalkd becoming unreachable ends the run with
    :class:`~postburner_py.errors.QueueUnavailableError` (after the running jobs finish).
    """
    worker = Worker(
        pb,
        queues=queues,
        concurrency=concurrency,
        prefetch=prefetch,
        burst=burst,
        shutdown_grace=shutdown_grace,
        metrics=WorkerMetrics(per_schedule=per_schedule_metrics),
    )
    if threading.current_thread() is threading.main_thread():
        _install_signal_handlers(worker)
    probes = None if health is None else health.serve(worker.liveness, lambda: servers_ready(pb))
    server = (
        None
        if metrics_port is None
        else serve_metrics(worker.metrics.registry, metrics_port, metrics_host)
    )
    try:
        worker.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if probes is not None:
            probes.close()
    if worker.failure is not None:
        raise worker.failure
    return 1 if worker.unfinished else 0


def _install_signal_handlers(worker: Worker) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info(
            "signal %d: finishing running jobs (at most %.0f s), then stopping",
            signum,
            worker.shutdown_grace,
        )
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
