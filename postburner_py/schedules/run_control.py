"""Runs an operator asks for: run now, backfill a past window, retry a failed occurrence.

Each is an occurrence of the schedule like its grid's: an execution row whose snapshot names
its ``trigger`` (``manual``, ``backfill``), put into Beanstalkd with no delay, admitted by a
worker through the same signature check, fencing, dispatch log and overlap rule, and
recorded in the job history with that trigger. The grid is untouched: the schedule's queued
future execution stays, so "one live future execution per schedule" holds.

* Run now (:func:`trigger_now`): the occurrence's ``fire_time`` is the present instant
  truncated to whole seconds, so two callers in the same second make one occurrence (the live
  ``(schedule_id, run_at)`` index and the dispatch log's ``(key, fire_time)`` keep one).
* Backfill (:func:`backfill`): every grid point of a past window with no dispatch-log row,
  oldest first, at most :data:`MAX_BACKFILL_POINTS`. Unless the schedule allows overlap, each
  waits for the one running (none is skipped: they were asked for), so they run one at a time.
* Retry (:func:`retry_occurrence`): a ``failed`` occurrence is reopened in the dispatch log as
  trigger ``retry`` and its job kicked (or put again): the next delivery runs it as the next
  attempt, one beyond ``max_attempts``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from postburner_py.clock import require_aware
from postburner_py.errors import PostburnerError, ScheduleValidationError
from postburner_py.queue.signing import JobBody, encode_body
from postburner_py.schedules.chaining import PassReport, QueuedExecution, put_and_record
from postburner_py.store import store_for
from postburner_py.store.dispatch_records import Overlap, Trigger
from postburner_py.store.engine import utcnow
from postburner_py.store.models import (
    SCHEDULED,
    RunControlRules,
    Schedule,
    ScheduleExecution,
    register_run_control,
)
from postburner_py.validation import validate_overlap

if TYPE_CHECKING:
    from postburner_py.app import Postburner

#: The most grid points one backfill may run (a larger window is refused: split it).
MAX_BACKFILL_POINTS = 1000


@dataclass(frozen=True)
class Triggered:
    """An occurrence an operator asked for: its key and ``fire_time``, and whether this call
    queued it (False: the same occurrence was queued already, by another caller or the grid)."""

    key: str
    fire_time: datetime
    queued: bool


@dataclass(frozen=True)
class Backfill:
    """What a backfill found (``points``: the window's grid points with no dispatch-log row,
    oldest first) and how many of them it queued (0 for a dry run)."""

    points: list[datetime]
    queued: int


def trigger_now(
    pb: Postburner, schedule_id: int, *, overlap: str | None = None, now: datetime | None = None
) -> Triggered:
    """Run the schedule's job once, now, as its own occurrence (trigger ``manual``).

    ``overlap`` (default: the schedule's) is the policy this one occurrence obeys. Raises
    :class:`ScheduleValidationError` for a bad ``overlap`` and :class:`PostburnerError` for a
    schedule that does not exist or is disabled; nothing is written then."""
    policy = None if overlap is None else validate_overlap(overlap)
    now = require_aware("now", now or pb.clock())
    fire_time = now.replace(microsecond=0)
    with pb.work_session() as session:
        schedule = _enabled_schedule(session, schedule_id)
        row = _row(schedule, fire_time, now, Trigger.MANUAL, policy)
        inserted = store_for(session).insert_occurrences(session, [row])
        queued = _queued(schedule, inserted)
        session.commit()
    _put(pb, queued)
    return Triggered(schedule.name, fire_time, bool(queued))


def backfill(
    pb: Postburner,
    schedule_id: int,
    start: datetime,
    end: datetime,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Backfill:
    """Run every grid point in ``start <= t <= end`` that has no dispatch-log row (never ran,
    was never recorded missed or skipped), oldest first, each as trigger ``backfill``.

    Refuses (:class:`ScheduleValidationError`, nothing written) a window that ends after
    ``now`` or holds more than :data:`MAX_BACKFILL_POINTS` grid points. Two backfills of one
    window queue each occurrence once (the live ``(schedule_id, run_at)`` index), and the
    dispatch log runs each once."""
    now = require_aware("now", now or pb.clock())
    start, end = require_aware("start", start), require_aware("end", end)
    _check_window(start, end, now)
    with pb.work_session() as session:
        schedule = _enabled_schedule(session, schedule_id)
        points = _never_ran(session, schedule, _grid_points(schedule, start, end))
        if dry_run or not points:
            return Backfill(points, 0)
        policy = Overlap.ALLOW if schedule.overlap == Overlap.ALLOW else Overlap.WAIT
        rows = [_row(schedule, point, now, Trigger.BACKFILL, policy) for point in points]
        queued = _queued(schedule, store_for(session).insert_occurrences(session, rows))
        session.commit()
    _put(pb, sorted(queued, key=lambda item: item.run_at))
    return Backfill(points, len(queued))


def retry_occurrence(
    pb: Postburner, schedule_id: int, fire_time: datetime, *, now: datetime | None = None
) -> Triggered:
    """Run a ``failed`` (or buried) occurrence of the schedule again, as its next attempt.

    Raises :class:`PostburnerError` (nothing written) when the schedule does not exist or the
    occurrence is not ``failed`` in the dispatch log (never ran, still running, completed)."""
    now = require_aware("now", now or pb.clock())
    fire_time = require_aware("at", fire_time)
    with pb.work_session() as session:
        schedule = _schedule(session, schedule_id)
        store = store_for(session)
        reopened = store.reopen_for_retry(session, schedule.name, fire_time, now=now)
        if reopened is None:
            found = store.find_dispatch(session, schedule.name, fire_time)
            state = "no dispatch-log row" if found is None else f"status {found.status}"
            raise PostburnerError(
                f"{schedule.name} at {fire_time.isoformat()} cannot be retried: it has "
                f"{state}; only a failed occurrence is retried (postburner dispatches "
                f"--key {schedule.name} --status failed lists them)"
            )
        execution = _execution_at(session, schedule, fire_time)
        if execution is None:
            row = _row(schedule, fire_time, now, Trigger.RETRY, None)
            inserted = store.insert_occurrences(session, [row])
            execution_id, job_id = inserted[0][0], None
        else:
            execution_id, job_id = execution.id, execution.beanstalk_job_id
        session.commit()
    if job_id is None or not pb.queue.kick_job(job_id):
        _put_now(pb, schedule, execution_id, fire_time)
    return Triggered(schedule.name, fire_time, True)


# --- helpers ----------------------------------------------------------------------------------


def _schedule(session: Session, schedule_id: int) -> Schedule:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        raise PostburnerError(f"schedule #{schedule_id} does not exist")
    return schedule


def _enabled_schedule(session: Session, schedule_id: int) -> Schedule:
    schedule = _schedule(session, schedule_id)
    if not schedule.enabled:
        raise PostburnerError(
            f"schedule {schedule.name!r} is disabled: enable it first (its occurrences would "
            "be retired before they ran)"
        )
    return schedule


def _row(
    schedule: Schedule, fire_time: datetime, now: datetime, trigger: str, overlap: str | None
) -> dict[str, Any]:
    snapshot = schedule.snapshot()
    snapshot["trigger"] = str(trigger)
    if overlap is not None:
        snapshot["overlap"] = str(overlap)
    stamp = utcnow()
    return {
        "schedule_id": schedule.id,
        "run_at": fire_time,
        "next_run_at": None,
        "status": SCHEDULED,
        "enqueued_at": now,  # claimed for the put that follows the commit
        "cached_schedule": snapshot,
        "created_at": stamp,
        "updated_at": stamp,
    }


def _queued(schedule: Schedule, inserted: list[tuple[int, datetime]]) -> list[QueuedExecution]:
    # No jitter: an occurrence an operator asked for starts when it is asked for.
    return [
        QueuedExecution(
            execution_id, schedule.name, run_at, schedule.queue, schedule.priority, schedule.ttr
        )
        for execution_id, run_at in inserted
    ]


def _put(pb: Postburner, queued: list[QueuedExecution]) -> None:
    """Put the committed rows (delay 0: they are due) and record their job ids; a row left
    without a job (Beanstalkd away) is queued by the watchdog's next pass."""
    if queued and put_and_record(pb, queued, PassReport()):
        raise PostburnerError(
            f"{len(queued)} occurrence(s) stored but Beanstalkd did not take their jobs: the "
            "watchdog queues them once it answers"
        )


def _put_now(pb: Postburner, schedule: Schedule, execution_id: int, fire_time: datetime) -> None:
    body = encode_body(JobBody("execution", execution_id, schedule.name, fire_time), pb.secret())
    pb.queue.put(body, queue=schedule.queue, priority=schedule.priority, delay=0, ttr=schedule.ttr)


def _check_window(start: datetime, end: datetime, now: datetime) -> None:
    if end < start:
        raise ScheduleValidationError("end", f"{end.isoformat()} is before start {start}")
    if end > now:
        raise ScheduleValidationError(
            "end",
            f"{end.isoformat()} is in the future (now {now.isoformat()}): a backfill runs "
            "past occurrences only; the grid runs the future ones",
        )


def _grid_points(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    grid = schedule.grid()
    points: list[datetime] = []
    point = grid.next_after(start - timedelta(microseconds=1))
    while point <= end:
        if len(points) == MAX_BACKFILL_POINTS:
            raise ScheduleValidationError(
                "start",
                f"the window holds more than {MAX_BACKFILL_POINTS} grid points of "
                f"{schedule.name!r}: backfill it in smaller windows",
            )
        points.append(point)
        point = grid.next_after(point)
    return points


def _never_ran(session: Session, schedule: Schedule, points: list[datetime]) -> list[datetime]:
    """The points with no dispatch-log row (never claimed, missed, skipped or paused)."""
    recorded = store_for(session).claimed_occurrences(
        session, [(schedule.name, point) for point in points]
    )
    return [point for point in points if (schedule.name, point) not in recorded]


def _execution_at(
    session: Session, schedule: Schedule, fire_time: datetime
) -> ScheduleExecution | None:
    statement = select(ScheduleExecution).where(
        ScheduleExecution.schedule_id == schedule.id,
        ScheduleExecution.run_at == fire_time,
        ScheduleExecution.status == SCHEDULED,
    )
    return session.scalars(statement).first()


register_run_control(cast("RunControlRules", sys.modules[__name__]))
