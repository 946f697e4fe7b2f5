"""Admission: the transaction that decides whether a delivery runs, for a batch of deliveries.

For each delivery, inside one transaction (the worker's :class:`~postburner_py.worker.ledger.Ledger`
batches the deliveries of all its threads):

1. load and lock the row its body names (``FOR UPDATE`` on PostgreSQL, rows locked in id
   order; SQLite's writer transaction locks the database) and fence: the row must still be
   live for the body's ``run_at``;
2. check the job class against the allow-list (before anything imports it);
3. record a too-late occurrence that is not caught up as ``missed`` instead of running it;
4. claim the occurrence in the dispatch log (one multi-row INSERT for the batch) and record
   the start of each claim that may run (one multi-row INSERT).

Locking the row serialises admission with ``skip()``: either the skip sees the claim and
refuses, or the admission sees the skip and does not run.

Every statement is a method of the store's gate facet
(:class:`~postburner_py.store.contract.gate.GateStore`); this module decides. Where the store
has a one-statement batch (``capabilities.batch_statement``: PostgreSQL), the ledger's fast path
(:mod:`postburner_py.worker.fast_path`) first takes the whole batch through
:meth:`~postburner_py.store.contract.gate.GateStore.settle_and_admit`, which fences and claims
what it can decide for good; the rest comes here (:meth:`Admitter.prepare`,
:meth:`Admitter.fast_answer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from postburner_py.errors import JobNotAllowedError
from postburner_py.keys import idempotency_key, occurrence_key, one_off_key
from postburner_py.logs import DELIVERY_TURNED_AWAY, LEASE_TAKEN_OVER, fields
from postburner_py.queue.signing import JobBody
from postburner_py.schedules.one_off import PENDING as DELAYED_PENDING
from postburner_py.schedules.planning import snapshot_window
from postburner_py.store import store_for
from postburner_py.store.contract.gate import AdmittedRow, BatchRow, Delivery, admitted_row
from postburner_py.store.dispatch_log import (
    Claim,
    ClaimOutcome,
    ClaimRequest,
    DispatchEntry,
    DispatchStatus,
    SqlDispatchRegistry,
    insert_missed,
)
from postburner_py.store.dispatch_records import Overlap, Trigger, holds_slot
from postburner_py.store.history import HistoryEntry, HistoryStore, LostAttempt
from postburner_py.store.models import DEFAULT_MAX_ATTEMPTS, SCHEDULED
from postburner_py.timegrid.jitter import start_instant
from postburner_py.validation import DEFAULT_PRIORITY, check_job_allowed
from postburner_py.worker.ledger import UNDECIDED

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.worker")


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
    #: Another occurrence of the schedule was running: recorded ``skipped_overlap``.
    SKIPPED_OVERLAP = "skipped_overlap"
    #: Another occurrence of the schedule is running and this one waits for it.
    WAITING = "waiting"
    #: Admitted ahead of its start instant, but its execution was retired meanwhile
    #: (disable, skip, a change): not started, recorded ``skipped``.
    WITHDRAWN = "withdrawn"


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
    #: Seconds the attempt may run (None: no limit).
    timeout: float | None = None
    #: Exception class names that fail the occurrence at once.
    no_retry_on: tuple[str, ...] = ()
    #: The schedule's own catch-up window (None: the global one).
    catch_up_window: timedelta | None = None
    #: The queue (not the tube) its job was put on: the label of its metrics.
    queue: str = "default"
    #: A one-off job's enqueuing trace context (:mod:`postburner_py.tracing`), if any.
    trace_context: dict[str, str] | None = None
    #: The overlap policy this occurrence obeys (``Overlap``).
    overlap: str = Overlap.ALLOW
    #: What asked for it (``Trigger``).
    trigger: str = Trigger.SCHEDULE
    #: Seconds of jitter (None: none); the occurrence starts at :attr:`start_at`.
    jitter: float | None = None

    @property
    def start_at(self) -> datetime:
        """When the occurrence starts: ``run_at`` plus its jitter offset."""
        return start_instant(self.key, self.run_at, self.jitter)


@dataclass(slots=True)
class AdmitRequest:
    """One delivery to admit: its verified body, the instant it is admitted, who asks.

    :meth:`Admitter.prepare` adds what the PostgreSQL fast path sends: the start record the
    delivery gets if it claims, and its JSON form (made on the asking thread, not the ledger's).
    """

    body: JobBody
    now: datetime
    worker_id: str
    start: HistoryEntry | None = None
    wire: str | None = None


@dataclass(frozen=True)
class FastAdmission:
    """The fast path's answer to one request: the row it names (None: no such row), still
    unparsed, claimed when its ``history_id`` is set. :meth:`Admitter.answer` turns it into
    an :class:`Admission` on the asking thread."""

    request: AdmitRequest
    row: BatchRow | None


@dataclass(frozen=True)
class Admission:
    """What admission decided: an ``outcome`` that ends the delivery, or a ``claim`` (with
    the start record when this delivery runs the job)."""

    outcome: Outcome | None
    occurrence: Occurrence | None = None
    claim: Claim | None = None
    started: HistoryEntry | None = None


class Admitter:
    """The ledger's batch handler for :class:`AdmitRequest` (see the module docstring)."""

    #: After the settlements of the same batch (see
    #: :class:`~postburner_py.worker.settlement.Settler`).
    batch_order = 1

    def __init__(self, pb: Postburner, registry: SqlDispatchRegistry, history: HistoryStore):
        self.pb = pb
        self.registry = registry
        self.history = history

    def __call__(self, connection: Connection, requests: Sequence[AdmitRequest]) -> list[Admission]:
        """Load and lock, decide, then claim (one multi-row INSERT) and record the starts."""
        occurrences = load_locked(connection, [request.body for request in requests])
        admissions: list[Admission | None] = []
        runnable: list[_Runnable] = []
        for request in requests:
            occurrence = occurrences.get((request.body.kind, request.body.id))
            decided = self._turn_away(connection, request, occurrence)
            if decided is None and occurrence is not None:
                runnable.append((len(admissions), request, occurrence))
            admissions.append(decided)
        claimed = self._claim_each(connection, runnable)
        for (position, _, _), admission in zip(runnable, claimed, strict=True):
            admissions[position] = admission
        return [admission or Admission(Outcome.FENCED) for admission in admissions]

    def _claim_each(self, connection: Connection, runnable: list[_Runnable]) -> list[Admission]:
        """Claims through the dispatch registry (one multi-row INSERT for the fresh ones),
        then one multi-row INSERT of the start records."""
        store = store_for(connection)
        claims = store.claim(
            connection, [_claim_request(request, occurrence) for _, request, occurrence in runnable]
        )
        self._close_lost(connection, runnable, claims)
        starts = [
            self._start_entry(request, occurrence, claim.attempt, claim.entry.trigger)
            for (_, request, occurrence), claim in zip(runnable, claims, strict=True)
            if claim.should_run
        ]
        stored = iter(store.insert_started(connection, starts))
        for (_, _request, occurrence), claim in zip(runnable, claims, strict=True):
            if claim.outcome is ClaimOutcome.OVERLAP:
                log.info(
                    "%s at %s not run: another occurrence of it is running (skipped_overlap)",
                    occurrence.key,
                    occurrence.run_at.isoformat(),
                )
        return [
            Admission(None, occurrence, claim, next(stored) if claim.should_run else None)
            for (_, _, occurrence), claim in zip(runnable, claims, strict=True)
        ]

    def _close_lost(
        self, connection: Connection, runnable: list[_Runnable], claims: list[Claim]
    ) -> None:
        """In the transaction of the take-overs: close the lost attempts' history rows, and
        fail the one-off jobs whose attempts are all spent (so their job_id is free again)."""
        lost, spent = [], []
        for (_, request, occurrence), claim in zip(runnable, claims, strict=True):
            if claim.previous is None:
                continue
            lost.append(self._lost_attempt(request, occurrence, claim))
            if claim.outcome is ClaimOutcome.EXHAUSTED and occurrence.kind == "delayed":
                spent.append((occurrence.row_id, request.now))
        store = store_for(connection)
        if lost:
            store.close_lost(connection, lost)
        store.fail_spent_one_offs(connection, spent)

    def _lost_attempt(
        self, request: AdmitRequest, occurrence: Occurrence, claim: Claim
    ) -> LostAttempt:
        previous = claim.previous
        assert previous is not None
        expired = previous.lease_expires_at
        what = (
            f"worker lost: attempt {previous.attempt} on {previous.node_id} stopped renewing "
            f"its lease (expired {expired.isoformat() if expired else 'never set'})"
        )
        if claim.outcome is ClaimOutcome.TAKEN_OVER:
            what += f"; taken over by {request.worker_id} as attempt {claim.attempt}"
        else:
            what += f"; no attempt left of {occurrence.max_attempts}: the occurrence failed"
        run_at = occurrence.run_at.isoformat()
        if _reopened_for_retry(previous):
            log.info(
                "%s at %s: retried by an operator as attempt %d",
                occurrence.key,
                run_at,
                claim.attempt,
            )
        else:
            log.warning(
                "%s at %s: %s",
                occurrence.key,
                run_at,
                what,
                extra=fields(
                    LEASE_TAKEN_OVER,
                    schedule=occurrence.key,
                    run_at=run_at,
                    attempt=claim.attempt,
                    outcome=str(claim.outcome),
                ),
            )
        return LostAttempt(
            correlation_id=idempotency_key(
                self.pb.settings.namespace, occurrence.key, occurrence.run_at
            ),
            attempt=previous.attempt,
            finished_at=request.now,
            error_message=what,
        )

    def prepare(self, request: AdmitRequest) -> AdmitRequest:
        """``request``, given its start record and its fast-path JSON (filled in place, on the
        asking thread; see :class:`AdmitRequest`)."""
        if request.wire is not None:
            return request
        request.start = self._start_entry_of(request)
        request.wire = _delivery(request, request.start).wire()
        return request

    def fast_answer(self, request: AdmitRequest, row: BatchRow | None) -> Any:
        """What the fast path decided for ``request`` (a :class:`FastAdmission`), or
        :data:`~postburner_py.worker.ledger.UNDECIDED` when this handler's transaction must decide:
        a
        live occurrence the statement did not claim (claimed before, named twice, refused by
        the allow-list, late)."""
        if row is not None and row.undecided:
            return UNDECIDED
        return FastAdmission(request, row)

    def answer(self, answer: Admission | FastAdmission) -> Admission:
        """The :class:`Admission` a ledger answer stands for: the fast path's fenced (the row
        is gone, no longer live, or live for another run_at) or acquired (claimed, start
        recorded), or the transaction's own."""
        if isinstance(answer, Admission):
            return answer
        request = answer.request
        if answer.row is None:
            return Admission(Outcome.FENCED)
        row = admitted_row(answer.row.data)
        if not row.live or row.run_at != request.body.run_at:
            return Admission(Outcome.FENCED)
        occurrence = _admitted_occurrence(request.body.kind, row)
        assert request.start is not None, "a fast-path request is prepared"
        entry = replace(
            request.start,
            id=row.history_id,
            job_id=occurrence.history_job_id,
            task_identifier=occurrence.job_class,
            trigger=occurrence.trigger,
        )
        claim = Claim(ClaimOutcome.ACQUIRED, _acquired_entry(request, occurrence))
        return Admission(None, occurrence, claim, entry)

    def _start_entry_of(self, request: AdmitRequest) -> HistoryEntry:
        """The start record a delivery gets if it claims (job id and class come from the
        row, filled in once it is read)."""
        body = request.body
        return self._start(
            request,
            key=occurrence_key(body.kind, body.key),
            run_at=body.run_at,
            job_id="",
            job_class="",
        )

    def _turn_away(
        self, connection: Connection, request: AdmitRequest, occurrence: Occurrence | None
    ) -> Admission | None:
        """The outcome of a delivery that must not claim (fenced, refused, missed), or None."""
        if occurrence is None or occurrence.run_at != request.body.run_at:
            return Admission(Outcome.FENCED)
        try:
            check_job_allowed(occurrence.job_class, self.pb.settings.allowed_job_prefixes)
        except JobNotAllowedError as exc:
            log.error(
                "refusing %s: %s",
                occurrence.key,
                exc,
                extra=fields(DELIVERY_TURNED_AWAY, outcome="refused", schedule=occurrence.key),
            )
            return Admission(Outcome.REFUSED, occurrence)
        if self._too_late(occurrence, request) and self._record_missed(
            connection, occurrence, request
        ):
            return Admission(Outcome.MISSED, occurrence)
        return None

    def _too_late(self, occurrence: Occurrence, request: AdmitRequest) -> bool:
        """Later than the catch-up window, or (without ``catch_up``) the next one is due."""
        if occurrence.kind == "delayed" or occurrence.trigger != Trigger.SCHEDULE:
            return False  # asked for explicitly (a one-off job, run now, backfill, retry)
        now = request.now
        next_due = occurrence.next_run_at
        window = occurrence.catch_up_window
        if window is None:
            window = self.pb.settings.catch_up_window
        return now - occurrence.start_at > window or (
            not occurrence.catch_up and next_due is not None and next_due <= now
        )

    def _record_missed(
        self, connection: Connection, occurrence: Occurrence, request: AdmitRequest
    ) -> bool:
        """Record a too-late occurrence ``missed``; False when it was claimed before (its
        retry then runs, however late)."""
        now = request.now
        late = now - occurrence.run_at
        added = insert_missed(
            connection, occurrence.key, [occurrence.run_at], node_id=request.worker_id, now=now
        )
        if added:
            log.warning(
                "occurrence %s at %s is %.0f s late: recorded missed, not run",
                occurrence.key,
                occurrence.run_at.isoformat(),
                late.total_seconds(),
            )
        return bool(added)

    def _start_entry(
        self, request: AdmitRequest, occurrence: Occurrence, attempt: int, trigger: str
    ) -> HistoryEntry:
        return self._start(
            request,
            key=occurrence.key,
            run_at=occurrence.run_at,
            job_id=occurrence.history_job_id,
            job_class=occurrence.job_class,
            attempt=attempt,
            trigger=trigger,
            due_at=occurrence.start_at,
        )

    def _start(
        self,
        request: AdmitRequest,
        *,
        key: str,
        run_at: datetime,
        job_id: str,
        job_class: str,
        attempt: int = 1,
        trigger: str = Trigger.SCHEDULE,
        due_at: datetime | None = None,
    ) -> HistoryEntry:
        due = run_at if due_at is None else due_at
        return self.history.start_entry(
            job_id=job_id,
            task_identifier=job_class,
            worker_id=request.worker_id,
            correlation_id=idempotency_key(self.pb.settings.namespace, key, run_at),
            attempt=attempt,
            run_at=run_at,
            schedule_name=key,
            started_at=max(request.now, due),
            trigger=str(trigger),
            due_at=due,
        )


_Runnable = tuple[int, AdmitRequest, Occurrence]


def _lease_until(request: AdmitRequest, occurrence: Occurrence) -> datetime:
    return request.now + timedelta(seconds=occurrence.ttr)


def _reopened_for_retry(previous: DispatchEntry) -> bool:
    """The row an operator's retry reopened (trigger ``retry``, its lease released, not
    lapsed): no worker was lost, its attempt had failed and closed its history."""
    released = previous.lease_expires_at is not None and (
        previous.lease_expires_at <= previous.updated_at
    )
    return previous.trigger == Trigger.RETRY and released


def _delivery(request: AdmitRequest, start: HistoryEntry) -> Delivery:
    assert start.correlation_id is not None and start.queue_time_ms is not None
    return Delivery(
        kind=request.body.kind,
        id=request.body.id,
        key=start.schedule_name or "",
        run_at=request.body.run_at,
        node_id=request.worker_id,
        now=request.now,
        correlation_id=start.correlation_id,
        started_at=start.started_at,
        queue_time_ms=start.queue_time_ms,
        expires_at=start.expires_at,
    )


def _admitted_occurrence(kind: str, row: AdmittedRow) -> Occurrence:
    return _delayed_occurrence(row) if kind == "delayed" else _occurrence(row)


def _acquired_entry(request: AdmitRequest, occurrence: Occurrence) -> DispatchEntry:
    """The dispatch row a fresh claim inserted (what the registry's claim returns)."""
    return DispatchEntry(
        key=occurrence.key,
        fire_time=occurrence.run_at,
        dispatched_at=request.now,
        node_id=request.worker_id,
        status=DispatchStatus.DISPATCHED,
        attempt=1,
        lease_expires_at=_lease_until(request, occurrence),
        updated_at=request.now,
        trigger=str(occurrence.trigger),
        running_key=holds_slot(occurrence.key, occurrence.overlap),
    )


def _claim_request(request: AdmitRequest, occurrence: Occurrence) -> ClaimRequest:
    return ClaimRequest(
        key=occurrence.key,
        fire_time=occurrence.run_at,
        node_id=request.worker_id,
        lease_seconds=occurrence.ttr,
        max_attempts=occurrence.max_attempts,
        now=request.now,
        overlap=occurrence.overlap,
        trigger=occurrence.trigger,
    )


# --- loading ------------------------------------------------------------------------------


def load_locked(
    connection: Connection, bodies: Sequence[JobBody]
) -> dict[tuple[str, int], Occurrence]:
    """The live occurrences ``bodies`` name, by ``(kind, id)``, their rows locked
    (PostgreSQL) until the transaction ends. A row that is gone or no longer live is absent;
    the caller compares ``run_at`` with the body's (fencing)."""
    delayed = sorted({body.id for body in bodies if body.kind == "delayed"})
    executions = sorted({body.id for body in bodies if body.kind != "delayed"})
    delayed_rows, execution_rows = store_for(connection).lock_occurrences(
        connection, delayed_ids=delayed, execution_ids=executions
    )
    found = {
        ("delayed", row.id): _delayed_occurrence(row)
        for row in delayed_rows
        if row.status == DELAYED_PENDING
    }
    found.update(
        (("execution", row.id), _occurrence(row))
        for row in execution_rows
        if row.status == SCHEDULED
    )
    return found


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
        timeout=row.timeout,
        no_retry_on=tuple(row.no_retry_on or ()),
        catch_up_window=snapshot_window(snapshot),
        queue=str(snapshot.get("queue", "default")),
        overlap=str(snapshot.get("overlap") or row.overlap or Overlap.ALLOW),
        trigger=str(snapshot.get("trigger") or Trigger.SCHEDULE),
        jitter=snapshot.get("jitter"),
    )


def _delayed_occurrence(row: Any) -> Occurrence:
    return Occurrence(
        kind="delayed",
        row_id=row.id,
        schedule_id=None,
        next_run_at=None,
        history_job_id=row.job_id,
        key=one_off_key(row.job_id),
        run_at=row.run_at,
        job_class=row.job_class,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        priority=row.priority,
        ttr=row.ttr,
        max_attempts=row.max_attempts,
        catch_up=True,
        timeout=row.timeout,
        no_retry_on=tuple(row.no_retry_on or ()),
        queue=row.queue,
        trace_context=row.trace_context,
    )
