"""The rules of one execution's life: enqueue, skip, supersede, and reconcile of a schedule.

Order matters for crash safety (see ``docs/lifecycle.md``): the database is written and
committed first, Beanstalkd second, and the job id recorded third. A crash between any two
steps leaves a row the watchdog recognises and repairs; it never leaves a job the database
does not know about, and the dispatch log stops a re-put job from running twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from postburner_py.errors import QueueUnavailableError, UnplannableScheduleError
from postburner_py.queue.operations import JobRef, delete_jobs, put_execution, remove_job
from postburner_py.schedules.planning import PLANNING_ERRORS, planning, reason
from postburner_py.store.locking import begin_locked
from postburner_py.store.models import (
    LIVE_STATUSES,
    PENDING,
    SCHEDULED,
    SKIPPED,
    SUPERSEDED,
    Schedule,
    ScheduleExecution,
)
from postburner_py.timegrid.occurrences import NextOccurrence, plan_next

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.lifecycle")

#: A ``scheduled`` row without a job id younger than this may have a put in flight.
ENQUEUE_GRACE = timedelta(seconds=60)


# --- enqueue -------------------------------------------------------------------------------


def enqueue_execution(pb: Postburner, execution_id: int, *, now: datetime) -> None:
    """Queue one execution in Beanstalkd once: mark ``scheduled`` and commit, put, record.

    Idempotent and race-safe: the pending-to-scheduled step is a conditional UPDATE, so of
    two callers only one puts. If the put fails the row stays ``scheduled`` without a job id
    (``enqueued_at`` cleared) for the watchdog, and :class:`QueueUnavailableError` is raised.
    """
    with pb.work_session() as session:
        execution = _claim_for_put(session, execution_id, now)
        if execution is None:
            return
        try:
            job_id, server_id = put_execution(pb, execution, now)
        except QueueUnavailableError:
            _release_claim(session, execution_id)
            raise
        _record_job(pb, session, execution_id, JobRef(execution_id, job_id, server_id))


def _claim_for_put(session: Session, execution_id: int, now: datetime) -> ScheduleExecution | None:
    table = ScheduleExecution
    claimable = or_(
        table.status == PENDING,
        and_(
            table.status == SCHEDULED,
            or_(table.enqueued_at.is_(None), table.enqueued_at < now - ENQUEUE_GRACE),
        ),
    )
    result = session.execute(
        update(table)
        .where(table.id == execution_id, table.beanstalk_job_id.is_(None), claimable)
        .values(status=SCHEDULED, enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    claimed = session.get(table, execution_id, populate_existing=True) if _rows(result) else None
    session.commit()
    return claimed


def _release_claim(session: Session, execution_id: int) -> None:
    session.execute(
        update(ScheduleExecution)
        .where(ScheduleExecution.id == execution_id, ScheduleExecution.beanstalk_job_id.is_(None))
        .values(enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _record_job(pb: Postburner, session: Session, execution_id: int, ref: JobRef) -> None:
    table = ScheduleExecution
    result = session.execute(
        update(table)
        .where(table.id == execution_id, table.status.in_(LIVE_STATUSES))
        .values(beanstalk_job_id=ref.job_id, beanstalk_server_id=ref.server_id)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if not _rows(result):
        # Skipped or superseded while the put was in flight: take the job back out.
        remove_job(pb, ref)


def _rows(result: Any) -> int:
    return int(result.rowcount)


# --- skip and supersede ----------------------------------------------------------------------


def skip_execution(pb: Postburner, execution_id: int, *, now: datetime | None = None) -> bool:
    """Skip one occurrence and queue the next grid point (non-blocking reconcile).

    False, changing nothing, when the execution is not live or a worker has claimed it.
    """
    schedule_id = _retire(pb, execution_id, SKIPPED, refuse_if_started=True)
    if schedule_id is None:
        return False
    if schedule_id and _is_enabled(pb, schedule_id):
        try:
            reconcile_schedule(pb, schedule_id, blocking=False, now=now)
        except UnplannableScheduleError as exc:
            log.warning("skipped; nothing queued next: %s", exc)
    return True


def supersede_execution(pb: Postburner, execution_id: int) -> bool:
    """Tear down the queued job and mark ``superseded``; False if already retired."""
    return _retire(pb, execution_id, SUPERSEDED, refuse_if_started=False) is not None


def _retire(
    pb: Postburner, execution_id: int, status: str, *, refuse_if_started: bool
) -> int | None:
    """Retire one live execution under its row lock; its schedule id (0 if orphaned) or None."""
    with pb.work_session() as session:
        statement = select(ScheduleExecution).where(ScheduleExecution.id == execution_id)
        execution = session.scalars(statement.with_for_update()).one()
        if not execution.is_live or (refuse_if_started and occurrence_started(session, execution)):
            return None
        execution.status = status
        session.commit()
        remove_jobs(pb, session, [JobRef.of(execution)])
        return execution.schedule_id or 0


def _is_enabled(pb: Postburner, schedule_id: int) -> bool:
    with pb.session() as session:
        return bool(session.scalar(select(Schedule.enabled).where(Schedule.id == schedule_id)))


def occurrence_started(session: Session, execution: ScheduleExecution) -> bool:
    """True when a worker has claimed this execution's occurrence in the dispatch log."""
    return occurrence_claimed(session, str(execution.cached_schedule["name"]), execution.run_at)


def occurrence_claimed(session: Session, key: str, fire_time: datetime) -> bool:
    """True when the dispatch log holds a claim (not a ``missed`` record) for the occurrence."""
    from postburner_py.store.dispatch_log import DispatchRecord

    found = session.scalar(
        select(DispatchRecord.id).where(
            DispatchRecord.key == key,
            DispatchRecord.fire_time == fire_time,
            DispatchRecord.status != "missed",
        )
    )
    return found is not None


def remove_jobs(pb: Postburner, session: Session, refs: list[JobRef]) -> None:
    """Remove the jobs of retired executions; forget the ids of the ones now gone."""
    try:
        gone = delete_jobs(pb, refs)
    except QueueUnavailableError as exc:
        log.warning("could not remove %d job(s), the watchdog retries: %s", len(refs), exc)
        return
    if gone:
        session.execute(
            update(ScheduleExecution)
            .where(ScheduleExecution.id.in_(gone))
            .values(beanstalk_job_id=None, beanstalk_server_id=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()


# --- reconcile -------------------------------------------------------------------------------


@dataclass
class Convergence:
    """What one reconcile changed in the database, to be mirrored in Beanstalkd after commit."""

    retired: list[JobRef] = field(default_factory=list)
    to_enqueue: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    missed: int = 0
    #: Set when the schedule's row cannot be planned (its executions were retired).
    invalid: UnplannableScheduleError | None = None


def reconcile_schedule(
    pb: Postburner, schedule_id: int, *, blocking: bool = True, now: datetime | None = None
) -> bool:
    """Converge one schedule to DESIGN invariant 1 under its lock.

    Enabled: exactly one live future execution, on the grid, matching the schedule, queued.
    Disabled or deleted: no live execution that has not started, and no job in Beanstalkd.
    A row that cannot be planned is treated as disabled, then
    :class:`~postburner_py.errors.UnplannableScheduleError` is raised naming it.
    Returns False only when ``blocking`` is False and the lock is held elsewhere.
    """
    now = now or pb.clock()
    with pb.work_session() as session:
        if not begin_locked(session, pb.settings.namespace, [schedule_id], blocking=blocking):
            return False
        outcome = converge(pb, session, schedule_id, now)
        session.commit()
        remove_jobs(pb, session, outcome.retired)
    if outcome.invalid is not None:
        raise outcome.invalid
    for execution_id in outcome.to_enqueue:
        # The put's delay is measured from the clock, not from ``now``: a reconcile may plan
        # as of a moment other than the present (the worker chains as of ``run_at``).
        enqueue_execution(pb, execution_id, now=pb.clock())
    return True


def converge(pb: Postburner, session: Session, schedule_id: int, now: datetime) -> Convergence:
    """Database half of reconcile; the caller holds the schedule lock and commits.

    A schedule whose row cannot be planned (``outcome.invalid``) is treated as disabled: its
    occurrences not yet started are retired, so nothing fires on a grid that can no longer
    be checked, until the row is fixed.
    """
    try:
        schedule = session.get(Schedule, schedule_id, populate_existing=True)
        unloadable = None
    except PLANNING_ERRORS as exc:  # SQLite: a column holds what cannot be loaded
        schedule, unloadable = None, _unloadable(session, schedule_id, exc)
    live = _live_executions(session, schedule_id)
    outcome = Convergence(invalid=unloadable)
    waiting = _not_started(session, [e for e in live if e.run_at <= now])
    future = [e for e in live if e.run_at > now]
    if schedule is None or not schedule.enabled:
        _retire_rows(outcome, future + waiting)
        return outcome
    try:
        plan, following = _plan(pb, session, schedule, now)
    except UnplannableScheduleError as exc:
        _retire_rows(outcome, future + waiting)
        outcome.invalid = exc
        return outcome
    _record_missed(session, schedule, plan, now)
    outcome.missed = plan.missed_total
    keep = _keeper(schedule, future + waiting, plan)
    _retire_rows(outcome, [e for e in future if e is not keep])
    if keep is None and not (plan.is_due(now) and waiting):
        keep = _create_execution(session, schedule, plan.run_at, following)
        outcome.created.append(keep.id)
    for execution in [keep, *waiting]:
        if execution is not None and execution.is_live and not execution.enqueued:
            outcome.to_enqueue.append(execution.id)
    return outcome


def _unloadable(session: Session, schedule_id: int, exc: Exception) -> UnplannableScheduleError:
    name = session.scalar(select(Schedule.name).where(Schedule.id == schedule_id))
    return UnplannableScheduleError(str(name or f"#{schedule_id}"), reason(exc))


def _plan(
    pb: Postburner, session: Session, schedule: Schedule, now: datetime
) -> tuple[NextOccurrence, datetime]:
    """The plan and the grid point after it, computed before anything is written."""
    baseline = _baseline(session, schedule, now)
    with planning(schedule.name):
        grid = schedule.grid()
        plan = plan_next(
            grid,
            baseline=baseline,
            now=now,
            catch_up=schedule.catch_up,
            window=pb.settings.catch_up_window,
        )
        return plan, grid.next_after(plan.run_at)


def _live_executions(session: Session, schedule_id: int) -> list[ScheduleExecution]:
    statement = (
        select(ScheduleExecution)
        .where(
            ScheduleExecution.schedule_id == schedule_id,
            ScheduleExecution.status.in_(LIVE_STATUSES),
        )
        .order_by(ScheduleExecution.run_at)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(statement))


def _not_started(session: Session, executions: list[ScheduleExecution]) -> list[ScheduleExecution]:
    """The due executions that no worker has claimed yet (waiting in the queue)."""
    from postburner_py.store.dispatch_log import DispatchRecord

    if not executions:
        return []
    keys = {str(e.cached_schedule["name"]) for e in executions}
    rows = session.execute(
        select(DispatchRecord.key, DispatchRecord.fire_time).where(
            DispatchRecord.key.in_(keys),
            DispatchRecord.fire_time.in_([e.run_at for e in executions]),
        )
    )
    claimed = {(key, fire_time) for key, fire_time in rows}
    return [e for e in executions if (str(e.cached_schedule["name"]), e.run_at) not in claimed]


def _baseline(session: Session, schedule: Schedule, now: datetime) -> datetime:
    """The last instant this schedule is accounted for (latest run or skip, or resumed_at)."""
    table = ScheduleExecution
    latest = session.scalar(
        select(func.max(table.run_at)).where(
            table.schedule_id == schedule.id,
            or_(
                table.status == SKIPPED,
                and_(table.status.in_(LIVE_STATUSES), table.run_at <= now),
            ),
        )
    )
    candidates = [t for t in (latest, schedule.resumed_at) if t is not None]
    return max(candidates) if candidates else now


def _keeper(
    schedule: Schedule, candidates: list[ScheduleExecution], plan: NextOccurrence
) -> ScheduleExecution | None:
    for execution in candidates:
        if execution.run_at == plan.run_at and not execution.is_drifted(schedule):
            return execution
    return None


def _retire_rows(outcome: Convergence, executions: list[ScheduleExecution]) -> None:
    for execution in executions:
        execution.status = SUPERSEDED
        outcome.retired.append(JobRef.of(execution))


def _create_execution(
    session: Session, schedule: Schedule, run_at: datetime, next_run_at: datetime
) -> ScheduleExecution:
    execution = ScheduleExecution(
        schedule_id=schedule.id,
        run_at=run_at,
        next_run_at=next_run_at,
        status=PENDING,
        cached_schedule=schedule.snapshot(),
    )
    session.add(execution)
    session.flush()
    return execution


def _record_missed(
    session: Session, schedule: Schedule, plan: NextOccurrence, now: datetime
) -> None:
    """Make missed occurrences visible in the dispatch log (status ``missed``)."""
    from postburner_py.store.dispatch_log import insert_missed

    if not plan.missed:
        return
    insert_missed(session, schedule.name, plan.missed, node_id="reconcile", now=now)
    if plan.missed_total > len(plan.missed):
        log.warning(
            "schedule %s missed %d occurrences; the first %d are in the dispatch log",
            schedule.name,
            plan.missed_total,
            len(plan.missed),
        )


def chain_next(pb: Postburner, schedule_id: int, run_at: datetime, *, now: datetime) -> None:
    """Make sure the occurrence after ``run_at`` exists (the worker calls this first).

    Cheap when it does: one query. Otherwise the watchdog's creation path for this one
    schedule, under a try-lock: if someone else holds the schedule's lock, they are converging
    it already. A retry of the same occurrence finds the next one in place and creates nothing.
    """
    chain_next_many(pb, {schedule_id: run_at}, now=now)


def chain_next_many(pb: Postburner, run_at: Mapping[int, datetime], *, now: datetime) -> None:
    """:func:`chain_next` for many schedules (schedule id to the ``run_at`` just reached):
    one query finds the schedules without a live execution after it, one creation pass per
    distinct instant (usually one: chaining happens once ``run_at`` has come) creates theirs."""
    after = {schedule_id: max(at, now) for schedule_id, at in run_at.items()}
    latest = _latest_live_run_at(pb, list(after))
    missing: dict[datetime, list[int]] = {}
    for schedule_id, instant in after.items():
        newest = latest.get(schedule_id)
        if newest is None or newest <= instant:
            missing.setdefault(instant, []).append(schedule_id)
    if not missing:
        return
    from postburner_py.watchdog.reconcile_pass import PassReport, create_missing

    report = PassReport()
    for instant, schedule_ids in sorted(missing.items()):
        # The watchdog's lean creation path: try-lock, re-check, one INSERT, one put.
        create_missing(pb, sorted(schedule_ids), instant, report)
    # The schedules that could not be chained are left for the watchdog, which reports them.
    for problem in report.problems:
        log.warning("chaining: %s", problem)
    for name, why in report.invalid_schedules.items():
        log.warning("chaining: schedule %r cannot be planned, nothing queued: %s", name, why)


def _latest_live_run_at(pb: Postburner, schedule_ids: list[int]) -> dict[int, datetime]:
    statement = (
        select(ScheduleExecution.schedule_id, func.max(ScheduleExecution.run_at))
        .where(
            ScheduleExecution.schedule_id.in_(schedule_ids),
            ScheduleExecution.status.in_(LIVE_STATUSES),
        )
        .group_by(ScheduleExecution.schedule_id)
    )
    with pb.session() as session:
        rows = session.execute(statement)
        return {schedule_id: newest for schedule_id, newest in rows if schedule_id is not None}
