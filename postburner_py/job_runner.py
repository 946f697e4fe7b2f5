"""One delivery of one Beanstalkd job, from signature check to history.

The order is what makes a delivery safe to repeat (see ``docs/worker.md``):

1. verify the body's signature (a forged body is buried; its job_class is never imported);
2. release a job that arrived a second or more before its (signed) ``run_at``;
3. in one transaction: load and lock the row and fence (it must still be live for that
   ``run_at``), check the job class against the allow-list (before any import), claim the
   occurrence in the dispatch log and record the start (a late occurrence that is not caught
   up is recorded ``missed`` instead);
4. wait out the sub-second rest of ``run_at``;
5. start the job in its own thread, chain the next execution, then touch the Beanstalkd job
   and renew the lease until the job returns;
6. record the outcome, then delete, release (retry with backoff) or bury the job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.exc import DBAPIError

from postburner_py.beanstalk import QueuedJob
from postburner_py.context import ExecutionContext, PartialSuccess, running
from postburner_py.delayed_jobs import COMPLETED as DELAYED_COMPLETED
from postburner_py.delayed_jobs import FAILED as DELAYED_FAILED
from postburner_py.delayed_jobs import GATE_PREFIX, DelayedJob
from postburner_py.delayed_jobs import PENDING as DELAYED_PENDING
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
        self._connection: Connection | None = None

    def close(self) -> None:
        """Stop the job thread (after the job it runs, if any) and close the connection."""
        self._executor.shutdown(wait=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction on this thread's own connection (Core: the hot path skips the ORM).

        A connection the database dropped is closed, so the next delivery reconnects.
        """
        if self._connection is None or self._connection.closed:
            self._connection = self.pb.writer_engine.connect()
        connection = self._connection
        try:
            with connection.begin():
                yield connection
        except DBAPIError as exc:
            if exc.connection_invalidated:
                connection.close()
                self._connection = None
            raise

    def handle(self, job: QueuedJob) -> Outcome:
        """Process one reserved job to the end; the job is deleted, released or buried."""
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
        admission = self._admit(body)
        if admission.outcome is not None:
            return self._turned_away(job, admission)
        assert admission.occurrence is not None and admission.claim is not None
        if admission.started is None:
            return self._not_running(job, admission.occurrence, admission.claim)
        return self._attempt(job, admission.occurrence, admission.claim.attempt, admission.started)

    def _turned_away(self, job: QueuedJob, admission: _Admission) -> Outcome:
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

    # --- admission: one transaction --------------------------------------------------------

    def _admit(self, body: JobBody) -> _Admission:
        """Load and lock the row, fence, check the allow-list, claim and record the start, in
        one transaction.

        Locking the row serialises this with ``skip()``: either the skip sees the claim and
        refuses, or this sees the skip and does not run.
        """
        now = self.clock()
        with self._transaction() as connection:
            occurrence = _load_locked(connection, body)
            if occurrence is None:
                return _Admission(Outcome.FENCED)
            try:
                check_job_allowed(occurrence.job_class, self.pb.settings.allowed_job_prefixes)
            except JobNotAllowedError as exc:
                log.error("refusing %s: %s", occurrence.key, exc)
                return _Admission(Outcome.REFUSED, occurrence)
            if self._missed(connection, occurrence, now):
                return _Admission(Outcome.MISSED, occurrence)
            claim = self.registry.claim_in(
                connection,
                occurrence.key,
                occurrence.run_at,
                lease_seconds=occurrence.ttr,
                max_attempts=occurrence.max_attempts,
                now=now,
            )
            started = (
                self._record_start(connection, occurrence, claim, now) if claim.should_run else None
            )
            return _Admission(None, occurrence, claim, started)

    def _record_start(
        self, connection: Connection, occurrence: Occurrence, claim: Claim, now: datetime
    ) -> HistoryEntry:
        return self.history.record_start(
            job_id=occurrence.history_job_id,
            task_identifier=occurrence.job_class,
            worker_id=self.worker_id,
            correlation_id=self._idempotency_key(occurrence),
            attempt=claim.attempt,
            run_at=occurrence.run_at,
            schedule_name=occurrence.key,
            started_at=max(now, occurrence.run_at),
            session=connection,
        )

    def _idempotency_key(self, occurrence: Occurrence) -> str:
        return idempotency_key(self.pb.settings.namespace, occurrence.key, occurrence.run_at)

    def _missed(self, connection: Connection, occurrence: Occurrence, now: datetime) -> bool:
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
            connection, occurrence.key, [occurrence.run_at], node_id=self.worker_id, now=now
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

    def _attempt(
        self, job: QueuedJob, occurrence: Occurrence, attempt: int, started: HistoryEntry
    ) -> Outcome:
        self._wait_until(occurrence.run_at)
        context = self._context(occurrence, attempt)
        run = _Run(job, occurrence, attempt, started, began_at=self.clock())
        began = time.perf_counter()
        future = self._executor.submit(self._invoke, occurrence, context)
        # The next execution is chained as this attempt starts: once run_at has come (so it
        # never coexists with this one as a second live future) and in this thread while the
        # job runs in its own, so chaining never delays the start.
        self._chain(occurrence)
        self._keep_alive(job, occurrence, attempt, future)
        run.elapsed_ms = (time.perf_counter() - began) * 1000
        try:
            result = future.result()
        except Exception as exc:
            return self._failed(run, exc)
        return self._succeeded(run, result)

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
        delayed = occurrence.kind == "delayed"
        return ExecutionContext(
            execution_id=None if delayed else occurrence.row_id,
            job_id=occurrence.history_job_id if delayed else None,
            key=occurrence.key,
            run_at=occurrence.run_at,
            attempt=attempt,
            idempotency_key=self._idempotency_key(occurrence),
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

    def _succeeded(self, run: _Run, result: Any) -> Outcome:
        partial = isinstance(result, PartialSuccess)
        with self._transaction() as connection:
            common = self._terminal_arguments(run, connection)
            if partial:
                self.history.record_partial_success(run.started, results=result.results, **common)
            else:
                self.history.record_completion(run.started, **common)
            self._settle(connection, run, failed=False)
        self.pb.queue.delete(run.job.id)
        return Outcome.PARTIAL if partial else Outcome.COMPLETED

    def _failed(self, run: _Run, error: Exception) -> Outcome:
        occurrence, attempt = run.occurrence, run.attempt
        retry = attempt < occurrence.max_attempts and not isinstance(error, JobNotAllowedError)
        with self._transaction() as connection:
            common = self._terminal_arguments(run, connection)
            self.history.record_failure(run.started, error=error, **common)
            if not retry:
                self._settle(connection, run, failed=True)
        if retry:
            now = self.clock()
            self.registry.release_for_retry(
                occurrence.key, occurrence.run_at, attempt=attempt, now=now
            )
            delay = self.backoff(attempt)
            log.warning(
                "%s attempt %d failed (%s); retry in %d s", occurrence.key, attempt, error, delay
            )
            self.pb.queue.release(run.job.id, priority=occurrence.priority, delay=delay)
            return Outcome.RETRYING
        log.error(
            "%s failed on attempt %d of %d: %s",
            occurrence.key,
            attempt,
            occurrence.max_attempts,
            error,
        )
        self.pb.queue.bury(run.job.id, priority=occurrence.priority)
        return Outcome.FAILED

    def _terminal_arguments(self, run: _Run, connection: Connection) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "execution_time_ms": run.elapsed_ms,
            "started_at": run.began_at,
            "session": connection,
        }

    def _settle(self, connection: Connection, run: _Run, *, failed: bool) -> None:
        """Close the occurrence in the dispatch log (and a one-off job's row)."""
        occurrence = run.occurrence
        self.registry.finish_in(
            connection,
            occurrence.key,
            occurrence.run_at,
            attempt=run.attempt,
            now=self.clock(),
            failed=failed,
        )
        if occurrence.kind == "delayed":
            connection.execute(
                update(_DELAYED_T)
                .where(_DELAYED_T.c.id == occurrence.row_id, _DELAYED_T.c.status == DELAYED_PENDING)
                .values(status=DELAYED_FAILED if failed else DELAYED_COMPLETED)
            )


@dataclass
class _Run:
    """One attempt under way: what it runs and when it really began."""

    job: QueuedJob
    occurrence: Occurrence
    attempt: int
    started: HistoryEntry
    began_at: datetime
    elapsed_ms: float = 0.0


_EXECUTION_T = cast(Table, ScheduleExecution.__table__)
_SCHEDULE_T = cast(Table, Schedule.__table__)
_DELAYED_T = cast(Table, DelayedJob.__table__)
_EXECUTION = (
    select(
        _EXECUTION_T.c.id,
        _EXECUTION_T.c.schedule_id,
        _EXECUTION_T.c.run_at,
        _EXECUTION_T.c.next_run_at,
        _EXECUTION_T.c.status,
        _EXECUTION_T.c.cached_schedule,
        _SCHEDULE_T.c.max_attempts,
    )
    .outerjoin(_SCHEDULE_T, _SCHEDULE_T.c.id == _EXECUTION_T.c.schedule_id)
    .with_for_update(of=_EXECUTION_T)
)
_DELAYED = select(_DELAYED_T).with_for_update()


def _load_locked(connection: Connection, body: JobBody) -> Occurrence | None:
    """The occurrence ``body`` names, its row locked (PostgreSQL) until the transaction
    ends; None when the row is gone or no longer live for that ``run_at`` (fencing)."""
    if body.kind == "delayed":
        row = connection.execute(_DELAYED.where(_DELAYED_T.c.id == body.id)).first()
        if row is None or not _row_live(row, "delayed", body.run_at):
            return None
        return _delayed_occurrence(row)
    row = connection.execute(_EXECUTION.where(_EXECUTION_T.c.id == body.id)).first()
    if row is None or not _row_live(row, "execution", body.run_at):
        return None
    return _occurrence(row)


def _row_live(row: Any, kind: str, run_at: datetime) -> bool:
    live = DELAYED_PENDING if kind == "delayed" else SCHEDULED
    return bool(row.status == live and row.run_at == run_at)


def _priority_of(pb: Postburner, job: QueuedJob) -> int:
    stats = pb.queue.stats_job(job.id)
    return int(stats["pri"]) if stats else DEFAULT_PRIORITY


@dataclass(frozen=True)
class _Admission:
    """What the admission transaction decided: an ``outcome`` that ends the delivery, or a
    ``claim`` (with the start record when this delivery runs the job)."""

    outcome: Outcome | None
    occurrence: Occurrence | None = None
    claim: Claim | None = None
    started: HistoryEntry | None = None


def _occurrence(row: Any) -> Occurrence:
    snapshot = row.cached_schedule
    return Occurrence(
        kind="execution",
        row_id=row.id,
        schedule_id=row.schedule_id,
        next_run_at=row.next_run_at,
        history_job_id=str(row.id),
        key=str(snapshot["name"]),
        run_at=row.run_at,
        job_class=str(snapshot["job_class"]),
        args=list(snapshot.get("args") or []),
        kwargs=dict(snapshot.get("kwargs") or {}),
        priority=int(snapshot.get("priority", DEFAULT_PRIORITY)),
        ttr=int(snapshot.get("ttr", 300)),
        max_attempts=row.max_attempts or DEFAULT_MAX_ATTEMPTS,
        catch_up=bool(snapshot.get("catch_up", False)),
    )


def _delayed_occurrence(row: Any) -> Occurrence:
    return Occurrence(
        kind="delayed",
        row_id=row.id,
        schedule_id=None,
        next_run_at=None,
        history_job_id=row.job_id,
        key=GATE_PREFIX + row.job_id,
        run_at=row.run_at,
        job_class=row.job_class,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        priority=row.priority,
        ttr=row.ttr,
        max_attempts=row.max_attempts,
        catch_up=True,
    )


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
