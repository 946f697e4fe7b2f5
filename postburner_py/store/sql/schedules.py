"""The generic SQLAlchemy implementation of one facet of the storage seam."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    type_coerce,
    union,
    union_all,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from postburner_py.errors import UnplannableScheduleError
from postburner_py.keys import ONE_OFF_KEY_PREFIX
from postburner_py.store import queries
from postburner_py.store.contract.schedules import (
    JobKind,
    PlannedExecution,
    PutRef,
    ScheduleStore,
    StillRule,
)
from postburner_py.store.dispatch_records import NOT_RUN_STATUSES, DispatchRecord, DispatchStatus
from postburner_py.store.engine import utcnow
from postburner_py.store.models import (
    CACHEABLE_ATTRIBUTES,
    LIVE_STATUSES,
    PENDING,
    SCHEDULED,
    SKIPPED,
    SUPERSEDED,
    DelayedJob,
    DelayedStatus,
    Schedule,
    ScheduleExecution,
    Setting,
    WatchdogHeartbeat,
    WorkerHeartbeat,
    normalize_snapshot,
)

_E = ScheduleExecution
_S = Schedule
_D = DelayedJob
_SQL = queries.load("schedules")

#: How long a non-blocking lock waits on SQLite, whose write lock covers every schedule.
SQLITE_TRY_LOCK_MS = 250

#: Rendered inline, exactly like the partial indexes' predicate, so the planner can use them.
LIVE = _E.status.in_([literal_column(f"'{status}'") for status in LIVE_STATUSES])

#: What planning and the put need. The other cached attributes (job_class, args, kwargs) are
#: only copied into the snapshot, which PostgreSQL builds itself from the row.
_PLAN_COLUMNS = (
    _S.id,
    _S.name,
    _S.queue,
    _S.priority,
    _S.ttr,
    _S.catch_up,
    _S.resumed_at,
    _S.catch_up_window,
    _S.starts_at,
    _S.ends_at,
    _S.cron,
    _S.anchor,
    _S.interval,
    _S.interval_unit,
    _S.timezone,
    _S.dst_gap,
    _S.dst_fold,
    _S.jitter,
)
_SNAPSHOT_ONLY_COLUMNS = (_S.job_class, _S.args, _S.kwargs)

#: The datetime columns planning reads. SQLite stores whatever raw SQL writes into them, and
#: a value that is not an instant cannot even be loaded (the driver's parse raises).
_INSTANT_COLUMNS = ("anchor", "resumed_at", "starts_at", "ends_at", "paused_at")
_ISO_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


def schedule_lock_key(namespace: str, schedule_id: int) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(f"{namespace}:schedule:{schedule_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


# --- shared conditions ------------------------------------------------------------------------


def execution_occurrence_key() -> ColumnElement[str]:
    """An execution's occurrence key, read from its snapshot."""
    key: ColumnElement[str] = _E.cached_schedule["name"].as_string()
    return key


def not_started() -> ColumnElement[bool]:
    """No worker has claimed (or recorded missed) this execution's occurrence."""
    return ~exists().where(
        DispatchRecord.key == execution_occurrence_key(), DispatchRecord.fire_time == _E.run_at
    )


def delayed_not_started() -> ColumnElement[bool]:
    """No worker has claimed this one-off job's occurrence."""
    return ~exists().where(
        DispatchRecord.key == literal(ONE_OFF_KEY_PREFIX) + _D.job_id,
        DispatchRecord.fire_time == _D.run_at,
    )


def runs() -> ColumnElement[bool]:
    """The schedule should have a queued occurrence: enabled and not paused (an ended one
    is found by planning: it has no grid point left)."""
    return and_(_S.enabled, _S.paused_at.is_(None))


def _schedule_enabled() -> ColumnElement[bool]:
    return exists().where(_S.id == _E.schedule_id, runs())


def _future(now: datetime) -> ColumnElement[bool]:
    return and_(LIVE, _E.run_at > now)


def _stale(now: datetime, lookback: timedelta) -> ColumnElement[bool]:
    return and_(
        LIVE,
        _E.run_at > now - lookback,
        ~_schedule_enabled(),
        or_(_E.run_at > now, not_started()),
    )


def _unqueued(now: datetime, lookback: timedelta, grace: timedelta) -> ColumnElement[bool]:
    claimable = or_(
        _E.status == PENDING,
        and_(
            _E.status == SCHEDULED,
            or_(_E.enqueued_at.is_(None), _E.enqueued_at < now - grace),
        ),
    )
    return and_(
        _E.beanstalk_job_id.is_(None),
        claimable,
        _E.run_at > now - lookback,
        _schedule_enabled(),
        or_(_E.run_at > now, not_started()),
    )


def _delayed_unqueued(now: datetime, grace: timedelta) -> ColumnElement[bool]:
    return and_(
        _D.status == DelayedStatus.PENDING,
        _D.beanstalk_job_id.is_(None),
        or_(_D.enqueued_at.is_(None), _D.enqueued_at < now - grace),
        delayed_not_started(),
    )


_EX = f"{ScheduleExecution.__tablename__}.cached_schedule"
_SC = Schedule.__tablename__
_JSON_COLUMNS = frozenset({"args", "kwargs"})
_TREE = (
    "SELECT fullkey, CASE WHEN type IN ('integer', 'real') THEN 'number' ELSE type END, atom "
    "FROM json_tree({})"
)


def _sqlite_field_differs(name: str) -> str:
    column = f'{_SC}."{name}"'
    cached = f"json_extract({_EX}, '$.{name}')"
    if name in ("anchor", "starts_at", "ends_at"):
        stamp = "strftime('%Y-%m-%d %H:%M:%f', {})"
        return f"{stamp.format(cached)} IS NOT {stamp.format(column)}"
    if name not in _JSON_COLUMNS:
        return f"{cached} IS NOT {column}"
    ours, theirs = _TREE.format(column), _TREE.format(cached)
    return (
        f"(CASE WHEN {cached} = json({column}) THEN 0 "
        f"WHEN EXISTS ({ours} EXCEPT {theirs}) THEN 1 "
        f"WHEN EXISTS ({theirs} EXCEPT {ours}) THEN 1 ELSE 0 END) = 1"
    )


def _iso_json(value: datetime | None) -> str:
    """A datetime as ``normalize_snapshot`` stores it (UTC ISO-8601), as JSON."""
    return "null" if value is None else f'"{value.astimezone(UTC).isoformat()}"'


def _snapshot(row: Any) -> dict[str, Any]:
    """``cached_schedule`` built in Python from a plan row (the generic insert)."""
    values = {name: getattr(row, name) for name in CACHEABLE_ATTRIBUTES}
    snapshot: dict[str, Any] = normalize_snapshot(values)
    return snapshot


def _job_model(kind: JobKind) -> type[ScheduleExecution] | type[DelayedJob]:
    return ScheduleExecution if kind == "execution" else DelayedJob


class SqlScheduleStore(ScheduleStore):
    """:class:`ScheduleStore` in SQLAlchemy Core; branches on capabilities where families differ."""

    # --- locks ------------------------------------------------------------------------------

    def lock_schedules(
        self, session: Session, namespace: str, schedule_ids: Iterable[int], *, blocking: bool
    ) -> bool:
        if not self.capabilities.advisory_locks:
            return _begin_immediate(session, blocking=blocking)
        statement = text(_SQL["advisory_lock" if blocking else "try_advisory_lock"])
        for schedule_id in sorted(set(schedule_ids)):
            key = schedule_lock_key(namespace, schedule_id)
            acquired = session.execute(statement, {"key": key}).scalar()
            if not blocking and not acquired:
                session.rollback()
                return False
        return True

    def try_lock_schedules(
        self, session: Session, namespace: str, schedule_ids: Iterable[int]
    ) -> set[int]:
        ids = sorted(set(schedule_ids))
        if not self.capabilities.advisory_locks or not ids:
            return set(ids)
        keys = [schedule_lock_key(namespace, schedule_id) for schedule_id in ids]
        rows = session.execute(text(_SQL["try_advisory_locks"]), {"keys": keys}).all()
        acquired = {key for key, ok in rows if ok}
        return {schedule_id for schedule_id, key in zip(ids, keys, strict=True) if key in acquired}

    # --- finding the work -------------------------------------------------------------------

    def drift_clause(self) -> ColumnElement[bool]:
        """True for a live execution (joined to its schedule) whose snapshot differs from the
        columns. With a config digest (PostgreSQL: triggers recompute it from the row on every
        write) one comparison; otherwise field by field, JSON text first, and on a difference
        the flattened ``json_tree`` of both (so key order and spacing are not drift)."""
        if self.capabilities.config_digests:
            return _E.config_digest.is_distinct_from(_S.config_digest)
        return or_(*(text(_sqlite_field_differs(name)) for name in CACHEABLE_ATTRIBUTES))

    def schedules_to_converge(self, session: Session, now: datetime) -> tuple[list[int], list[int]]:
        futures = func.count(_E.id)
        # Only a joined execution can drift (a schedule without one compares with NULLs).
        drifted = func.max(case((and_(_E.id.is_not(None), self.drift_clause()), 1), else_=0))
        # Past its ends_at a schedule has nothing to queue: not missing, but still converged
        # when it holds an execution (one queued before ends_at was moved earlier).
        ended = func.max(case((_S.ends_at <= now, 1), else_=0))
        rows = session.execute(
            select(_S.id, futures)
            .outerjoin(_E, and_(_E.schedule_id == _S.id, _future(now)))
            .where(runs())
            .group_by(_S.id)
            .having(or_(and_(futures == 0, ended == 0), futures > 1, drifted == 1))
            .order_by(_S.id)
        ).all()
        missing = [row[0] for row in rows if row[1] == 0]
        return missing, [row[0] for row in rows if row[1] != 0]

    def stale_executions(
        self, session: Session, now: datetime, lookback: timedelta
    ) -> Sequence[Any]:
        # Orphans through the partial index, plus the executions of disabled schedules: both
        # cheap, as opposed to checking every live execution's schedule.
        recent = and_(LIVE, _E.run_at > now - lookback, or_(_E.run_at > now, not_started()))
        orphans = select(_E.id, _E.schedule_id).where(_E.schedule_id.is_(None), recent)
        disabled = (
            select(_E.id, _E.schedule_id).join(_S, _S.id == _E.schedule_id).where(~runs(), recent)
        )
        return session.execute(union_all(orphans, disabled)).all()

    def unparsable_schedules(
        self, session: Session, *, enabled_only: bool
    ) -> dict[int, UnplannableScheduleError]:
        if not self.capabilities.unparsable_instants:
            return {}
        columns = [type_coerce(getattr(Schedule, name), String) for name in _INSTANT_COLUMNS]
        unparsable = [
            and_(
                column.is_not(None),
                or_(
                    func.typeof(column) != "text",
                    not_(column.op("GLOB", is_comparison=True)(_ISO_DATE_GLOB)),
                    func.julianday(column).is_(None),
                ),
            )
            for column in columns
        ]
        statement = select(Schedule.id, Schedule.name, *columns).where(or_(*unparsable))
        if enabled_only:
            statement = statement.where(Schedule.enabled)
        found = {}
        for schedule_id, name, *values in session.execute(statement):
            bad = [
                f"{column}: stored value {value!r} is not an instant"
                for column, value in zip(_INSTANT_COLUMNS, values, strict=True)
                if value is not None and not _parses(value)
            ]
            found[int(schedule_id)] = UnplannableScheduleError(
                str(name), "; ".join(bad) or "unreadable"
            )
        return found

    def live_not_started(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> list[int]:
        rows = session.execute(
            select(_E.id).where(
                _E.schedule_id.in_(sorted(schedule_ids)),
                LIVE,
                or_(_E.run_at > now, not_started()),
            )
        ).all()
        return [row.id for row in rows]

    def unqueued_executions(
        self,
        session: Session,
        now: datetime,
        lookback: timedelta,
        grace: timedelta,
        ids: Sequence[int] | None = None,
    ) -> list[int]:
        statement = select(_E.id).where(_unqueued(now, lookback, grace)).order_by(_E.id)
        if ids is not None:
            statement = statement.where(_E.id.in_(ids))
        return list(session.scalars(statement))

    def claim_unqueued(
        self,
        session: Session,
        ids: Sequence[int],
        now: datetime,
        lookback: timedelta,
        grace: timedelta,
    ) -> Sequence[Any]:
        return session.execute(
            select(_E.id, _E.schedule_id, _E.run_at, _E.next_run_at, _E.cached_schedule)
            .where(_E.id.in_(ids), _unqueued(now, lookback, grace))
            .with_for_update(skip_locked=True, of=_E)
        ).all()

    def mark_claimed(self, session: Session, ids: Sequence[int], now: datetime) -> None:
        if ids:
            session.connection().execute(
                update(_E)
                .where(_E.id.in_(ids))
                .values(status=SCHEDULED, enqueued_at=now, updated_at=utcnow())
            )

    def supersede_executions(
        self,
        session: Session,
        ids: Sequence[int],
        now: datetime,
        *,
        still: StillRule,
        lookback: timedelta = timedelta(0),
        grace: timedelta = timedelta(0),
    ) -> list[tuple[int, int | None, str | None]]:
        if not ids:
            return []
        condition: ColumnElement[bool]
        if still == "stale":
            condition = _stale(now, lookback)
        elif still == "unqueued":
            condition = _unqueued(now, lookback, grace)
        else:
            condition = LIVE
        rows = session.connection().execute(
            update(_E)
            .where(_E.id.in_(ids), condition)
            .values(status=SUPERSEDED, updated_at=utcnow())
            .returning(_E.id, _E.beanstalk_job_id, _E.beanstalk_server_id)
        )
        return [(row[0], row[1], row[2]) for row in rows.all()]

    # --- creating executions ----------------------------------------------------------------

    def plan_rows(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> Sequence[Any]:
        in_sql = self.capabilities.batch_statement  # the insert builds the snapshot itself
        columns = _PLAN_COLUMNS if in_sql else _PLAN_COLUMNS + _SNAPSHOT_ONLY_COLUMNS
        has_future = exists().where(_E.schedule_id == _S.id, _future(now))
        statement = select(*columns).where(_S.id.in_(schedule_ids), runs(), ~has_future)
        if not self.capabilities.single_writer:
            statement = statement.with_for_update(read=True, skip_locked=True, of=_S)
        return session.connection().execute(statement).all()

    def latest_accounted(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> dict[int, datetime]:
        if not schedule_ids:
            return {}
        accounted = or_(_E.status == SKIPPED, and_(LIVE, _E.run_at <= now))
        rows = session.execute(
            select(_E.schedule_id, func.max(_E.run_at))
            .where(_E.schedule_id.in_(schedule_ids), accounted)
            .group_by(_E.schedule_id)
        )
        return {sid: latest for sid, latest in rows if sid is not None and latest is not None}

    def schedules_with_waiting(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> set[int]:
        if not schedule_ids:
            return set()
        statement = select(_E.schedule_id).where(
            _E.schedule_id.in_(schedule_ids), LIVE, _E.run_at <= now, not_started()
        )
        return {sid for sid in session.scalars(statement.distinct()) if sid is not None}

    def insert_executions(
        self, session: Session, planned: Sequence[PlannedExecution], now: datetime
    ) -> list[tuple[int, int, datetime]]:
        if not planned:
            return []
        if self.capabilities.batch_statement:
            return self._insert_one_document(session, planned, now)
        stamp = utcnow()
        rows = [
            {
                "schedule_id": new.row.id,
                "run_at": new.run_at,
                "next_run_at": new.next_run_at,
                "status": SCHEDULED,
                "enqueued_at": now,
                "cached_schedule": _snapshot(new.row),
                "created_at": stamp,
                "updated_at": stamp,
            }
            for new in planned
        ]
        statement = self.insert_ignoring_conflicts(ScheduleExecution).returning(
            _E.id, _E.schedule_id, _E.run_at
        )
        inserted = session.connection().execute(statement, rows).all()
        return [(int(row[0]), int(row[1] or 0), row[2]) for row in inserted]

    def _insert_one_document(
        self, session: Session, planned: Sequence[PlannedExecution], now: datetime
    ) -> list[tuple[int, int, datetime]]:
        """One INSERT ... SELECT over a single JSON document: one parameter whatever the size
        (a multi-row VALUES list costs more to build and parse than the insert itself)."""
        document = ",".join(
            f'{{"schedule_id":{new.row.id},"run_at":"{new.run_at.isoformat()}",'
            f'"next_run_at":{_iso_json(new.next_run_at)},"anchor":{_iso_json(new.row.anchor)},'
            f'"starts_at":{_iso_json(new.row.starts_at)},"ends_at":{_iso_json(new.row.ends_at)}}}'
            for new in planned
        )
        rows = session.connection().execute(
            text(_SQL["insert_executions"]),
            {"now": now, "stamp": utcnow(), "rows": f"[{document}]"},
        )
        return [(int(row[0]), int(row[1]), row[2].astimezone(UTC)) for row in rows.all()]

    def record_puts(self, session: Session, refs: Sequence[PutRef]) -> set[int]:
        if not refs:
            return set()
        if self.capabilities.array_parameters:
            rows = session.connection().execute(
                text(_SQL["record_puts"]),
                {
                    "server": refs[0].server_id,
                    "stamp": utcnow(),
                    "ids": [ref.execution_id for ref in refs],
                    "jobs": [ref.job_id for ref in refs],
                },
            )
            return {int(row[0]) for row in rows.all()}
        # An executemany UPDATE, then read back which rows took our job id.
        session.connection().execute(
            update(_E)
            .where(_E.id == bindparam("eid"), _E.beanstalk_job_id.is_(None), LIVE)
            .values(
                beanstalk_job_id=bindparam("job"),
                beanstalk_server_id=bindparam("server"),
                updated_at=utcnow(),
            ),
            [{"eid": r.execution_id, "job": r.job_id, "server": r.server_id} for r in refs],
        )
        stored = session.execute(
            select(_E.id, _E.beanstalk_job_id, _E.beanstalk_server_id).where(
                _E.id.in_([ref.execution_id for ref in refs])
            )
        ).all()
        expected = {ref.execution_id: (ref.job_id, ref.server_id) for ref in refs}
        return {int(row[0]) for row in stored if expected.get(row[0]) == (row[1], row[2])}

    def release_claims(self, session: Session, execution_ids: Sequence[int]) -> None:
        if not execution_ids:
            return
        session.connection().execute(
            update(_E)
            .where(_E.id.in_(execution_ids), _E.beanstalk_job_id.is_(None), _E.status == SCHEDULED)
            .values(enqueued_at=None)
        )

    def latest_live_run_at(
        self, session: Session, schedule_ids: Sequence[int]
    ) -> dict[int, datetime]:
        statement = (
            select(_E.schedule_id, func.max(_E.run_at))
            .where(_E.schedule_id.in_(schedule_ids), _E.status.in_(LIVE_STATUSES))
            .group_by(_E.schedule_id)
        )
        rows = session.execute(statement)
        return {schedule_id: newest for schedule_id, newest in rows if schedule_id is not None}

    # --- one execution (lifecycle) ----------------------------------------------------------

    def claim_for_put(
        self, session: Session, execution_id: int, now: datetime, grace: timedelta
    ) -> bool:
        claimable = or_(
            _E.status == PENDING,
            and_(
                _E.status == SCHEDULED,
                or_(_E.enqueued_at.is_(None), _E.enqueued_at < now - grace),
            ),
        )
        result = session.execute(
            update(_E)
            .where(_E.id == execution_id, _E.beanstalk_job_id.is_(None), claimable)
            .values(status=SCHEDULED, enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(_rows(result))

    def release_claim(self, session: Session, execution_id: int) -> None:
        """Clear one execution's put claim when it is still without a job."""
        session.execute(
            update(_E)
            .where(_E.id == execution_id, _E.beanstalk_job_id.is_(None))
            .values(enqueued_at=None)
            .execution_options(synchronize_session=False)
        )

    def record_job(self, session: Session, execution_id: int, job_id: int, server_id: str) -> bool:
        result = session.execute(
            update(_E)
            .where(_E.id == execution_id, _E.status.in_(LIVE_STATUSES))
            .values(beanstalk_job_id=job_id, beanstalk_server_id=server_id)
            .execution_options(synchronize_session=False)
        )
        return bool(_rows(result))

    def forget_jobs(self, session: Session, execution_ids: Sequence[int]) -> None:
        if execution_ids:
            session.execute(
                update(_E)
                .where(_E.id.in_(execution_ids))
                .values(beanstalk_job_id=None, beanstalk_server_id=None)
                .execution_options(synchronize_session=False)
            )

    def execution_for_update(self, session: Session, execution_id: int) -> ScheduleExecution:
        statement = select(_E).where(_E.id == execution_id)
        return session.scalars(statement.with_for_update()).one()

    def live_executions(self, session: Session, schedule_id: int) -> list[ScheduleExecution]:
        statement = (
            select(_E)
            .where(_E.schedule_id == schedule_id, _E.status.in_(LIVE_STATUSES))
            .order_by(_E.run_at)
            .execution_options(populate_existing=True)
        )
        return list(session.scalars(statement))

    def claimed_occurrences(
        self, session: Session, occurrences: Sequence[tuple[str, datetime]]
    ) -> set[tuple[str, datetime]]:
        if not occurrences:
            return set()
        rows = session.execute(
            select(DispatchRecord.key, DispatchRecord.fire_time).where(
                DispatchRecord.key.in_({key for key, _ in occurrences}),
                DispatchRecord.fire_time.in_([fire_time for _, fire_time in occurrences]),
            )
        )
        return {(key, fire_time) for key, fire_time in rows}

    def occurrence_claimed(self, session: Session, key: str, fire_time: datetime) -> bool:
        found = session.scalar(
            select(DispatchRecord.id).where(
                DispatchRecord.key == key,
                DispatchRecord.fire_time == fire_time,
                DispatchRecord.status.not_in(NOT_RUN_STATUSES),
            )
        )
        return found is not None

    def skipped_ahead(
        self, session: Session, keys: Sequence[str], after: datetime
    ) -> dict[str, set[datetime]]:
        if not keys:
            return {}
        rows = session.execute(
            select(DispatchRecord.key, DispatchRecord.fire_time).where(
                DispatchRecord.status == DispatchStatus.SKIPPED,
                DispatchRecord.fire_time > after,
                DispatchRecord.key.in_(sorted(set(keys))),
            )
        )
        found: dict[str, set[datetime]] = {}
        for key, fire_time in rows:
            found.setdefault(key, set()).add(fire_time)
        return found

    def schedule_enabled(self, session: Session, schedule_id: int) -> bool:
        return bool(session.scalar(select(_S.enabled).where(_S.id == schedule_id)))

    def schedule_name(self, session: Session, schedule_id: int) -> str | None:
        name = session.scalar(select(_S.name).where(_S.id == schedule_id))
        return None if name is None else str(name)

    def retire_executions_of(
        self, session: Session, schedule_id: int
    ) -> list[tuple[int, int | None, str | None]]:
        rows = session.execute(
            update(_E)
            .where(_E.schedule_id == schedule_id, _E.status.in_(LIVE_STATUSES))
            .values(status=SUPERSEDED)
            .returning(_E.id, _E.beanstalk_job_id, _E.beanstalk_server_id)
            .execution_options(synchronize_session=False)
        ).all()
        return [(row[0], row[1], row[2]) for row in rows]

    # --- jobs of retired rows, one-off jobs ---------------------------------------------------

    def _retired(self, kind: JobKind, now: datetime, lookback: timedelta) -> ColumnElement[bool]:
        model = _job_model(kind)
        statuses = (SKIPPED, SUPERSEDED) if kind == "execution" else (DelayedStatus.CANCELLED,)
        return and_(
            model.status.in_(statuses),
            model.beanstalk_job_id.is_not(None),
            model.run_at > now - lookback,
        )

    def retired_jobs(
        self, session: Session, kind: JobKind, now: datetime, lookback: timedelta
    ) -> Sequence[Any]:
        model = _job_model(kind)
        return session.execute(
            select(model.id, model.beanstalk_job_id, model.beanstalk_server_id).where(
                self._retired(kind, now, lookback)
            )
        ).all()

    def forget_retired_jobs(
        self,
        session: Session,
        kind: JobKind,
        ids: Sequence[int],
        now: datetime,
        lookback: timedelta,
    ) -> None:
        model = _job_model(kind)
        session.connection().execute(
            update(model)
            .where(model.id.in_(ids), self._retired(kind, now, lookback))
            .values(beanstalk_job_id=None, beanstalk_server_id=None)
        )

    def unqueued_delayed(
        self, session: Session, now: datetime, grace: timedelta, ids: Sequence[int] | None = None
    ) -> list[DelayedJob]:
        statement = select(_D).where(_delayed_unqueued(now, grace)).order_by(_D.id)
        if ids is not None:
            statement = statement.where(_D.id.in_(ids))
        return list(session.scalars(statement).all())

    def claim_delayed(
        self, session: Session, delayed_id: int, now: datetime, grace: timedelta | None = None
    ) -> bool:
        if grace is not None:
            claimed = session.connection().execute(
                update(_D)
                .where(_D.id == delayed_id, _delayed_unqueued(now, grace))
                .values(enqueued_at=now)
            )
            return bool(claimed.rowcount)
        result = session.execute(
            update(_D)
            .where(_D.id == delayed_id, _D.status == DelayedStatus.PENDING)
            .where(_D.beanstalk_job_id.is_(None))
            .values(enqueued_at=now)
        )
        return bool(_rows(result))

    def set_delayed_job(
        self, session: Session, delayed_id: int, job_id: int | None, server_id: str | None
    ) -> None:
        if job_id is None:
            session.execute(update(_D).where(_D.id == delayed_id).values(enqueued_at=None))
            return
        session.execute(
            update(_D)
            .where(_D.id == delayed_id)
            .values(beanstalk_job_id=job_id, beanstalk_server_id=server_id)
        )

    def delayed_status(self, session: Session, job_id: str) -> str | None:
        statement = select(_D.status).where(_D.job_id == job_id).order_by(_D.id.desc()).limit(1)
        return session.scalar(statement)

    def pending_delayed_for_update(self, session: Session, job_id: str) -> DelayedJob | None:
        statement = select(_D).where(_D.job_id == job_id, _D.status == DelayedStatus.PENDING)
        return session.scalars(statement.with_for_update()).one_or_none()

    # --- the queue audit ----------------------------------------------------------------------

    def _audit_columns(
        self, kind: JobKind
    ) -> tuple[ColumnElement[bool], ColumnElement[str], ColumnElement[str], ColumnElement[bool]]:
        """live, key, queue and not-started of one kind of row."""
        if kind == "execution":
            return (
                LIVE,
                execution_occurrence_key(),
                _E.cached_schedule["queue"].as_string(),
                not_started(),
            )
        return (
            _D.status == DelayedStatus.PENDING,
            _D.job_id.expression,
            _D.queue.expression,
            delayed_not_started(),
        )

    def _foreign(
        self, kind: JobKind, server_id: str, now: datetime, window: timedelta
    ) -> ColumnElement[bool]:
        """A job put on another server, for a row that may still be waiting to run."""
        model = _job_model(kind)
        started = self._audit_columns(kind)[3]
        return and_(
            model.beanstalk_server_id.is_distinct_from(server_id),
            or_(model.run_at > now, and_(model.run_at > now - window, started)),
        )

    def _with_job(self, kind: JobKind, now: datetime, window: timedelta) -> ColumnElement[bool]:
        model = _job_model(kind)
        live = self._audit_columns(kind)[0]
        return and_(live, model.beanstalk_job_id.is_not(None), model.run_at > now - window)

    def audit_tally(
        self,
        session: Session,
        kind: JobKind,
        server_id: str,
        now: datetime,
        window: timedelta,
        margin: timedelta,
    ) -> Sequence[Any]:
        model = _job_model(kind)
        queue = self._audit_columns(kind)[2]
        # CASE evaluates in order, so the dispatch-log probe only runs for foreign job ids.
        foreign = case((self._foreign(kind, server_id, now, window), 1), else_=0)
        expected = case(
            (and_(model.beanstalk_server_id == server_id, model.run_at > now + margin), 1),
            else_=0,
        )
        statement = (
            select(queue, func.sum(expected), func.sum(foreign))
            .where(self._with_job(kind, now, window))
            .group_by(literal_column("1"))  # the queue: a bound JSON key defeats GROUP BY <expr>
        )
        return session.execute(statement).all()

    def audit_suspects(
        self,
        session: Session,
        kind: JobKind,
        server_id: str,
        short_queues: Sequence[str],
        now: datetime,
        window: timedelta,
    ) -> Sequence[Any]:
        model = _job_model(kind)
        _live, key, queue, _started = self._audit_columns(kind)
        in_short_tube = and_(
            queue.in_(short_queues),
            model.beanstalk_server_id == server_id,
            model.run_at > now,
        )
        condition = and_(
            self._with_job(kind, now, window),
            or_(self._foreign(kind, server_id, now, window), in_short_tube),
        )
        columns = (model.id, model.beanstalk_job_id, model.beanstalk_server_id, model.run_at)
        return session.execute(select(*columns, key.label("key")).where(condition)).all()

    def adopt_jobs(
        self, connection: Connection, kind: JobKind, rows: Sequence[Any], server_id: str
    ) -> None:
        if not rows:
            return
        model = _job_model(kind)
        statement = (
            update(model)
            .where(model.id == bindparam("eid"), model.beanstalk_job_id == bindparam("job"))
            .values(beanstalk_server_id=server_id)
        )
        connection.execute(statement, [{"eid": r.id, "job": r.beanstalk_job_id} for r in rows])

    def forget_lost_jobs(self, connection: Connection, kind: JobKind, rows: Sequence[Any]) -> None:
        if not rows:
            return
        model = _job_model(kind)
        statement = (
            update(model)
            .where(
                model.id == bindparam("eid"),
                model.beanstalk_job_id == bindparam("job"),
                model.beanstalk_server_id.is_not_distinct_from(bindparam("server")),
            )
            .values(beanstalk_job_id=None, beanstalk_server_id=None, enqueued_at=None)
        )
        params = [
            {"eid": row.id, "job": row.beanstalk_job_id, "server": row.beanstalk_server_id}
            for row in rows
        ]
        connection.execute(statement, params)

    # --- watchdog and settings ------------------------------------------------------------------

    def heartbeats(self, session: Session) -> list[WatchdogHeartbeat]:
        statement = select(WatchdogHeartbeat).order_by(WatchdogHeartbeat.node)
        return list(session.scalars(statement).all())

    def beat(self, session: Session, row: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        statement = self.upsert(WatchdogHeartbeat, ["node"], row, changes)
        session.execute(statement)

    def forget_heartbeat(self, session: Session, node: str) -> None:
        session.execute(delete(WatchdogHeartbeat).where(WatchdogHeartbeat.node == node))

    def worker_heartbeats(self, session: Session) -> list[WorkerHeartbeat]:
        statement = select(WorkerHeartbeat).order_by(
            WorkerHeartbeat.node, WorkerHeartbeat.started_at
        )
        return list(session.scalars(statement).all())

    def beat_worker(self, session: Session, row: Mapping[str, Any]) -> None:
        changes = {name: value for name, value in row.items() if name != "id"}
        session.execute(self.upsert(WorkerHeartbeat, ["id"], row, changes))

    def forget_worker(self, session: Session, worker_id: str) -> None:
        session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id))

    def expire_worker_heartbeats(self, session: Session, before: datetime) -> int:
        result = session.execute(
            delete(WorkerHeartbeat)
            .where(WorkerHeartbeat.last_seen_at < before)
            .execution_options(synchronize_session=False)
        )
        return _rows(result)

    def queues_in_use(self, session: Session) -> list[str]:
        scheduled = select(Schedule.queue).where(Schedule.enabled.is_(True))
        one_off = select(DelayedJob.queue).where(DelayedJob.status == DelayedStatus.PENDING)
        return sorted({str(name) for name in session.scalars(union(scheduled, one_off))})

    def read_setting(self, session: Session, key: str) -> str | None:
        table = Setting.__table__
        value = session.scalar(select(table.c.value).where(table.c.key == key))
        return None if value is None else str(value)

    def write_setting(self, session: Session, key: str, value: str, stamp: datetime) -> None:
        row = {"key": key, "value": value, "updated_at": stamp}
        session.execute(self.upsert(Setting, ["key"], row, {"value": value, "updated_at": stamp}))

    def schedule_zones(self, session: Session) -> list[str]:
        statement = select(_S.timezone).where(_S.enabled).distinct().order_by(_S.timezone)
        return [str(zone) for zone in session.scalars(statement)]

    def future_runs_in_zones(
        self, session: Session, zones: Sequence[str], now: datetime
    ) -> Sequence[Any]:
        if not zones:
            return []
        statement = (
            select(*_PLAN_COLUMNS, _E.run_at)
            .join(_E, _E.schedule_id == _S.id)
            .where(_S.enabled, _S.timezone.in_(list(zones)), _future(now))
            .order_by(_S.id, _E.run_at)
        )
        return session.execute(statement).all()

    def setting(self, connection: Connection, key: str, candidate: str, stamp: datetime) -> str:
        table = Setting.__table__
        value = connection.scalar(select(table.c.value).where(table.c.key == key))
        if value is None:
            statement = self.insert_ignoring_conflicts(Setting).values(
                key=key, value=candidate, updated_at=stamp
            )
            connection.execute(statement)
            value = connection.scalar(select(table.c.value).where(table.c.key == key))
        return str(value)


def _rows(result: Any) -> int:
    return int(result.rowcount)


def _begin_immediate(session: Session, *, blocking: bool) -> bool:
    options = {"sqlite_begin": "IMMEDIATE"}
    if not blocking:
        # SQLite's lock is the whole database: wait out another writer's short transaction,
        # but not a long one.
        options["sqlite_busy_timeout"] = str(SQLITE_TRY_LOCK_MS)
    try:
        session.connection(execution_options=options)
    except OperationalError as exc:
        if blocking or "locked" not in str(exc).lower():
            raise
        session.rollback()
        return False
    return True


def _parses(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return isinstance(value, str)
