"""One delivery of one Beanstalkd job, from signature check to history.

The order is what makes a delivery safe to repeat (see ``docs/worker.md``):

1. verify the body's signature (a forged body is buried; its job_class is never imported);
2. load the execution and fence: it must still be ``scheduled`` for that ``run_at``;
3. release a job that arrived a second or more early;
4. check the job class against the allow-list (before any import);
5. lock the execution row and claim the occurrence in the dispatch log in one transaction
   (a late occurrence the schedule does not catch up is recorded ``missed`` instead);
6. chain the next execution, wait out the sub-second rest of ``run_at``, record the start;
7. run the job while touching the Beanstalkd job and renewing the lease;
8. record the outcome, then delete, release (retry with backoff) or bury the job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from postburner_py.beanstalk import QueuedJob
from postburner_py.context import ExecutionContext, PartialSuccess, running
from postburner_py.delayed_jobs import COMPLETED as DELAYED_COMPLETED
from postburner_py.delayed_jobs import FAILED as DELAYED_FAILED
from postburner_py.delayed_jobs import PENDING as DELAYED_PENDING
from postburner_py.delayed_jobs import DelayedJob
from postburner_py.dispatch_log import (
    Claim,
    ClaimOutcome,
    SqlDispatchRegistry,
    idempotency_key,
    insert_missed,
)
from postburner_py.errors import JobNotAllowedError, SignatureError
from postburner_py.history import HistoryEntry, HistoryStore
from postburner_py.job_loader import resolve_job
from postburner_py.lifecycle import chain_next
from postburner_py.models import DEFAULT_MAX_ATTEMPTS, SCHEDULED, Schedule, ScheduleExecution
from postburner_py.placeholders import render_arguments as fill_placeholders
from postburner_py.signing import JobBody, decode_body
from postburner_py.validation import DEFAULT_PRIORITY, check_job_allowed

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.worker")

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


class Outcome(StrEnum):
    """What one delivery came to."""

    COMPLETED = "completed"
    PARTIAL = "partial_success"
    RETRYING = "retrying"
    FAILED = "failed"
    FENCED = "fenced"
    FORGED = "forged"
    REFUSED = "refused"
    EARLY = "early"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    MISSED = "missed"


@dataclass(frozen=True)
class Occurrence:
    """Everything the runner needs about the occurrence a job body names.

    ``kind`` is ``execution`` (``row_id`` of a ScheduleExecution) or ``delayed`` (of a
    DelayedJob); ``key`` is the dispatch-log key.
    """

    kind: str
    row_id: int
    schedule_id: int | None
    next_run_at: datetime | None
    history_job_id: str
    key: str
    run_at: datetime
    job_class: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    ttr: int
    max_attempts: int
    catch_up: bool


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
        clock: Clock,
        sleep: Sleep = time.sleep,
        backoff: Callable[[int], int] = default_backoff,
    ) -> None:
        self.pb = pb
        self.worker_id = worker_id
        self.history = history
        self.registry = SqlDispatchRegistry(pb.session_factory, node_id=worker_id, clock=clock)
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{worker_id}-job")

    def close(self) -> None:
        """Stop the job thread (after the job it runs, if any)."""
        self._executor.shutdown(wait=True)

    def handle(self, job: QueuedJob) -> Outcome:
        """Process one reserved job to the end; the job is deleted, released or buried."""
        try:
            body = decode_body(job.body, self.pb.secret())
        except SignatureError as exc:
            log.error("burying job %s: %s (its job class is never imported)", job.id, exc)
            self.pb.queue.bury(job.id, priority=DEFAULT_PRIORITY)
            return Outcome.FORGED
        occurrence = self._load(body)
        if occurrence is None:
            log.info("dropping job %s: execution %s is no longer scheduled", job.id, body.id)
            self.pb.queue.delete(job.id)
            return Outcome.FENCED
        return self._deliver(job, occurrence)

    def _deliver(self, job: QueuedJob, occurrence: Occurrence) -> Outcome:
        early = (occurrence.run_at - self.clock()).total_seconds()
        if early >= 1:
            self.pb.queue.release(job.id, priority=occurrence.priority, delay=math.floor(early))
            return Outcome.EARLY
        try:
            check_job_allowed(occurrence.job_class, self.pb.settings.allowed_job_prefixes)
        except JobNotAllowedError as exc:
            log.error("burying job %s: %s", job.id, exc)
            self.pb.queue.bury(job.id, priority=occurrence.priority)
            return Outcome.REFUSED
        claim = self._claim(occurrence)
        if isinstance(claim, Outcome):
            if claim is Outcome.MISSED:
                self._chain(occurrence)
            self.pb.queue.delete(job.id)
            return claim
        if not claim.should_run:
            return self._not_running(job, occurrence, claim)
        return self._attempt(job, occurrence, claim.attempt)

    # --- loading and claiming ------------------------------------------------------------

    def _load(self, body: JobBody) -> Occurrence | None:
        with self.pb.session() as session:
            if body.kind == "delayed":
                row = session.get(DelayedJob, body.id)
                if row is None or not _still_live(row, body.run_at):
                    return None
                return _delayed_occurrence(row)
            execution = session.get(ScheduleExecution, body.id)
            if execution is None or not _still_live(execution, body.run_at):
                return None
            schedule = (
                session.get(Schedule, execution.schedule_id) if execution.schedule_id else None
            )
            return _occurrence(execution, schedule)

    def _claim(self, occurrence: Occurrence) -> Claim | Outcome:
        """Fence and claim atomically; FENCED when the execution was retired meanwhile,
        MISSED when it is too late to run.

        Locking the execution row serialises this with ``skip()``: either the skip sees the
        claim and refuses, or this sees the skip and does not run.
        """
        now = self.clock()
        with self.pb.work_session() as session:
            if not _still_live(_lock_row(session, occurrence), occurrence.run_at):
                return Outcome.FENCED
            if self._missed(session, occurrence, now):
                session.commit()
                return Outcome.MISSED
            claim = self.registry.claim_in(
                session,
                occurrence.key,
                occurrence.run_at,
                lease_seconds=occurrence.ttr,
                max_attempts=occurrence.max_attempts,
                now=now,
            )
            session.commit()
            return claim

    def _missed(self, session: Session, occurrence: Occurrence, now: datetime) -> bool:
        """Record a too-late, never-claimed occurrence as ``missed`` instead of running it."""
        if occurrence.kind == "delayed":
            return False  # a one-off job was asked for explicitly: run it however late
        late = now - occurrence.run_at
        next_due = occurrence.next_run_at
        too_late = late > self.pb.settings.catch_up_window or (
            not occurrence.catch_up and next_due is not None and next_due <= now
        )
        if not too_late:
            return False
        added = insert_missed(
            session, occurrence.key, [occurrence.run_at], node_id=self.worker_id, now=now
        )
        if added:
            log.warning(
                "occurrence %s at %s is %.0f s late: recorded missed, not run",
                occurrence.key,
                occurrence.run_at.isoformat(),
                late.total_seconds(),
            )
        return bool(added)

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

    def _attempt(self, job: QueuedJob, occurrence: Occurrence, attempt: int) -> Outcome:
        self._chain(occurrence)
        self._wait_until(occurrence.run_at)
        context = self._context(occurrence, attempt)
        started = self.history.record_start(
            job_id=occurrence.history_job_id,
            task_identifier=occurrence.job_class,
            worker_id=self.worker_id,
            correlation_id=context.idempotency_key,
            attempt=attempt,
            run_at=occurrence.run_at,
            schedule_name=occurrence.key,
            started_at=self.clock(),
        )
        began = time.perf_counter()
        future = self._executor.submit(self._invoke, occurrence, context)
        self._keep_alive(job, occurrence, attempt, future)
        elapsed_ms = (time.perf_counter() - began) * 1000
        try:
            result = future.result()
        except Exception as exc:
            return self._failed(job, occurrence, attempt, started, elapsed_ms, exc)
        return self._succeeded(job, occurrence, attempt, started, elapsed_ms, result)

    def _chain(self, occurrence: Occurrence) -> None:
        if occurrence.schedule_id is None:
            return
        try:
            chain_next(self.pb, occurrence.schedule_id, occurrence.run_at, now=self.clock())
        except Exception:
            log.exception("could not chain the occurrence after %s", occurrence.key)

    def _wait_until(self, run_at: datetime) -> None:
        remaining = (run_at - self.clock()).total_seconds()
        if remaining > 0:
            self.sleep(remaining)

    def _context(self, occurrence: Occurrence, attempt: int) -> ExecutionContext:
        namespace = self.pb.settings.namespace
        delayed = occurrence.kind == "delayed"
        return ExecutionContext(
            execution_id=None if delayed else occurrence.row_id,
            job_id=occurrence.history_job_id if delayed else None,
            key=occurrence.key,
            run_at=occurrence.run_at,
            attempt=attempt,
            idempotency_key=idempotency_key(namespace, occurrence.key, occurrence.run_at),
        )

    def _invoke(self, occurrence: Occurrence, context: ExecutionContext) -> Any:
        function = resolve_job(occurrence.job_class, self.pb.settings.allowed_job_prefixes)
        args, kwargs = render_arguments(occurrence, context)
        with running(context):
            return function(*args, **kwargs)

    def _keep_alive(
        self, job: QueuedJob, occurrence: Occurrence, attempt: int, future: Future[Any]
    ) -> None:
        """Touch the job and renew the lease until the job finishes (this thread owns the
        Beanstalkd connection, so the touch must come from here)."""
        interval = max(0.2, occurrence.ttr / 3)
        while True:
            try:
                future.exception(timeout=interval)
                return
            except TimeoutError:
                self._renew(job, occurrence, attempt)

    def _renew(self, job: QueuedJob, occurrence: Occurrence, attempt: int) -> None:
        try:
            self.pb.queue.touch(job.id)
            self.registry.renew(
                occurrence.key,
                occurrence.run_at,
                attempt=attempt,
                lease_seconds=occurrence.ttr,
                now=self.clock(),
            )
        except Exception:
            log.exception("could not renew the lease of %s", occurrence.key)

    def _succeeded(
        self,
        job: QueuedJob,
        occurrence: Occurrence,
        attempt: int,
        started: HistoryEntry,
        elapsed_ms: float,
        result: Any,
    ) -> Outcome:
        if isinstance(result, PartialSuccess):
            self.history.record_partial_success(
                started,
                worker_id=self.worker_id,
                execution_time_ms=elapsed_ms,
                results=result.results,
            )
        else:
            self.history.record_completion(
                started, worker_id=self.worker_id, execution_time_ms=elapsed_ms
            )
        self.registry.complete(occurrence.key, occurrence.run_at, attempt=attempt, now=self.clock())
        _finish_delayed(self.pb, occurrence, DELAYED_COMPLETED)
        self.pb.queue.delete(job.id)
        return Outcome.PARTIAL if isinstance(result, PartialSuccess) else Outcome.COMPLETED

    def _failed(
        self,
        job: QueuedJob,
        occurrence: Occurrence,
        attempt: int,
        started: HistoryEntry,
        elapsed_ms: float,
        error: Exception,
    ) -> Outcome:
        self.history.record_failure(
            started, worker_id=self.worker_id, execution_time_ms=elapsed_ms, error=error
        )
        now = self.clock()
        if attempt < occurrence.max_attempts and not isinstance(error, JobNotAllowedError):
            self.registry.release_for_retry(
                occurrence.key, occurrence.run_at, attempt=attempt, now=now
            )
            delay = self.backoff(attempt)
            log.warning(
                "%s attempt %d failed (%s); retry in %d s", occurrence.key, attempt, error, delay
            )
            self.pb.queue.release(job.id, priority=occurrence.priority, delay=delay)
            return Outcome.RETRYING
        self.registry.fail(occurrence.key, occurrence.run_at, attempt=attempt, now=now)
        _finish_delayed(self.pb, occurrence, DELAYED_FAILED)
        log.error(
            "%s failed on attempt %d of %d: %s",
            occurrence.key,
            attempt,
            occurrence.max_attempts,
            error,
        )
        self.pb.queue.bury(job.id, priority=occurrence.priority)
        return Outcome.FAILED


def _lock_row(session: Session, occurrence: Occurrence) -> ScheduleExecution | DelayedJob | None:
    if occurrence.kind == "delayed":
        statement = select(DelayedJob).where(DelayedJob.id == occurrence.row_id)
        return session.scalars(statement.with_for_update()).one_or_none()
    query = select(ScheduleExecution).where(ScheduleExecution.id == occurrence.row_id)
    return session.scalars(query.with_for_update()).one_or_none()


def _still_live(row: ScheduleExecution | DelayedJob | None, run_at: datetime) -> bool:
    if row is None:
        return False
    live = DELAYED_PENDING if isinstance(row, DelayedJob) else SCHEDULED
    return row.status == live and row.run_at == run_at


def _occurrence(execution: ScheduleExecution, schedule: Schedule | None) -> Occurrence:
    snapshot = execution.cached_schedule
    return Occurrence(
        kind="execution",
        row_id=execution.id,
        schedule_id=execution.schedule_id,
        next_run_at=execution.next_run_at,
        history_job_id=str(execution.id),
        key=str(snapshot["name"]),
        run_at=execution.run_at,
        job_class=str(snapshot["job_class"]),
        args=list(snapshot.get("args") or []),
        kwargs=dict(snapshot.get("kwargs") or {}),
        priority=int(snapshot.get("priority", DEFAULT_PRIORITY)),
        ttr=int(snapshot.get("ttr", 300)),
        max_attempts=schedule.max_attempts if schedule is not None else DEFAULT_MAX_ATTEMPTS,
        catch_up=bool(snapshot.get("catch_up", False)),
    )


def _delayed_occurrence(row: DelayedJob) -> Occurrence:
    return Occurrence(
        kind="delayed",
        row_id=row.id,
        schedule_id=None,
        next_run_at=None,
        history_job_id=row.job_id,
        key=row.gate_key,
        run_at=row.run_at,
        job_class=row.job_class,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        priority=row.priority,
        ttr=row.ttr,
        max_attempts=row.max_attempts,
        catch_up=True,
    )


def _finish_delayed(pb: Postburner, occurrence: Occurrence, status: str) -> None:
    """A one-off job's row leaves ``pending`` once it ran, so its job_id may be reused."""
    if occurrence.kind != "delayed":
        return
    with pb.work_session() as session:
        session.execute(
            update(DelayedJob)
            .where(DelayedJob.id == occurrence.row_id, DelayedJob.status == DELAYED_PENDING)
            .values(status=status)
        )
        session.commit()


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
