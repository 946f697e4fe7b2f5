"""One delivery of one Beanstalkd job, from signature check to history.

The order is what makes a delivery safe to repeat (see ``docs/worker.md``):

1. verify the body's signature (a forged body is buried; its job_class is never imported);
2. release a job that arrived a second or more before its (signed) ``run_at``;
3. admission (:mod:`postburner_py.worker.admission`), in one transaction shared with the other
   threads' writes (:mod:`postburner_py.worker.ledger`): load and lock the row and fence (it must
   still be live for that ``run_at``), check the job class against the allow-list (before
   any import), claim the occurrence in the dispatch log and record the start (a late
   occurrence that is not caught up is recorded ``missed`` instead);
4. wait out the sub-second rest of ``run_at``;
5. ask the chainer for the next execution, then run the job on this thread while the lease
   keeper (:mod:`postburner_py.worker.lease_keeper`) touches the Beanstalkd job and renews the lease
   (and fails the attempt once it runs past its ``timeout``);
6. record the outcome (:mod:`postburner_py.worker.settlement`, batched the same way; retried with
   backoff while the database is away), then, once it committed, delete, release (retry
   with backoff) or bury the job.

From admission until its outcome is committed the job is *held*: touched and its lease
renewed every third of its TTR, by this thread between its own uses of its connection and
by the lease keeper while this thread runs a job, the touch and the renewal each whatever
became of the other (the lease is the gate).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from postburner_py.clock import Clock
from postburner_py.context import ExecutionContext, PartialSuccess, running
from postburner_py.errors import (
    JobImportError,
    JobNotAllowedError,
    JobTimeoutError,
    SignatureError,
)
from postburner_py.keys import idempotency_key
from postburner_py.logs import (
    DELIVERY_TURNED_AWAY,
    RUN_FAILED,
    RUN_FINISHED,
    RUN_STARTED,
    RUN_TIMED_OUT,
    fields,
)
from postburner_py.queue.beanstalk import QueuedJob
from postburner_py.queue.signing import decode_body
from postburner_py.schedules.placeholders import render_arguments as fill_placeholders
from postburner_py.store import store_for
from postburner_py.store.dispatch_log import (
    Claim,
    ClaimOutcome,
    SqlDispatchRegistry,
)
from postburner_py.store.dispatch_records import WAIT_POLL_SECONDS, DispatchStatus
from postburner_py.store.history import HistoryEntry, HistoryStatus, HistoryStore
from postburner_py.tracing import AttemptTracer, attempt_tracer
from postburner_py.validation import DEFAULT_PRIORITY
from postburner_py.worker.admission import Admission, AdmitRequest, Admitter, Occurrence, Outcome
from postburner_py.worker.answer import Answer
from postburner_py.worker.chainer import Chainer
from postburner_py.worker.fast_path import worker_ledger
from postburner_py.worker.job_loader import resolve_job
from postburner_py.worker.lease_keeper import LeaseKeeper
from postburner_py.worker.ledger import Ledger
from postburner_py.worker.metrics import WorkerMetrics
from postburner_py.worker.results import storable_result
from postburner_py.worker.settlement import Settlement, Settler
from postburner_py.worker.slots import RunSlots

if TYPE_CHECKING:
    from postburner_py.app import Postburner

__all__ = ["JobRunner", "Occurrence", "Outcome", "RunnerServices", "default_backoff"]

log = logging.getLogger("postburner_py.worker")

T = TypeVar("T")
Sleep = Callable[[float], None]

#: Seconds the chainer waits after a first request before it serves what has come.
CHAIN_LINGER = 0.1
#: Longest a finished job's bookkeeping waits for due jobs to start (see
#: postburner_py.worker.slots).
YIELD_TO_STARTS = 0.02
#: Seconds before an outcome the database could not take is tried again: doubling from the
#: first, never longer than the last, for as long as the database is away.
OUTCOME_RETRY_FIRST = 0.1
OUTCOME_RETRY_MAX = 2.0


@dataclass(frozen=True)
class RunnerServices:
    """What the runners of one worker process share: the group-commit ledger with its two
    batch handlers, the chainer, the lease keeper, and the slots that bound how many jobs
    run at once."""

    ledger: Ledger
    admitter: Admitter
    settler: Settler
    chainer: Chainer
    keeper: LeaseKeeper
    #: One per job that may run at once (the worker's concurrency).
    slots: RunSlots
    #: The worker's Prometheus series.
    metrics: WorkerMetrics
    #: Spans per attempt (None: OpenTelemetry is not installed or not configured).
    tracing: AttemptTracer | None = None

    @classmethod
    def start(
        cls,
        pb: Postburner,
        history: HistoryStore,
        clock: Clock,
        *,
        concurrency: int,
        metrics: WorkerMetrics | None = None,
        tracer_provider: Any = None,
    ) -> RunnerServices:
        """Start the ledger, chainer and keeper threads (stop them with :meth:`close`)."""
        registry = SqlDispatchRegistry(pb.session_factory, clock=clock)
        admitter, settler = Admitter(pb, registry, history), Settler(history)
        return cls(
            ledger=worker_ledger(pb.writer_engine, admitter, settler),
            admitter=admitter,
            settler=settler,
            chainer=Chainer(pb, clock=clock, linger=CHAIN_LINGER),
            keeper=LeaseKeeper(),
            slots=RunSlots(concurrency),
            metrics=metrics or WorkerMetrics(),
            tracing=attempt_tracer(tracer_provider),
        )

    def close(self, *, until: float | None = None) -> None:
        """Commit what is queued and chain what was asked for, then stop the threads (the
        ledger's waits at most until the monotonic instant ``until``)."""
        self.ledger.close(until=until)
        self.chainer.close()
        self.keeper.close()


def default_backoff(attempt: int) -> int:
    """Seconds before retry number ``attempt`` (1-based): 2, 4, 8 ... capped at one hour."""
    return int(min(3600, 2**attempt))


class JobRunner:
    """Handles deliveries for one worker thread (which owns the Beanstalkd connection)."""

    def __init__(
        self,
        pb: Postburner,
        *,
        worker_id: str,
        history: HistoryStore,
        services: RunnerServices,
        clock: Clock,
        sleep: Sleep = time.sleep,
        backoff: Callable[[int], int] = default_backoff,
        on_abandoned: Callable[[], None] | None = None,
    ) -> None:
        self.pb = pb
        self.worker_id = worker_id
        #: Called (from the lease keeper's thread) when this runner's thread is abandoned in
        #: a job past its timeout: the worker starts a thread to replace it.
        self.on_abandoned = on_abandoned
        #: True once this runner's thread was abandoned: it ends when its job returns.
        self.abandoned = False
        self._running: _Run | None = None
        self.history = history
        self.services = services
        self.registry = SqlDispatchRegistry(pb.session_factory, node_id=worker_id, clock=clock)
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self._unsettled: deque[_Unsettled] = deque()
        self._deletes: list[int] = []
        #: The reserved jobs of attempts under way or whose outcome is not committed yet, by
        #: Beanstalkd job id: kept alive (touched, lease renewed) until the outcome commits.
        self._held: dict[int, _Held] = {}

    def close(self, *, until: float | None = None) -> list[Outcome]:
        """Act on the outcomes still pending (waiting for their commit, retried while the
        database is away, at most until the monotonic instant ``until``), deletes included."""
        outcomes = self.flush(wait=True, until=until)
        if self._unsettled:
            log.error(
                "stopping with %d finished attempt(s) not recorded (%s): the database is "
                "away; each is run again as its next attempt after its TTR",
                len(self._unsettled),
                ", ".join(item.run.occurrence.key for item in self._unsettled),
            )
        for job_id in self.take_deletes():
            self.pb.queue.delete(job_id)
        return outcomes

    def keep_alive(self) -> None:
        """Touch the held jobs and renew their leases where a renewal is due, and hand the
        ledger again the outcomes whose retry is due. Called by this runner's thread between
        its own uses of its connection, and by the lease keeper while the thread runs a job
        (never both at once: see :mod:`postburner_py.worker.lease_keeper`)."""
        now = time.monotonic()
        self._abandon_if_overdue(now)
        for held in self._held.values():
            if held.due <= now:
                held.renew()
        for item in self._unsettled:
            self._retry_if_due(item, now)
        if self.abandoned:
            self._act_on_committed([])  # nobody else will (the thread is in its job)

    @property
    def waiting_for_database(self) -> bool:
        """True while an outcome could not be recorded and waits for its retry: the thread
        then takes no new job (its admission would fail too) and keeps its held jobs alive."""
        return any(item.failures for item in self._unsettled)

    def handle(self, job: QueuedJob) -> Outcome | None:
        """Process one reserved job; the job is deleted, released or buried, at once or (for
        an attempt that ran: None is returned) by :meth:`flush` once its outcome committed."""
        try:
            body = decode_body(job.body, self.pb.secret())
        except SignatureError as exc:
            log.error(
                "burying job %s: %s (its job class is never imported)",
                job.id,
                exc,
                extra=fields(DELIVERY_TURNED_AWAY, outcome=str(Outcome.FORGED), job_id=job.id),
            )
            self.pb.queue.bury(job.id, priority=DEFAULT_PRIORITY)
            self.services.metrics.turned_away(Outcome.FORGED, None)
            return Outcome.FORGED
        early = (body.run_at - self.clock()).total_seconds()
        if early >= 1:
            self.pb.queue.release(job.id, priority=_priority_of(self.pb, job), delay=int(early))
            self.services.metrics.turned_away(Outcome.EARLY, None)
            return Outcome.EARLY
        admitter = self.services.admitter
        request = AdmitRequest(body, self.clock(), self.worker_id)
        if self.services.ledger.has_fast_path:
            request = admitter.prepare(request)
        admission = admitter.answer(self.services.ledger.call(admitter, request))
        if admission.outcome is not None:
            outcome = self._turned_away(job, admission)
            self.services.metrics.turned_away(outcome, admission.occurrence)
            return outcome
        assert admission.occurrence is not None and admission.claim is not None
        if admission.claim.outcome is ClaimOutcome.TAKEN_OVER:
            self.services.metrics.taken_over(admission.occurrence)
        if admission.started is None:
            return self._not_running(job, admission.occurrence, admission.claim)
        return self._attempt(
            job, admission.occurrence, admission.claim.attempt, admission.started, request.now
        )

    def _turned_away(self, job: QueuedJob, admission: Admission) -> Outcome:
        occurrence = admission.occurrence
        if admission.outcome is Outcome.REFUSED and occurrence is not None:
            self.pb.queue.bury(job.id, priority=occurrence.priority)
            return Outcome.REFUSED
        if admission.outcome is Outcome.MISSED and occurrence is not None:
            self._chain(occurrence)
        if admission.outcome is Outcome.FENCED:
            log.info(
                "dropping job %s: its row is no longer scheduled for that time",
                job.id,
                extra=fields(DELIVERY_TURNED_AWAY, outcome=str(Outcome.FENCED), job_id=job.id),
            )
        self.pb.queue.delete(job.id)
        return admission.outcome or Outcome.FENCED

    def _idempotency_key(self, occurrence: Occurrence) -> str:
        return idempotency_key(self.pb.settings.namespace, occurrence.key, occurrence.run_at)

    def _not_running(self, job: QueuedJob, occurrence: Occurrence, claim: Claim) -> Outcome:
        if claim.outcome is ClaimOutcome.WAITING:
            # Another occurrence of the schedule runs: look again shortly, so this one
            # starts within about a second of the other's end.
            self.pb.queue.release(job.id, priority=occurrence.priority, delay=WAIT_POLL_SECONDS)
            self._chain_when_due(occurrence)
            return Outcome.WAITING
        if claim.outcome is ClaimOutcome.OVERLAP:
            self.pb.queue.delete(job.id)
            self._chain_when_due(occurrence)
            return Outcome.SKIPPED_OVERLAP
        if claim.outcome is ClaimOutcome.BUSY and claim.entry is not None:
            lease_end = claim.entry.lease_expires_at or self.clock()
            wait = max(1, math.ceil((lease_end - self.clock()).total_seconds()) + 1)
            # Another delivery holds a live lease: look again once it could have expired,
            # so a worker that dies now does not take the occurrence with it.
            self.pb.queue.release(job.id, priority=occurrence.priority, delay=wait)
            self.services.metrics.turned_away(Outcome.BUSY, occurrence)
            return Outcome.BUSY
        if claim.outcome is ClaimOutcome.FINISHED and claim.entry.status is DispatchStatus.FAILED:
            # A buried job kicked by hand: keep it buried (visible in postburner buried); a
            # retry is postburner retry, which reopens the occurrence first.
            log.error(
                "job %s: %s at %s failed for good; burying it again (run it once more with "
                "postburner retry --schedule NAME --at %s)",
                job.id,
                occurrence.key,
                occurrence.run_at.isoformat(),
                occurrence.run_at.isoformat(),
            )
            self.pb.queue.bury(job.id, priority=occurrence.priority)
            return Outcome.DUPLICATE
        self.pb.queue.delete(job.id)
        self.services.metrics.turned_away(Outcome.DUPLICATE, occurrence)
        return Outcome.DUPLICATE

    # --- running -------------------------------------------------------------------------

    def _attempt(
        self,
        job: QueuedJob,
        occurrence: Occurrence,
        attempt: int,
        started: HistoryEntry,
        admitted_at: datetime,
    ) -> Outcome | None:
        """Run the admitted attempt and hand its outcome to the ledger (None: it ran),
        :attr:`Outcome.BUSY` when its lease turned out to be taken over before it started, or
        :attr:`Outcome.WITHDRAWN` when its execution was retired before its start instant."""
        self._hold(job, occurrence, attempt)
        try:
            run = self._run(job, occurrence, attempt, started, admitted_at)
        except _Withdrawn:
            self._held.pop(job.id, None)
            self._withdraw(job, occurrence, attempt, started)
            return Outcome.WITHDRAWN
        except _LeaseLost:
            self._held.pop(job.id, None)
            log.error(
                "%s attempt %d not started: its lease lapsed while it waited and another "
                "delivery took the occurrence over",
                occurrence.key,
                attempt,
            )
            return Outcome.BUSY
        except BaseException:
            # Nothing was handed to the ledger: the job returns after its TTR.
            self._held.pop(job.id, None)
            raise
        if self.abandoned:
            log.warning(
                "%s attempt %d returned after its timeout: its result is ignored",
                occurrence.key,
                attempt,
            )
            return None
        self.services.slots.yield_to_starts(YIELD_TO_STARTS)
        if run.error is not None:
            self._failed(run, run.error)
        else:
            self._succeeded(run, run.result)
        return None

    def _run(
        self,
        job: QueuedJob,
        occurrence: Occurrence,
        attempt: int,
        started: HistoryEntry,
        admitted_at: datetime,
    ) -> _Run:
        slots = self.services.slots
        start_at = occurrence.start_at
        announced = slots.starting(self._until(start_at))
        interval = _renew_interval(occurrence)
        try:
            self._wait_until(start_at, interval)
            self._take_slot(interval)
            began_at = self.clock()
        finally:
            slots.started(announced)
        if not self._lease_confirmed(job.id):
            slots.release()
            raise _LeaseLost
        if admitted_at < start_at and not self._still_scheduled(occurrence):
            slots.release()
            raise _Withdrawn
        try:
            context = self._context(occurrence, attempt, started)
            run = _Run(job, occurrence, attempt, started, began_at=began_at)
            # The next execution is chained as this attempt starts: once run_at has come (so
            # it never coexists with this one as a second live future), by the chainer's
            # thread, so chaining never delays a start.
            self._chain(occurrence)
            self._announce_start(run)
            began = time.perf_counter()
            self._running = run
            if occurrence.timeout is not None:
                run.deadline = time.monotonic() + occurrence.timeout
            with self.services.keeper.keeping(self.keep_alive, self._keeper_interval()):
                self._call_job(run, context)
            self._running = None
            run.elapsed_ms = (time.perf_counter() - began) * 1000
        finally:
            if not self.abandoned:  # an abandoned attempt's slot went back when it was
                slots.release()
        return run

    def _call_job(self, run: _Run, context: ExecutionContext) -> None:
        """Call the job (inside its span, when traced): its result or what it raised."""
        try:
            if run.span is None:
                run.result = self._invoke(run.occurrence, context)
            else:
                with AttemptTracer.current(run.span):
                    run.result = self._invoke(run.occurrence, context)
        except BaseException as exc:  # whatever a job raises fails its attempt only
            run.error = exc

    def _announce_start(self, run: _Run) -> None:
        """The start's metrics, span and log line (fields built only when INFO is on)."""
        occurrence = run.occurrence
        lateness = (run.began_at - occurrence.start_at).total_seconds()
        self.services.metrics.attempt_started(occurrence, lateness)
        if self.services.tracing is not None:
            run.span = self.services.tracing.start(occurrence, run.attempt, run.began_at)
        if log.isEnabledFor(logging.INFO):
            run_at = occurrence.run_at.isoformat()
            log.info(
                "run.started %s run_at %s attempt %d lateness %.3f s",
                occurrence.key,
                run_at,
                run.attempt,
                lateness,
                extra=fields(
                    RUN_STARTED,
                    schedule=occurrence.key,
                    run_at=run_at,
                    attempt=run.attempt,
                    lateness=lateness,
                    queue=occurrence.queue,
                    job_id=run.job.id,
                ),
            )

    def _announce_finish(
        self, run: _Run, outcome: Outcome, error: BaseException | None, retry_in: int | None
    ) -> None:
        """The end's metrics, span and log line: INFO, or ERROR with the traceback."""
        occurrence = run.occurrence
        seconds = run.elapsed_ms / 1000
        self.services.metrics.attempt_finished(occurrence, outcome, seconds)
        if run.span is not None:
            AttemptTracer.end(run.span, str(outcome), error)
        level = logging.INFO if error is None else logging.ERROR
        if not log.isEnabledFor(level):
            return
        run_at = occurrence.run_at.isoformat()
        line = fields(
            RUN_FINISHED if error is None else RUN_FAILED,
            schedule=occurrence.key,
            run_at=run_at,
            attempt=run.attempt,
            lateness=(run.began_at - occurrence.start_at).total_seconds(),
            duration=seconds,
            outcome=str(outcome),
            queue=occurrence.queue,
            job_id=run.job.id,
        )
        if error is None:
            log.info(
                "run.finished %s run_at %s attempt %d: %s in %.3f s",
                occurrence.key,
                run_at,
                run.attempt,
                outcome,
                seconds,
                extra=line,
            )
            return
        line["retry_in"] = retry_in
        log.error(
            "run.failed %s run_at %s attempt %d of %d after %.3f s: %s; %s",
            occurrence.key,
            run_at,
            run.attempt,
            occurrence.max_attempts,
            seconds,
            _describe(error),
            f"retry in {retry_in} s" if retry_in is not None else "no retry",
            exc_info=error,
            extra=line,
        )

    def _still_scheduled(self, occurrence: Occurrence) -> bool:
        """The start-instant re-check of an attempt admitted ahead of its start: is its
        execution still ``scheduled`` for that ``run_at`` (not disabled, skipped or changed
        meanwhile)? One primary-key read, only for attempts that waited. A database that
        cannot answer does not stop the start (the admission's fencing stands)."""
        if occurrence.kind != "execution":
            return True  # a one-off job's cancel() refuses a claimed job
        try:
            with self.pb.session() as session:
                return store_for(session).still_scheduled(
                    session, occurrence.row_id, occurrence.run_at
                )
        except (OperationalError, InterfaceError) as exc:
            log.warning("could not re-check %s before its start: %s", occurrence.key, exc)
            return True

    def _withdraw(
        self, job: QueuedJob, occurrence: Occurrence, attempt: int, started: HistoryEntry
    ) -> None:
        """Undo the claim of an attempt whose execution was retired before it started: the
        dispatch row becomes ``skipped``, its start record goes, its job is deleted."""
        log.info(
            "%s at %s not started: its execution was retired before its start instant",
            occurrence.key,
            occurrence.run_at.isoformat(),
        )
        with self.pb.work_session() as session:
            store_for(session).withdraw_attempt(
                session,
                occurrence.key,
                occurrence.run_at,
                attempt=attempt,
                history_id=started.id,
                now=self.clock(),
            )
            session.commit()
        self.pb.queue.delete(job.id)

    def _abandon_if_overdue(self, now: float) -> None:
        """Fail the running attempt once it ran past its ``timeout``: the keeper records the
        failure, gives its slot back and asks for a thread to replace this one, which stays
        in the job (Python cannot stop it) and ends when the job returns, its result
        ignored. The job is no longer touched: it comes back after its TTR, and the dispatch
        log then runs the next attempt or, with none left, turns it away."""
        run = self._running
        if run is None or run.deadline is None or now < run.deadline or self.abandoned:
            return
        self.abandoned = True
        self._held.pop(run.job.id, None)
        run.elapsed_ms = (run.occurrence.timeout or 0.0) * 1000
        log.error(
            "%s attempt %d ran past its %s s timeout: failed, its thread abandoned",
            run.occurrence.key,
            run.attempt,
            run.occurrence.timeout,
            extra=fields(RUN_TIMED_OUT, schedule=run.occurrence.key, attempt=run.attempt),
        )
        self._failed(
            run,
            JobTimeoutError(
                f"ran longer than its timeout of {run.occurrence.timeout} s; the attempt "
                "was failed and its worker thread abandoned"
            ),
        )
        self.services.slots.release()
        if self.on_abandoned is not None:
            self.on_abandoned()

    def _lease_confirmed(self, job_id: int) -> bool:
        """Whether the held attempt may start. A lease confirmed within the last renewal
        interval is live (it runs a whole TTR); an older one (the thread waited long for its
        instant or a slot, or the machine stalled) is renewed first, because a lease that
        lapsed may have been taken over, and then the occurrence is no longer this attempt's.
        A renewal the database cannot answer does not stop the start: nobody can take the
        occurrence over while the database is away, and the job stays touched."""
        held = self._held[job_id]
        if not held.lost and time.monotonic() - held.confirmed < held.interval:
            return True
        if not held.lost:
            held.renew()
        return not held.lost

    def _hold(self, job: QueuedJob, occurrence: Occurrence, attempt: int) -> None:
        self._held[job.id] = _Held(
            job.id,
            occurrence.key,
            _renew_interval(occurrence),
            touch=self._toucher(job),
            renew_lease=self._lease_renewal(occurrence, attempt),
        )

    def _keeper_interval(self) -> float:
        """How often the keeper calls :meth:`keep_alive` while this thread runs a job: as
        often as the most frequent renewal, and often enough to retry outcomes."""
        interval = min(held.interval for held in self._held.values())
        run = self._running
        if run is not None and run.occurrence.timeout is not None:
            interval = min(interval, max(0.05, run.occurrence.timeout))
        return min(interval, OUTCOME_RETRY_MAX) if self._unsettled else interval

    def _take_slot(self, interval: float) -> None:
        """Wait for one of the worker's ``concurrency`` slots, keeping the job and its lease
        alive meanwhile (a prefetched job waits here while the slots run others)."""
        while not self.services.slots.acquire(timeout=interval):
            self.keep_alive()

    def _chain_when_due(self, occurrence: Occurrence) -> None:
        """Chain the occurrence after one that will not run now (skipped or waiting for the
        one running), once its ``run_at`` has come, as a start would: the grid goes on, and
        the next occurrence never coexists with this one as a second live future."""
        self._wait_until(occurrence.run_at, _renew_interval(occurrence))
        self._chain(occurrence)

    def _chain(self, occurrence: Occurrence) -> None:
        if occurrence.schedule_id is not None:
            self.services.chainer.request(occurrence.schedule_id, occurrence.run_at)

    def _wait_until(self, run_at: datetime, interval: float) -> None:
        """Wait out the rest of ``run_at``; a wait longer than a third of the TTR (a job
        reserved up to a second early, a TTR of 1 or 2 s) keeps the job and lease alive."""
        remaining = self._until(run_at)
        while remaining > interval:
            self.sleep(interval)
            self.keep_alive()
            remaining = min(remaining - interval, self._until(run_at))
        if remaining > 0:
            self.sleep(remaining)

    def _until(self, instant: datetime) -> float:
        return (instant - self.clock()).total_seconds()

    def _context(
        self, occurrence: Occurrence, attempt: int, started: HistoryEntry
    ) -> ExecutionContext:
        delayed = occurrence.kind == "delayed"
        return ExecutionContext(
            execution_id=None if delayed else occurrence.row_id,
            job_id=occurrence.history_job_id if delayed else None,
            key=occurrence.key,
            run_at=occurrence.run_at,
            attempt=attempt,
            # The start record's correlation id is this occurrence's idempotency key.
            idempotency_key=started.correlation_id or self._idempotency_key(occurrence),
        )

    def _invoke(self, occurrence: Occurrence, context: ExecutionContext) -> Any:
        function = _import_job(occurrence.job_class, self.pb.settings.allowed_job_prefixes)
        args, kwargs = render_arguments(occurrence, context)
        with running(context):
            return function(*args, **kwargs)

    def _toucher(self, job: QueuedJob) -> Callable[[], None]:
        """A touch of ``job`` on this thread's connection (the one that reserved it)."""
        return self.pb.queue.toucher(job.id)

    def _lease_renewal(self, occurrence: Occurrence, attempt: int) -> Callable[[], bool]:
        """A renewal of the attempt's dispatch lease: the gate, renewed on its own (whatever
        became of the touch) until the attempt's outcome is committed; False once another
        attempt owns the occurrence."""

        def renew() -> bool:
            return self.registry.renew(
                occurrence.key,
                occurrence.run_at,
                attempt=attempt,
                lease_seconds=occurrence.ttr,
                now=self.clock(),
            )

        return renew

    def _succeeded(self, run: _Run, result: Any) -> None:
        if isinstance(result, PartialSuccess):
            results = storable_result(result.results)
            self._settle(run, HistoryStatus.PARTIAL_SUCCESS, Outcome.PARTIAL, results=results)
        else:
            # A plain return value is kept as the run's result (``worker/results.py``).
            results = storable_result(result)
            self._settle(run, HistoryStatus.COMPLETED, Outcome.COMPLETED, results=results)

    def _failed(self, run: _Run, error: BaseException) -> None:
        occurrence = run.occurrence
        retry = run.attempt < occurrence.max_attempts and not _never_retried(error, occurrence)
        outcome = Outcome.RETRYING if retry else Outcome.FAILED
        self._settle(run, HistoryStatus.FAILED, outcome, error=error, retry=retry)

    def _settle(
        self,
        run: _Run,
        status: HistoryStatus,
        outcome: Outcome,
        *,
        results: Any = None,
        error: BaseException | None = None,
        retry: bool = False,
    ) -> None:
        """Hand the outcome to the ledger; the job is deleted, released or buried by
        :meth:`flush` once it committed (the thread meanwhile reserves its next job)."""
        retry_in = self.backoff(run.attempt) if outcome is Outcome.RETRYING else None
        self._announce_finish(run, outcome, error, retry_in)
        settlement = Settlement(
            occurrence=run.occurrence,
            attempt=run.attempt,
            started=run.started,
            worker_id=self.worker_id,
            began_at=run.began_at,
            finished_at=self.clock(),
            elapsed_ms=run.elapsed_ms,
            status=status,
            results=results,
            error=error,
            retry=retry,
        )
        if self.services.ledger.has_fast_path:
            settlement = self.services.settler.prepare(settlement)
        item = _Unsettled(run, outcome, settlement, retry_in=retry_in or 0)
        self._submit(item)
        self._unsettled.append(item)

    def _submit(self, item: _Unsettled) -> None:
        # A settlement may be handed in again: every statement it makes only closes what is
        # still open for its attempt, so one that did commit (its answer lost) changes nothing.
        item.future = self.services.ledger.submit(self.services.settler, item.settlement)

    @property
    def unsettled(self) -> int:
        """Finished attempts whose outcome is not committed and acted on yet."""
        return len(self._unsettled)

    def flush(self, *, wait: bool, until: float | None = None) -> list[Outcome]:
        """Act on the outcomes that committed (all of them, waiting, when ``wait``; at most
        until the monotonic instant ``until``): release for retry or bury each job, or keep it
        for :meth:`take_deletes` (the worker deletes it in the round trip of its next reserve).

        An outcome the database could not take (it is away) is handed in again with backoff
        (:data:`OUTCOME_RETRY_FIRST` doubling to :data:`OUTCOME_RETRY_MAX` seconds) for as
        long as it takes, its job touched and its lease renewed meanwhile: a finished attempt
        never looks like a dead worker's. Only another error (a bug, not an outage) drops an
        outcome, leaving its job to come back after its TTR for the dispatch log to decide.
        """
        done: list[Outcome] = []
        if not self._unsettled and not self._held:
            return done  # the common case between jobs: nothing held, nothing to do
        while True:
            self.keep_alive()
            self._act_on_committed(done)
            if not wait or not self._unsettled:
                return done
            timeout = self._next_wake()
            if until is not None:
                timeout = min(timeout, until - time.monotonic())
                if timeout <= 0:
                    return done
            self._wait_for_answer(timeout)

    def _act_on_committed(self, done: list[Outcome]) -> None:
        waiting: deque[_Unsettled] = deque()
        for item in self._unsettled:
            if item.future is None or not item.future.done():
                waiting.append(item)
                continue
            try:
                entry: HistoryEntry = item.future.result()
            except Exception as exc:
                if self._will_retry(item, exc):
                    waiting.append(item)
                else:
                    self._held.pop(item.run.job.id, None)
                continue
            self._held.pop(item.run.job.id, None)
            if item.failures:
                log.warning(
                    "outcome of %s attempt %d recorded after %d failed tries",
                    item.run.occurrence.key,
                    item.run.attempt,
                    item.failures,
                )
            self.history.observe(entry)
            done.append(item.outcome)
            if self.abandoned:
                # Another thread may not use this one's connection: the job comes back after
                # its TTR and the dispatch log decides as recorded.
                continue
            try:
                self._act(item, entry)
            except Exception as exc:
                # Recorded already: when the job comes back after its TTR, the dispatch log
                # turns it away (or retries it, as the record says).
                log.warning(
                    "job %s outcome recorded, queue action failed: %s", item.run.job.id, exc
                )
        self._unsettled = waiting

    def _will_retry(self, item: _Unsettled, exc: Exception) -> bool:
        """Plan the next try of an outcome the database did not take; False to drop it."""
        if not _database_away(exc):
            log.error(
                "could not record the outcome of job %s (%s attempt %d); it returns after its TTR",
                item.run.job.id,
                item.run.occurrence.key,
                item.run.attempt,
                exc_info=exc,
            )
            return False
        if not item.failures:
            log.warning(
                "could not record the outcome of %s attempt %d (%s): retrying while the "
                "database is away, its job and lease kept alive",
                item.run.occurrence.key,
                item.run.attempt,
                exc,
            )
        item.failures += 1
        item.delay = min(OUTCOME_RETRY_MAX, item.delay * 2 or OUTCOME_RETRY_FIRST)
        item.retry_at = time.monotonic() + item.delay
        item.future = None
        return True

    def _retry_if_due(self, item: _Unsettled, now: float) -> None:
        if item.future is None and item.retry_at <= now:
            self._submit(item)

    def _next_wake(self) -> float:
        """Seconds until a held job's renewal or an outcome's retry is due (at least 1 ms)."""
        now = time.monotonic()
        instants = [held.due for held in self._held.values()]
        instants += [item.retry_at for item in self._unsettled if item.future is None]
        return max(0.001, min(instants, default=now + OUTCOME_RETRY_MAX) - now)

    def _wait_for_answer(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the first outcome in flight to be answered."""
        pending = next((item.future for item in self._unsettled if item.future is not None), None)
        if pending is None:
            self.sleep(timeout)
            return
        # An error is acted on (and a retry planned) by the next round.
        with contextlib.suppress(Exception):
            pending.result(timeout=timeout)

    def take_deletes(self) -> list[int]:
        """The jobs :meth:`flush` left to delete (their outcomes committed)."""
        deletes, self._deletes = self._deletes, []
        return deletes

    def _act(self, item: _Unsettled, entry: HistoryEntry) -> None:
        """Release (for its retry), bury or (later) delete a job whose outcome committed;
        the failure itself was logged, with its traceback, when the attempt ended."""
        occurrence, job_id = item.run.occurrence, item.run.job.id
        if item.outcome is Outcome.RETRYING:
            self.pb.queue.release(job_id, priority=occurrence.priority, delay=item.retry_in)
        elif item.outcome is Outcome.FAILED:
            log.warning(
                "%s failed for good on attempt %d of %d (%s): its job is buried",
                occurrence.key,
                item.run.attempt,
                occurrence.max_attempts,
                entry.error_message,
            )
            self.pb.queue.bury(job_id, priority=occurrence.priority)
        else:
            self._deletes.append(job_id)


@dataclass
class _Unsettled:
    """An outcome handed to the ledger, waiting for its commit (``future`` None while it
    waits for its next try, at the monotonic instant ``retry_at``)."""

    run: _Run
    outcome: Outcome
    settlement: Settlement
    future: Answer | None = None
    failures: int = 0
    delay: float = 0.0
    retry_at: float = 0.0
    #: Seconds before the retry delivery of a failed attempt that is retried.
    retry_in: int = 0


@dataclass
class _Run:
    """One attempt under way: what it runs and when it really began."""

    job: QueuedJob
    occurrence: Occurrence
    attempt: int
    started: HistoryEntry
    began_at: datetime
    elapsed_ms: float = 0.0
    result: Any = None
    error: BaseException | None = None
    #: The monotonic instant its ``timeout`` runs out (None: no limit).
    deadline: float | None = None
    #: Its OpenTelemetry span, when traced.
    span: Any = None


def _renew_interval(occurrence: Occurrence) -> float:
    """Seconds between renewals of a held job: a third of its TTR (at least 0.2 s)."""
    return max(0.2, occurrence.ttr / 3)


class _Held:
    """A reserved job kept alive from its admission until its outcome is committed: touched
    (so Beanstalkd does not hand it out again) and its dispatch lease renewed (so no other
    delivery takes the occurrence over), each whatever became of the other."""

    def __init__(
        self,
        job_id: int,
        key: str,
        interval: float,
        *,
        touch: Callable[[], None],
        renew_lease: Callable[[], bool],
    ) -> None:
        self.job_id = job_id
        self.key = key
        self.interval = interval
        self.due = time.monotonic() + interval
        #: When the lease was last known live (monotonic): the claim, then each renewal.
        self.confirmed = time.monotonic()
        #: Another attempt owns the occurrence: a renewal found the lease taken over.
        self.lost = False
        self._touch = touch
        self._renew_lease = renew_lease
        self._failing: set[str] = set()

    def renew(self) -> None:
        self._try("touch the job", self._touch)
        asked = time.monotonic()
        renewed = self._try("renew the lease", self._renew_lease)
        if renewed is True:
            self.confirmed = asked
        elif renewed is False and not self.lost:
            self.lost = True
            log.error(
                "the lease of %s (job %s) was taken over by another delivery: this attempt "
                "no longer owns the occurrence",
                self.key,
                self.job_id,
            )
        self.due = time.monotonic() + self.interval

    def _try(self, what: str, action: Callable[[], T]) -> T | None:
        try:
            result = action()
        except Exception as exc:
            if what not in self._failing:  # once per outage, not every renewal
                self._failing.add(what)
                log.warning("could not %s of %s (job %s): %s", what, self.key, self.job_id, exc)
            return None
        self._failing.discard(what)
        return result


class _Withdrawn(Exception):
    """The held attempt's execution was retired before its start instant: it must not start."""


class _LeaseLost(Exception):
    """The held attempt's lease was taken over before it started: it must not start."""


def _import_job(job_class: str, allowed_prefixes: Sequence[str]) -> Callable[..., Any]:
    """:func:`resolve_job`, an import failure told as what it is and how to fix it."""
    try:
        return resolve_job(job_class, allowed_prefixes)
    except JobNotAllowedError:
        raise
    except (ImportError, AttributeError, TypeError) as exc:
        raise JobImportError(
            f"{job_class}: this worker cannot import it ({type(exc).__name__}: {exc}); run "
            "the worker where the application imports: from the application's directory "
            "(the working directory is on sys.path), with PYTHONPATH naming it, or with the "
            "application installed in the worker's environment (pip install -e .)"
        ) from exc


def _never_retried(error: BaseException, occurrence: Occurrence) -> bool:
    """Refused, not importable, or an instance of a class ``no_retry_on`` names (matched
    against the exception's classes as ``module.QualName``, built-ins also as ``QualName``)."""
    if isinstance(error, JobNotAllowedError | JobImportError):
        return True
    if not occurrence.no_retry_on:
        return False
    names = set()
    for cls in type(error).__mro__:
        names.add(f"{cls.__module__}.{cls.__qualname__}")
        if cls.__module__ == "builtins":
            names.add(cls.__qualname__)
    return not names.isdisjoint(occurrence.no_retry_on)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _database_away(exc: BaseException) -> bool:
    """True for errors of a database that cannot be reached or is restarting (worth trying
    again); False for errors a retry would repeat."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _priority_of(pb: Postburner, job: QueuedJob) -> int:
    stats = pb.queue.stats_job(job.id)
    return int(stats["pri"]) if stats else DEFAULT_PRIORITY


def render_arguments(
    occurrence: Occurrence, context: ExecutionContext
) -> tuple[list[Any], dict[str, Any]]:
    """Fill ``{{...}}`` placeholders of schedule files in the job's arguments."""
    return fill_placeholders(
        occurrence.args,
        occurrence.kwargs,
        key=occurrence.key,
        fire_time=occurrence.run_at,
        idempotency_key=context.idempotency_key,
    )
