"""The generic SQLAlchemy implementation of the report facet of the storage seam."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, inspect, literal, select, text, union, update
from sqlalchemy.orm import defer

from postburner_py.keys import ONE_OFF_KEY_PREFIX
from postburner_py.store import queries
from postburner_py.store.contract.reports import ReportStore
from postburner_py.store.dispatch_records import DispatchRecord
from postburner_py.store.history_records import HistoryRecord
from postburner_py.store.models import (
    LIVE_STATUSES,
    DelayedJob,
    DelayedStatus,
    Schedule,
    ScheduleExecution,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session


class SqlReportStore(ReportStore):
    """:class:`ReportStore` in SQLAlchemy Core, branching on capabilities where families differ."""

    def ping(self, connection: Connection) -> None:
        connection.execute(text(queries.load("reports")["ping"]))

    def is_migrated(self, connection: Connection) -> bool:
        return bool(inspect(connection).has_table(Schedule.__tablename__))

    def schedules_with_next_run(
        self, session: Session, now: datetime, *, unloadable: Collection[int] = ()
    ) -> list[tuple[Schedule, datetime | None]]:
        next_run = (
            select(func.min(ScheduleExecution.run_at))
            .where(
                ScheduleExecution.schedule_id == Schedule.id,
                ScheduleExecution.status.in_(LIVE_STATUSES),
                ScheduleExecution.run_at > now,
            )
            .scalar_subquery()
        )
        statement = select(Schedule, next_run).order_by(Schedule.name)
        if not unloadable:
            return _pairs(session.execute(statement).all())
        broken = Schedule.id.in_(sorted(unloadable))
        lean = statement.where(broken).options(*_deferred_instants())
        rows = [*session.execute(statement.where(~broken)).all(), *session.execute(lean).all()]
        return sorted(_pairs(rows), key=lambda row: row[0].name)

    def last_dispatches(self, session: Session) -> dict[str, DispatchRecord]:
        newest = _newest_occurrences()
        statement = select(DispatchRecord).join(
            newest,
            (DispatchRecord.key == newest.c.key) & (DispatchRecord.fire_time == newest.c.fire_time),
        )
        return {row.key: row for row in session.scalars(statement)}

    def last_runs(self, session: Session) -> dict[str, HistoryRecord]:
        newest = _newest_occurrences()
        history = HistoryRecord
        paired = (
            select(func.max(history.id))
            .join(
                newest,
                and_(history.schedule_name == newest.c.key, history.run_at == newest.c.fire_time),
            )
            .group_by(history.schedule_name)
        )
        undispatched = (
            select(func.max(history.id))
            .where(
                history.schedule_name.is_not(None),
                ~exists().where(DispatchRecord.key == history.schedule_name),
            )
            .group_by(history.schedule_name)
        )
        statement = select(history).where(history.id.in_(union(paired, undispatched)))
        return {str(row.schedule_name): row for row in session.scalars(statement)}

    def due_by_queue(self, session: Session, now: datetime) -> dict[str, int]:
        execution, dispatch = ScheduleExecution, DispatchRecord
        scheduled = (
            select(Schedule.queue, func.count())
            .join(execution, execution.schedule_id == Schedule.id)
            .where(
                execution.status.in_(LIVE_STATUSES),
                execution.run_at <= now,
                ~exists().where(
                    dispatch.key == Schedule.name, dispatch.fire_time == execution.run_at
                ),
            )
            .group_by(Schedule.queue)
        )
        one_off_key = literal(ONE_OFF_KEY_PREFIX) + DelayedJob.job_id
        one_off = (
            select(DelayedJob.queue, func.count())
            .where(
                DelayedJob.status == DelayedStatus.PENDING,
                DelayedJob.run_at <= now,
                ~exists().where(
                    dispatch.key == one_off_key, dispatch.fire_time == DelayedJob.run_at
                ),
            )
            .group_by(DelayedJob.queue)
        )
        due: dict[str, int] = {}
        for statement in (scheduled, one_off):
            for queue, count in session.execute(statement):
                due[str(queue)] = due.get(str(queue), 0) + int(count)
        return due

    def dispatch_counts_since(self, session: Session, since: datetime) -> dict[str, int]:
        rows = session.execute(
            select(DispatchRecord.status, func.count())
            .where(DispatchRecord.fire_time >= since)
            .group_by(DispatchRecord.status)
        )
        return {str(status): int(count) for status, count in rows}

    def schedule_by_name(
        self, session: Session, name: str, *, defer_instants: bool = False
    ) -> Schedule | None:
        statement = select(Schedule).where(Schedule.name == name)
        if defer_instants:
            statement = statement.options(*_deferred_instants())
        return session.scalar(statement)

    def live_execution_at(
        self, session: Session, schedule_name: str, run_at: datetime
    ) -> ScheduleExecution | None:
        return session.scalar(
            select(ScheduleExecution)
            .join(Schedule, Schedule.id == ScheduleExecution.schedule_id)
            .where(
                Schedule.name == schedule_name,
                ScheduleExecution.run_at == run_at,
                ScheduleExecution.status.in_(LIVE_STATUSES),
            )
        )

    def disable_schedule(self, session: Session, schedule_id: int) -> None:
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(enabled=False)
            .execution_options(synchronize_session=False)
        )

    def all_schedules(self, session: Session) -> list[Schedule]:
        return list(session.scalars(select(Schedule)))

    def queued_run_ats(self, session: Session, now: datetime) -> dict[int, datetime]:
        table = ScheduleExecution
        rows = session.execute(
            select(table.schedule_id, func.min(table.run_at))
            .where(
                table.status.in_(LIVE_STATUSES), table.run_at > now, table.schedule_id.is_not(None)
            )
            .group_by(table.schedule_id)
        )
        return {schedule_id: run_at for schedule_id, run_at in rows if schedule_id is not None}

    def live_counts(self, session: Session) -> dict[tuple[str, str], int]:
        executions = (
            select(Schedule.queue, func.count())
            .join(ScheduleExecution, ScheduleExecution.schedule_id == Schedule.id)
            .where(ScheduleExecution.status.in_(LIVE_STATUSES))
            .group_by(Schedule.queue)
        )
        delayed = (
            select(DelayedJob.queue, func.count())
            .where(DelayedJob.status == DelayedStatus.PENDING)
            .group_by(DelayedJob.queue)
        )
        counts = {("execution", queue): n for queue, n in session.execute(executions)}
        counts.update((("delayed", queue), n) for queue, n in session.execute(delayed))
        return counts


def _deferred_instants() -> list[Any]:
    """Load options deferring every instant column a hand-edited SQLite row may spoil."""
    columns = (Schedule.anchor, Schedule.resumed_at, Schedule.starts_at, Schedule.ends_at)
    return [defer(column) for column in (*columns, Schedule.paused_at)]


def _pairs(rows: Any) -> list[tuple[Schedule, datetime | None]]:
    return [(row[0], row[1]) for row in rows]


def _newest_occurrences() -> Any:
    """Per dispatch log key, the newest fire time: the schedule's last occurrence."""
    return (
        select(DispatchRecord.key, func.max(DispatchRecord.fire_time).label("fire_time"))
        .group_by(DispatchRecord.key)
        .subquery()
    )
