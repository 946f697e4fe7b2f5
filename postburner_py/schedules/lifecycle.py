"""The rules of one execution's life: enqueue, skip, supersede, and reconcile of a schedule.

Order matters for crash safety (see ``docs/lifecycle.md``): the database is written and
committed first, Beanstalkd second, and the job id recorded third. A crash between any two
steps leaves a row the watchdog recognises and repairs; it never leaves a job the database
does not know about, and the dispatch log stops a re-put job from running twice.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, cast

from sqlalchemy.orm import Session

from postburner_py.errors import (
    OffGridError,
    PostburnerError,
    QueueUnavailableError,
    ScheduleValidationError,
    UnplannableScheduleError,
)
from postburner_py.queue.operations import JobRef, delete_jobs, put_execution, remove_job
from postburner_py.schedules.planning import (
    PLANNING_ERRORS,
    SchedulePlan,
    catch_up_window,
    plan_schedule,
    planning,
    reason,
)
from postburner_py.store import store_for
from postburner_py.store.dispatch_records import DispatchStatus
from postburner_py.store.models import (
    PENDING,
    SKIPPED,
    SUPERSEDED,
    LifecycleRules,
    Schedule,
    ScheduleExecution,
    register_lifecycle,
)
from postburner_py.timegrid.occurrences import MAX_LISTED_MISSED
from postburner_py.timegrid.window import WindowedGrid, WindowEnded, point_before

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
    claimed = store_for(session).claim_for_put(session, execution_id, now, ENQUEUE_GRACE)
    execution = (
        session.get(ScheduleExecution, execution_id, populate_existing=True) if claimed else None
    )
    session.commit()
    return execution


def _release_claim(session: Session, execution_id: int) -> None:
    store_for(session).release_claim(session, execution_id)
    session.commit()


def _record_job(pb: Postburner, session: Session, execution_id: int, ref: JobRef) -> None:
    job_id, server_id = cast("int", ref.job_id), cast("str", ref.server_id)
    recorded = store_for(session).record_job(session, execution_id, job_id, server_id)
    session.commit()
    if not recorded:
        # Skipped or superseded while the put was in flight: take the job back out.
        remove_job(pb, ref)


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
        execution = store_for(session).execution_for_update(session, execution_id)
        if not execution.is_live or (refuse_if_started and occurrence_started(session, execution)):
            return None
        execution.status = status
        session.commit()
        remove_jobs(pb, session, [JobRef.of(execution)])
        return execution.schedule_id or 0


def _is_enabled(pb: Postburner, schedule_id: int) -> bool:
    with pb.session() as session:
        return store_for(session).schedule_enabled(session, schedule_id)


def occurrence_started(session: Session, execution: ScheduleExecution) -> bool:
    """True when a worker has claimed this execution's occurrence in the dispatch log."""
    return occurrence_claimed(session, str(execution.cached_schedule["name"]), execution.run_at)


def occurrence_claimed(session: Session, key: str, fire_time: datetime) -> bool:
    """True when the dispatch log holds a claim (not a ``missed`` record) for the occurrence."""
    return store_for(session).occurrence_claimed(session, key, fire_time)


def remove_jobs(pb: Postburner, session: Session, refs: list[JobRef]) -> None:
    """Remove the jobs of retired executions; forget the ids of the ones now gone."""
    try:
        gone = delete_jobs(pb, refs)
    except QueueUnavailableError as exc:
        log.warning("could not remove %d job(s), the watchdog retries: %s", len(refs), exc)
        return
    if gone:
        store_for(session).forget_jobs(session, gone)
        session.commit()


# --- pause, resume, skip ahead ---------------------------------------------------------------


def pause_schedule(
    pb: Postburner, schedule_id: int, *, reason: str | None, now: datetime | None = None
) -> bool:
    """Pause one schedule under its lock: set ``paused_at`` and ``pause_reason``, retire its
    executions that have not started (recording the due ones ``paused``), commit, then
    remove their jobs. False, changing nothing, when it is already paused (or gone)."""
    now = now or pb.clock()
    with pb.work_session() as session:
        store = store_for(session)
        store.lock_schedules(session, pb.settings.namespace, [schedule_id], blocking=True)
        schedule = session.get(Schedule, schedule_id, populate_existing=True)
        if schedule is None or schedule.is_paused:
            return False
        schedule.paused_at, schedule.pause_reason = now, reason
        session.flush()
        outcome = converge(pb, session, schedule_id, now)
        due = [(ref.key, ref.run_at) for ref in outcome.retired_due]
        store.record_missed(
            session, due, node_id=pb.settings.node_id, now=now, status=DispatchStatus.PAUSED
        )
        session.commit()
        remove_jobs(pb, session, outcome.retired)
    log.info("schedule %s paused at %s: %s", schedule.name, now.isoformat(), reason or "-")
    return True


def resume_schedule(pb: Postburner, schedule_id: int, *, now: datetime | None = None) -> bool:
    """Resume one paused schedule: record every occurrence since the pause ``paused`` (one
    batch insert, at most ``MAX_LISTED_MISSED`` rows), clear the pause and count the
    schedule accounted for up to ``now`` (``resumed_at``), so the next run is the first
    grid point after ``now``; then reconcile it. False when it is not paused (or gone)."""
    now = now or pb.clock()
    with pb.work_session() as session:
        store = store_for(session)
        store.lock_schedules(session, pb.settings.namespace, [schedule_id], blocking=True)
        schedule = session.get(Schedule, schedule_id, populate_existing=True)
        if schedule is None or schedule.paused_at is None:
            return False
        paused = _paused_points(schedule, schedule.paused_at, now)
        store.record_missed(
            session, paused, node_id=pb.settings.node_id, now=now, status=DispatchStatus.PAUSED
        )
        schedule.paused_at, schedule.pause_reason, schedule.resumed_at = None, None, now
        session.commit()
    log.info("schedule %s resumed; %d paused occurrence(s) recorded", schedule.name, len(paused))
    try:
        reconcile_schedule(pb, schedule_id, now=now)
    except UnplannableScheduleError as exc:
        log.warning("resumed; nothing queued: %s", exc)
    return True


def _paused_points(
    schedule: Schedule, since: datetime, now: datetime
) -> list[tuple[str, datetime]]:
    try:
        with planning(schedule.name):
            points = schedule.occurrence_grid().between(since, now)
            return [(schedule.name, point) for point in islice(points, MAX_LISTED_MISSED)]
    except UnplannableScheduleError:
        return []  # a row that cannot be planned had no occurrence to record


def skip_occurrence(
    pb: Postburner, schedule_id: int, run_at: datetime, *, now: datetime | None = None
) -> bool:
    """Skip the occurrence of one schedule at ``run_at``, a future point of its grid.

    The queued one is skipped as :func:`skip_execution` does; any later one is recorded in
    the dispatch log as ``skipped`` (under the schedule's lock, so no planner creates it
    meanwhile) and planning steps over it. Raises :class:`OffGridError` for an instant that
    is not an occurrence and :class:`ScheduleValidationError` for one not after ``now``.
    False, changing nothing, when it is already skipped or claimed by a worker.
    """
    now = now or pb.clock()
    with pb.work_session() as session:
        store = store_for(session)
        store.lock_schedules(session, pb.settings.namespace, [schedule_id], blocking=True)
        schedule = session.get(Schedule, schedule_id, populate_existing=True)
        if schedule is None:
            raise PostburnerError(f"no schedule with id {schedule_id}")
        check_occurrence(schedule, run_at, now)
        queued = [e for e in store.live_executions(session, schedule_id) if e.run_at == run_at]
        if not queued:
            added = store.record_missed(
                session,
                [(schedule.name, run_at)],
                node_id=pb.settings.node_id,
                now=now,
                status=DispatchStatus.SKIPPED,
            )
            session.commit()
            return added == 1
    return skip_execution(pb, queued[0].id, now=now)


def check_occurrence(schedule: Schedule, run_at: datetime, now: datetime) -> None:
    """Refuse an instant that is not a future occurrence of ``schedule``."""
    with planning(schedule.name):
        grid = schedule.occurrence_grid()
        on_grid = grid.is_on_grid(run_at)
        nearest = None if on_grid else (_nearest_before(grid, run_at), _after(grid, run_at))
    if nearest is not None:
        raise OffGridError("run_at", run_at, *nearest)
    if run_at <= now:
        raise ScheduleValidationError(
            "run_at",
            f"{run_at.isoformat()} is not in the future (now {now.isoformat()}); only a coming "
            "occurrence can be skipped ahead",
        )


def _nearest_before(grid: WindowedGrid, instant: datetime) -> datetime | None:
    point = point_before(grid.grid, instant)
    return point if point is not None and grid.contains(point) else None


def _after(grid: WindowedGrid, instant: datetime) -> datetime | None:
    try:
        return grid.next_after(instant)
    except WindowEnded:
        return None


# --- reconcile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    """One occurrence: its dispatch-log key and its run_at."""

    key: str
    run_at: datetime


@dataclass
class Convergence:
    """What one reconcile changed in the database, to be mirrored in Beanstalkd after commit."""

    retired: list[JobRef] = field(default_factory=list)
    #: The retired executions that were due and waiting for a worker: (key, run_at).
    retired_due: list[Occurrence] = field(default_factory=list)
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
        store = store_for(session)
        if not store.lock_schedules(
            session, pb.settings.namespace, [schedule_id], blocking=blocking
        ):
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
    live = store_for(session).live_executions(session, schedule_id)
    outcome = Convergence(invalid=unloadable)
    waiting = _not_started(session, [e for e in live if e.run_at <= now])
    future = [e for e in live if e.run_at > now]
    if schedule is None or not schedule.enabled or schedule.is_paused:
        _retire_rows(outcome, future + waiting)
        outcome.retired_due = [
            Occurrence(str(e.cached_schedule["name"]), e.run_at) for e in waiting
        ]
        return outcome
    try:
        plan = _plan(pb, session, schedule, now)
    except UnplannableScheduleError as exc:
        _retire_rows(outcome, future + waiting)
        outcome.invalid = exc
        return outcome
    _record_missed(session, schedule, plan, now)
    outcome.missed = plan.missed_total
    keep = _keeper(schedule, future + waiting, plan)
    _retire_rows(outcome, [e for e in future if e is not keep])
    if keep is None and plan.run_at is not None and not (plan.is_due(now) and waiting):
        keep = _create_execution(session, schedule, plan.run_at, plan.following)
        outcome.created.append(keep.id)
    for execution in [keep, *waiting]:
        if execution is not None and execution.is_live and not execution.enqueued:
            outcome.to_enqueue.append(execution.id)
    return outcome


def _unloadable(session: Session, schedule_id: int, exc: Exception) -> UnplannableScheduleError:
    name = store_for(session).schedule_name(session, schedule_id)
    return UnplannableScheduleError(name or f"#{schedule_id}", reason(exc))


def _plan(pb: Postburner, session: Session, schedule: Schedule, now: datetime) -> SchedulePlan:
    """The plan (and the grid point after it), computed before anything is written."""
    baseline = _baseline(session, schedule, now)
    skipped = store_for(session).skipped_ahead(session, [schedule.name], baseline)
    with planning(schedule.name):
        return plan_schedule(
            schedule.occurrence_grid(),
            baseline=baseline,
            now=now,
            catch_up=schedule.catch_up,
            window=catch_up_window(schedule, pb.settings.catch_up_window),
            skipped=skipped.get(schedule.name, ()),
        )


def _not_started(session: Session, executions: list[ScheduleExecution]) -> list[ScheduleExecution]:
    """The due executions that no worker has claimed yet (waiting in the queue)."""
    if not executions:
        return []
    occurrences = [(str(e.cached_schedule["name"]), e.run_at) for e in executions]
    claimed = store_for(session).claimed_occurrences(session, occurrences)
    return [
        e
        for e, occurrence in zip(executions, occurrences, strict=True)
        if occurrence not in claimed
    ]


def _baseline(session: Session, schedule: Schedule, now: datetime) -> datetime:
    """The last instant this schedule is accounted for (latest run or skip, or resumed_at)."""
    latest = store_for(session).latest_accounted(session, [schedule.id], now).get(schedule.id)
    candidates = [t for t in (latest, schedule.resumed_at) if t is not None]
    return max(candidates) if candidates else now


def _keeper(
    schedule: Schedule, candidates: list[ScheduleExecution], plan: SchedulePlan
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
    session: Session, schedule: Schedule, run_at: datetime, next_run_at: datetime | None
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


def _record_missed(session: Session, schedule: Schedule, plan: SchedulePlan, now: datetime) -> None:
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


register_lifecycle(cast("LifecycleRules", sys.modules[__name__]))
