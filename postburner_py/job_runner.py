"""One delivery of one Beanstalkd job, from signature check to history.

The order is what makes a delivery safe to repeat (see ``docs/worker.md``):

1. verify the body's signature (a forged body is buried; its job_class is never imported);
2. release a job that arrived a second or more before its (signed) ``run_at``;
3. admission (:mod:`postburner_py.admission`), in one transaction shared with the other
   threads' writes (:mod:`postburner_py.ledger`): load and lock the row and fence (it must
   still be live for that ``run_at``), check the job class against the allow-list (before
   any import), claim the occurrence in the dispatch log and record the start (a late
   occurrence that is not caught up is recorded ``missed`` instead);
4. wait out the sub-second rest of ``run_at``;
5. ask the chainer for the next execution, then run the job on this thread while the lease
   keeper (:mod:`postburner_py.lease_keeper`) touches the Beanstalkd job and renews the lease;
6. record the outcome (:mod:`postburner_py.settlement`, batched the same way), then, once it
   committed, delete, release (retry with backoff) or bury the job.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from postburner_py.admission import Admission, AdmitRequest, Admitter, Occurrence, Outcome
from postburner_py.answer import Answer
from postburner_py.beanstalk import QueuedJob
from postburner_py.chainer import Chainer
from postburner_py.context import ExecutionContext, PartialSuccess, running
from postburner_py.dispatch_log import Claim, ClaimOutcome, SqlDispatchRegistry, idempotency_key
from postburner_py.errors import JobNotAllowedError, SignatureError
from postburner_py.fast_path import worker_ledger
from postburner_py.history import HistoryEntry, HistoryStatus, HistoryStore
from postburner_py.job_loader import resolve_job
from postburner_py.lease_keeper import LeaseKeeper
from postburner_py.ledger import Ledger
from postburner_py.placeholders import render_arguments as fill_placeholders
from postburner_py.settlement import Settlement, Settler
from postburner_py.signing import decode_body
from postburner_py.slots import RunSlots
from postburner_py.validation import DEFAULT_PRIORITY

if TYPE_CHECKING:
    from postburner_py.app import Postburner

__all__ = ["JobRunner", "Occurrence", "Outcome", "RunnerServices", "default_backoff"]

log = logging.getLogger("postburner_py.worker")

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]

#: Seconds the chainer waits after a first request before it serves what has come.
CHAIN_LINGER = 0.1
#: Longest a finished job's bookkeeping waits for due jobs to start (see postburner_py.slots).
YIELD_TO_STARTS = 0.02


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

    @classmethod
    def start(
        cls, pb: Postburner, history: HistoryStore, clock: Clock, *, concurrency: int
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
        )

    def close(self) -> None:
        """Commit what is queued and chain what was asked for, then stop the threads."""
        self.ledger.close()
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
    ) -> None:
        self.pb = pb
        self.worker_id = worker_id
        self.history = history
        self.services = services
        self.registry = SqlDispatchRegistry(pb.session_factory, node_id=worker_id, clock=clock)
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self._unsettled: deque[_Unsettled] = deque()
        self._deletes: list[int] = []

    def close(self) -> list[Outcome]:
        """Act on the outcomes still pending (waiting for their commit), deletes included."""
        outcomes = self.flush(wait=True)
        for job_id in self.take_deletes():
            self.pb.queue.delete(job_id)
        return outcomes

    def handle(self, job: QueuedJob) -> Outcome | None:
        """Process one reserved job; the job is deleted, released or buried, at once or (for
        an attempt that ran: None is returned) by :meth:`flush` once its outcome committed."""
        try:
            body = decode_body(job.body, self.pb.secret())
        except SignatureError as exc:
            log.error("burying job %s: %s (its job class is never imported)", job.id, exc)
            self.pb.queue.bury(job.id, priority=DEFAULT_PRIORITY)
            return Outcome.FORGED
        early = (body.run_at - self.clock()).total_seconds()
        if early >= 1:
            self.pb.queue.release(job.id, priority=_priority_of(self.pb, job), delay=int(early))
            return Outcome.EARLY
        admitter = self.services.admitter
        request = AdmitRequest(body, self.clock(), self.worker_id)
        if self.services.ledger.has_fast_path:
            request = admitter.prepare(request)
        admission = admitter.answer(self.services.ledger.call(admitter, request))
        if admission.outcome is not None:
            return self._turned_away(job, admission)
        assert admission.occurrence is not None and admission.claim is not None
        if admission.started is None:
            return self._not_running(job, admission.occurrence, admission.claim)
        self._attempt(job, admission.occurrence, admission.claim.attempt, admission.started)
        return None

    def _turned_away(self, job: QueuedJob, admission: Admission) -> Outcome:
        occurrence = admission.occurrence
        if admission.outcome is Outcome.REFUSED and occurrence is not None:
            self.pb.queue.bury(job.id, priority=occurrence.priority)
            return Outcome.REFUSED
        if admission.outcome is Outcome.MISSED and occurrence is not None:
            self._chain(occurrence)
        if admission.outcome is Outcome.FENCED:
            log.info("dropping job %s: its row is no longer scheduled for that time", job.id)
        self.pb.queue.delete(job.id)
        return admission.outcome or Outcome.FENCED

    def _idempotency_key(self, occurrence: Occurrence) -> str:
        return idempotency_key(self.pb.settings.namespace, occurrence.key, occurrence.run_at)

    def _not_running(self, job: QueuedJob, occurrence: Occurrence, claim: Claim) -> Outcome:
        if claim.outcome is ClaimOutcome.BUSY and claim.entry is not None:
            lease_end = claim.entry.lease_expires_at or self.clock()
            wait = max(1, math.ceil((lease_end - self.clock()).total_seconds()) + 1)
            # Another delivery holds a live lease: look again once it could have expired,
            # so a worker that dies now does not take the occurrence with it.
            self.pb.queue.release(job.id, priority=occurrence.priority, delay=wait)
            return Outcome.BUSY
        self.pb.queue.delete(job.id)
        return Outcome.DUPLICATE

    # --- running -------------------------------------------------------------------------

    def _attempt(
        self, job: QueuedJob, occurrence: Occurrence, attempt: int, started: HistoryEntry
    ) -> None:
        slots = self.services.slots
        held = _Held(self._renewal(job, occurrence, attempt), occurrence)
        announced = slots.starting(self._until(occurrence.run_at))
        try:
            self._wait_until(occurrence.run_at, held)
            self._take_slot(held)
            began_at = self.clock()
        finally:
            slots.started(announced)
        error: Exception | None = None
        try:
            context = self._context(occurrence, attempt, started)
            run = _Run(job, occurrence, attempt, started, began_at=began_at)
            # The next execution is chained as this attempt starts: once run_at has come (so
            # it never coexists with this one as a second live future), by the chainer's
            # thread, so chaining never delays a start.
            self._chain(occurrence)
            began = time.perf_counter()
            try:
                with self.services.keeper.keeping(held.renewal, held.interval):
                    result = self._invoke(occurrence, context)
            except Exception as exc:
                error = exc
            run.elapsed_ms = (time.perf_counter() - began) * 1000
        finally:
            slots.release()
        slots.yield_to_starts(YIELD_TO_STARTS)
        if error is not None:
            self._failed(run, error)
        else:
            self._succeeded(run, result)

    def _take_slot(self, held: _Held) -> None:
        """Wait for one of the worker's ``concurrency`` slots, keeping the job and its lease
        alive meanwhile (a prefetched job waits here while the slots run others)."""
        while not self.services.slots.acquire(timeout=held.interval):
            held.renew()

    def _chain(self, occurrence: Occurrence) -> None:
        if occurrence.schedule_id is not None:
            self.services.chainer.request(occurrence.schedule_id, occurrence.run_at)

    def _wait_until(self, run_at: datetime, held: _Held) -> None:
        """Wait out the rest of ``run_at``; a wait longer than a third of the TTR (a job
        reserved up to a second early, a TTR of 1 or 2 s) keeps the job and lease alive."""
        remaining = self._until(run_at)
        while remaining > held.interval:
            self.sleep(held.interval)
            held.renew()
            remaining = min(remaining - held.interval, self._until(run_at))
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
        function = resolve_job(occurrence.job_class, self.pb.settings.allowed_job_prefixes)
        args, kwargs = render_arguments(occurrence, context)
        with running(context):
            return function(*args, **kwargs)

    def _renewal(self, job: QueuedJob, occurrence: Occurrence, attempt: int) -> Callable[[], None]:
        """What the lease keeper runs while the job runs: a touch on this thread's connection
        (which reserved the job) and a renewal of the dispatch lease."""
        touch = self.pb.queue.toucher(job.id)

        def renew() -> None:
            touch()
            self.registry.renew(
                occurrence.key,
                occurrence.run_at,
                attempt=attempt,
                lease_seconds=occurrence.ttr,
                now=self.clock(),
            )

        return renew

    def _succeeded(self, run: _Run, result: Any) -> None:
        if isinstance(result, PartialSuccess):
            self._settle(
                run, HistoryStatus.PARTIAL_SUCCESS, Outcome.PARTIAL, results=result.results
            )
        else:
            self._settle(run, HistoryStatus.COMPLETED, Outcome.COMPLETED)

    def _failed(self, run: _Run, error: Exception) -> None:
        occurrence = run.occurrence
        retry = run.attempt < occurrence.max_attempts and not isinstance(error, JobNotAllowedError)
        outcome = Outcome.RETRYING if retry else Outcome.FAILED
        self._settle(run, HistoryStatus.FAILED, outcome, error=error, retry=retry)

    def _settle(
        self,
        run: _Run,
        status: HistoryStatus,
        outcome: Outcome,
        *,
        results: Any = None,
        error: Exception | None = None,
        retry: bool = False,
    ) -> None:
        """Hand the outcome to the ledger; the job is deleted, released or buried by
        :meth:`flush` once it committed (the thread meanwhile reserves its next job)."""
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
        future = self.services.ledger.submit(self.services.settler, settlement)
        self._unsettled.append(_Unsettled(run, outcome, future))

    @property
    def unsettled(self) -> int:
        """Finished attempts whose outcome is not committed and acted on yet."""
        return len(self._unsettled)

    def flush(self, *, wait: bool) -> list[Outcome]:
        """Act on the outcomes that committed (all of them, waiting, when ``wait``): release
        for retry or bury each job, or keep it for :meth:`take_deletes` (the worker deletes
        it in the round trip of its next reserve). An outcome that could not be recorded
        leaves its job reserved: it returns after its TTR and the dispatch log decides again.
        """
        done: list[Outcome] = []
        while self._unsettled and (wait or self._unsettled[0].future.done()):
            item = self._unsettled.popleft()
            try:
                entry: HistoryEntry = item.future.result()
            except Exception:
                log.exception("could not record the outcome of job %s", item.run.job.id)
                continue
            self.history.observe(entry)
            done.append(item.outcome)
            try:
                self._act(item.run, item.outcome, entry)
            except Exception as exc:
                # Recorded already: when the job comes back after its TTR, the dispatch log
                # turns it away (or retries it, as the record says).
                log.warning(
                    "job %s outcome recorded, queue action failed: %s", item.run.job.id, exc
                )
        return done

    def take_deletes(self) -> list[int]:
        """The jobs :meth:`flush` left to delete (their outcomes committed)."""
        deletes, self._deletes = self._deletes, []
        return deletes

    def _act(self, run: _Run, outcome: Outcome, entry: HistoryEntry) -> None:
        occurrence, job_id = run.occurrence, run.job.id
        if outcome is Outcome.RETRYING:
            delay = self.backoff(run.attempt)
            log.warning(
                "%s attempt %d failed (%s); retry in %d s",
                occurrence.key,
                run.attempt,
                entry.error_message,
                delay,
            )
            self.pb.queue.release(job_id, priority=occurrence.priority, delay=delay)
        elif outcome is Outcome.FAILED:
            log.error(
                "%s failed on attempt %d of %d: %s",
                occurrence.key,
                run.attempt,
                occurrence.max_attempts,
                entry.error_message,
            )
            self.pb.queue.bury(job_id, priority=occurrence.priority)
        else:
            self._deletes.append(job_id)


@dataclass(frozen=True)
class _Unsettled:
    """An outcome handed to the ledger, waiting for its commit."""

    run: _Run
    outcome: Outcome
    future: Answer


@dataclass
class _Run:
    """One attempt under way: what it runs and when it really began."""

    job: QueuedJob
    occurrence: Occurrence
    attempt: int
    started: HistoryEntry
    began_at: datetime
    elapsed_ms: float = 0.0


def _renew_interval(occurrence: Occurrence) -> float:
    """Seconds between renewals of a held job: a third of its TTR (at least 0.2 s)."""
    return max(0.2, occurrence.ttr / 3)


class _Held:
    """A reserved job this thread keeps alive while it waits (for its instant or a slot)."""

    def __init__(self, renewal: Callable[[], None], occurrence: Occurrence) -> None:
        self.renewal = renewal
        self.key = occurrence.key
        self.interval = _renew_interval(occurrence)

    def renew(self) -> None:
        try:
            self.renewal()
        except Exception:
            log.exception("could not renew the lease of %s", self.key)


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
