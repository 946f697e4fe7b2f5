"""The watchdog's reconcile pass: every schedule converged with a handful of set-based statements.

A pass never walks the schedules one by one. Four read-only queries find, whatever the number
of schedules, the rows that need work (see ``docs/watchdog.md``):

1. *stale*: live executions of disabled or deleted schedules (not yet started);
2. *drifted*: schedules whose live future execution no longer matches the schedule's columns,
   or that have more than one (compared in SQL, so a change made with raw SQL is seen too);
3. *missing*: enabled schedules without a live future execution (found by the same grouped
   query as 2);
4. *unqueued*: live executions without a Beanstalkd job (``pending``, or ``scheduled`` whose put
   failed or whose putter died, past :data:`~postburner_py.schedules.lifecycle.ENQUEUE_GRACE`);
5. *leftover jobs*: skipped or superseded executions (and cancelled one-off jobs) whose job
   could not be deleted yet.

Pending one-off jobs (``enqueue_at``) without a Beanstalkd job are put again in step 4 too.
Before step 1, a pass checks whether the zone rules changed since it last planned
(:mod:`postburner_py.watchdog.tzdata_drift`) and re-plans what they moved, the drift way.

Repairs run in batches, each one transaction holding the per-schedule locks it could take
without waiting (``Store.try_lock_schedules``; rows are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several watchdogs share the work and never create
the same execution twice; the partial unique index on live ``(schedule_id, run_at)`` is the
backstop. Writes are batched: one bulk INSERT of new executions per batch, one UPDATE per kind
of change. Puts go out after the commit, pipelined over several connections, and the job ids
are recorded with one UPDATE per chunk. Creating the missing executions is the operation the
worker's chaining shares (:mod:`postburner_py.schedules.chaining`); every statement is a method
of the store (:class:`~postburner_py.store.contract.schedules.ScheduleStore`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from postburner_py.errors import PostburnerError, QueueUnavailableError, UnplannableScheduleError
from postburner_py.queue.operations import JobRef, delete_jobs
from postburner_py.schedules.chaining import (
    CREATE_BATCH,
    MAX_LISTED_INVALID,
    PUT_CHUNK,
    PUT_CONNECTIONS,
    BackgroundPuts,
    PassReport,
    QueuedExecution,
    check_puttable,
    chunks,
    create_next_executions,
    put_and_record,
)
from postburner_py.schedules.lifecycle import ENQUEUE_GRACE, converge
from postburner_py.schedules.one_off import put_delayed
from postburner_py.schedules.planning import snapshot_window, unloadable_schedules
from postburner_py.store import store_for
from postburner_py.store.contract.schedules import JobKind
from postburner_py.watchdog.tzdata_drift import Observer, check_tzdata

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.orm import Session

    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.watchdog")

#: How far back a pass looks at due executions (to put them late, or record them missed).
#: Keep it well inside the dispatch log's retention: older rows cannot be told apart from
#: occurrences that ran and whose dispatch row was cleaned up.
LOOKBACK = timedelta(hours=12)
#: Schedules (or executions) per transaction for the other repairs.
REPAIR_BATCH = 500


#: Step 3 is the creation path the worker's chaining shares.
create_missing = create_next_executions

__all__ = [
    "CREATE_BATCH",
    "LOOKBACK",
    "MAX_LISTED_INVALID",
    "PUT_CHUNK",
    "PUT_CONNECTIONS",
    "REPAIR_BATCH",
    "BackgroundPuts",
    "PassReport",
    "QueuedExecution",
    "check_puttable",
    "chunks",
    "create_missing",
    "put_and_record",
    "queue_unqueued",
    "queue_unqueued_delayed",
    "reconcile_pass",
]


def reconcile_pass(
    pb: Postburner, *, now: datetime, report: PassReport | None = None
) -> PassReport:
    """Converge every schedule as of ``now``; see the module docstring for the steps."""
    report = report if report is not None else PassReport()
    check_tzdata(pb, now=now, report=report, repair=repair_drift)
    retire_stale(pb, now, report)
    with pb.session() as session:
        missing, wrong = schedules_to_converge(session, now)
        unloadable = unloadable_schedules(session, enabled_only=True)
    if unloadable:
        retire_unloadable(pb, unloadable, now, report)
        missing = [sid for sid in missing if sid not in unloadable]
        wrong = [sid for sid in wrong if sid not in unloadable]
    repair_drift(pb, wrong, now, report)
    create_missing(pb, missing, now, report)
    queue_unqueued(pb, now, report)
    queue_unqueued_delayed(pb, now, report)
    remove_retired_jobs(pb, now, report)
    report.log_problems()
    return report


# --- 1. stale: live executions of disabled or deleted schedules --------------------------------


def retire_stale(pb: Postburner, now: datetime, report: PassReport) -> None:
    """Supersede the live executions of disabled or deleted schedules (jobs go in step 5)."""
    with pb.session() as session:
        found = store_for(session).stale_executions(session, now, LOOKBACK)
    for chunk in chunks(found, REPAIR_BATCH):
        with pb.work_session() as session:
            store = store_for(session)
            locked = store.try_lock_schedules(session, pb.settings.namespace, _schedule_ids(chunk))
            ids = [row.id for row in chunk if row.schedule_id is None or row.schedule_id in locked]
            retired = store.supersede_executions(
                session, ids, now, still="stale", lookback=LOOKBACK
            )
            report.superseded += len(retired)
            session.commit()


def _schedule_ids(rows: Iterable[Any]) -> list[int]:
    return sorted({row.schedule_id for row in rows if row.schedule_id is not None})


def retire_unloadable(
    pb: Postburner, found: dict[int, UnplannableScheduleError], now: datetime, report: PassReport
) -> None:
    """Count the schedules whose rows cannot even be loaded (SQLite, see
    :func:`~postburner_py.schedules.planning.unloadable_schedules`) and treat them as disabled, like
    ``converge`` does with a row that cannot be planned: one UPDATE per batch."""
    for error in found.values():
        report.unplannable(error)
    for chunk in chunks(sorted(found), REPAIR_BATCH):
        with pb.work_session() as session:
            store = store_for(session)
            locked = store.try_lock_schedules(session, pb.settings.namespace, chunk)
            ids = store.live_not_started(session, sorted(locked), now)
            retired = store.supersede_executions(session, ids, now, still="live")
            report.superseded += len(retired)
            session.commit()


# --- 2. drift: the live future execution does not match the schedule ---------------------------


def schedules_to_converge(session: Session, now: datetime) -> tuple[list[int], list[int]]:
    """One grouped query over every enabled schedule and its live future executions.

    Returns the schedules without one (to create) and those whose future executions are
    wrong: more than one, or drifted (to converge). Drift is compared in SQL, never from
    values Python kept, so an edit made behind the API's back is seen by the next pass.
    """
    return store_for(session).schedules_to_converge(session, now)


def repair_drift(
    pb: Postburner,
    schedule_ids: list[int],
    now: datetime,
    report: PassReport,
    *,
    observe: Observer | None = None,
) -> None:
    """Converge drifted or duplicated schedules with the single-schedule rules (``converge``).

    Few schedules drift at once (an edit, a deploy), so each runs the full ``converge``; the
    batch still shares one transaction and one commit. The pending executions it creates are
    put by step 4, the retired ones' jobs deleted by step 5. ``observe`` is told each
    schedule's outcome before its batch commits (the tzdata check logs the moves).
    """
    for chunk in chunks(schedule_ids, REPAIR_BATCH):
        with pb.work_session() as session:
            locked = store_for(session).try_lock_schedules(session, pb.settings.namespace, chunk)
            for schedule_id in sorted(locked):
                outcome = converge(pb, session, schedule_id, now)
                if observe is not None:
                    observe(session, schedule_id, outcome)
                report.superseded += len(outcome.retired)
                report.created += len(outcome.created)
                report.missed += outcome.missed
                if outcome.invalid is not None:
                    report.unplannable(outcome.invalid)
                else:
                    report.repaired += bool(outcome.retired or outcome.created)
            session.commit()


# --- 4. unqueued: live executions without a job -------------------------------------------------


def queue_unqueued(
    pb: Postburner, now: datetime, report: PassReport, ids: Sequence[int] | None = None
) -> None:
    """Put every live execution that has no job (restricted to ``ids`` when given).

    A due one is put only if a worker would still run it (the worker's rule: at most
    ``catch_up_window`` late, and with ``catch_up=False`` only before the next occurrence is
    due); otherwise it is superseded and its occurrence recorded ``missed``.
    """
    with pb.session() as session:
        store = store_for(session)
        found = store.unqueued_executions(session, now, LOOKBACK, ENQUEUE_GRACE, ids)
    if report.queue_error is not None:
        if ids is None:
            report.unqueued = len(found)  # the full scan: every execution left without a job
        return
    with BackgroundPuts(pb, report) as puts:
        for chunk in chunks(found, CREATE_BATCH):
            with pb.work_session() as session:
                claimed = _claim_batch(pb, session, chunk, now, report)
                session.commit()
            report.requeued += len(claimed)
            puts.submit(claimed)
    report.requeued -= puts.left
    report.unqueued += puts.left


def _claim_batch(
    pb: Postburner, session: Session, ids: Sequence[int], now: datetime, report: PassReport
) -> list[QueuedExecution]:
    store = store_for(session)
    rows = store.claim_unqueued(session, ids, now, LOOKBACK, ENQUEUE_GRACE)
    too_late = [row for row in rows if not _would_run(pb, row, now)]
    _settle_too_late(pb, session, too_late, now, report)
    skip = {row.id for row in too_late}
    claimable = []
    for row in rows:
        if row.id in skip:
            continue
        snapshot = row.cached_schedule
        try:
            check_puttable(pb, snapshot.get("queue"), snapshot.get("priority"), snapshot.get("ttr"))
        except PostburnerError as exc:
            report.invalid += 1
            report.note(f"execution {row.id} cannot be queued: {exc}")
            continue
        claimable.append(QueuedExecution.of(row.id, row.run_at, snapshot))
    store.mark_claimed(session, [item.execution_id for item in claimable], now)
    return claimable


def _would_run(pb: Postburner, row: Row[Any], now: datetime) -> bool:
    """The worker's lateness rule (``job_runner``): would a delivery now still run?"""
    if row.run_at > now or row.cached_schedule.get("trigger") not in (None, "schedule"):
        return True  # an occurrence an operator asked for is never too late
    window = snapshot_window(row.cached_schedule)
    if now - row.run_at > (pb.settings.catch_up_window if window is None else window):
        return False
    catch_up = bool(row.cached_schedule.get("catch_up"))
    return catch_up or row.next_run_at is None or row.next_run_at > now


def _settle_too_late(
    pb: Postburner, session: Session, rows: list[Row[Any]], now: datetime, report: PassReport
) -> None:
    """Supersede due executions too late to run and record their occurrences missed."""
    if not rows:
        return
    store = store_for(session)
    locked = store.try_lock_schedules(session, pb.settings.namespace, _schedule_ids(rows))
    mine = [row for row in rows if row.schedule_id in locked]
    retired = store.supersede_executions(
        session,
        [row.id for row in mine],
        now,
        still="unqueued",
        lookback=LOOKBACK,
        grace=ENQUEUE_GRACE,
    )
    gone = {row[0] for row in retired}
    missed = [(str(row.cached_schedule["name"]), row.run_at) for row in mine if row.id in gone]
    report.superseded += len(gone)
    report.missed += store.record_missed(session, missed, node_id=pb.settings.node_id, now=now)


# --- 4b. one-off delayed jobs without a job ---------------------------------------------------


def queue_unqueued_delayed(
    pb: Postburner, now: datetime, report: PassReport, ids: Sequence[int] | None = None
) -> None:
    """Put pending one-off jobs that have no Beanstalkd job (a failed put, a lost job).

    Rare, so one at a time through ``delayed_jobs.put_delayed``; a conditional claim first
    keeps two watchdogs from putting the same job. The worker decides about lateness.
    """
    if report.queue_error is not None:
        return
    with pb.session() as session:
        rows = store_for(session).unqueued_delayed(session, now, ENQUEUE_GRACE, ids)
    for row in rows:
        if not _claim_delayed(pb, row.id, now):
            continue
        try:
            put_delayed(pb, row, now=pb.clock())
        except QueueUnavailableError as exc:
            report.queue_error = str(exc)
            report.unqueued += 1
            return
        report.requeued += 1


def _claim_delayed(pb: Postburner, delayed_id: int, now: datetime) -> bool:
    with pb.work_session() as session:
        claimed = store_for(session).claim_delayed(session, delayed_id, now, ENQUEUE_GRACE)
        session.commit()
    return claimed


# --- 5. leftover jobs of retired executions and cancelled one-off jobs --------------------------

_RETIRED: tuple[JobKind, ...] = ("execution", "delayed")


def remove_retired_jobs(pb: Postburner, now: datetime, report: PassReport) -> None:
    """Delete the jobs of skipped, superseded or cancelled rows, then forget their ids.

    A job a worker holds reserved cannot be deleted; it keeps its id and is tried again next
    pass (the worker drops it anyway: its row is no longer ``scheduled``/``pending``).
    """
    for kind in _RETIRED:
        if report.queue_error is not None:
            return
        try:
            report.removed += _remove_retired(pb, kind, now)
        except QueueUnavailableError as exc:
            report.queue_error = str(exc)


def _remove_retired(pb: Postburner, kind: JobKind, now: datetime) -> int:
    with pb.session() as session:
        found = store_for(session).retired_jobs(session, kind, now, LOOKBACK)
    gone = delete_jobs(pb, [JobRef(row[0], row[1], row[2], kind=kind) for row in found])
    for chunk in chunks(gone, PUT_CHUNK):
        with pb.work_session() as session:
            store_for(session).forget_retired_jobs(session, kind, chunk, now, LOOKBACK)
            session.commit()
    return len(gone)
