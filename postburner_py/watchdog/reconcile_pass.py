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

Repairs run in batches, each one transaction holding the per-schedule locks it could take
without waiting (:func:`~postburner_py.store.locking.try_lock_schedules`; rows are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several watchdogs share the work and never create
the same execution twice; the partial unique index on live ``(schedule_id, run_at)`` is the
backstop. Writes are batched: one bulk INSERT of new executions per batch, one UPDATE per kind
of change. Puts go out after the commit, pipelined over several connections, and the job ids
are recorded with one UPDATE per chunk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from postburner_py.errors import PostburnerError, QueueUnavailableError, UnplannableScheduleError
from postburner_py.keys import ONE_OFF_KEY_PREFIX
from postburner_py.queue.beanstalk import PutRequest, delay_seconds
from postburner_py.queue.operations import JobRef, delete_jobs, remove_job
from postburner_py.queue.signing import JobBody, encode_body
from postburner_py.schedules.lifecycle import ENQUEUE_GRACE, converge
from postburner_py.schedules.one_off import CANCELLED, DelayedJob, put_delayed
from postburner_py.schedules.one_off import PENDING as DELAYED_PENDING
from postburner_py.schedules.planning import planning, stored_grid, unloadable_schedules
from postburner_py.store.dispatch_log import DispatchRecord, DispatchStatus
from postburner_py.store.engine import insert_ignoring_conflicts, utcnow
from postburner_py.store.locking import try_lock_schedules
from postburner_py.store.models import (
    CACHEABLE_ATTRIBUTES,
    LIVE_STATUSES,
    PENDING,
    SCHEDULED,
    SKIPPED,
    SUPERSEDED,
    Schedule,
    ScheduleExecution,
    normalize_snapshot,
)
from postburner_py.timegrid.grid import TimeGrid
from postburner_py.timegrid.occurrences import NextOccurrence, plan_next

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.watchdog")

#: How far back a pass looks at due executions (to put them late, or record them missed).
#: Keep it well inside the dispatch log's retention: older rows cannot be told apart from
#: occurrences that ran and whose dispatch row was cleaned up.
LOOKBACK = timedelta(hours=12)
#: Schedules per transaction when creating executions.
CREATE_BATCH = 1000
#: Schedules (or executions) per transaction for the other repairs.
REPAIR_BATCH = 500
#: Jobs per ``put_many`` call; job ids are recorded after each chunk.
PUT_CHUNK = 8000
#: Connections ``put_many`` may spread one chunk over.
PUT_CONNECTIONS = 4
_MAX_UINT32 = 2**32 - 1
#: Schedules that cannot be planned listed by name in a report (all are counted).
MAX_LISTED_INVALID = 100
_UNLISTED_INVALID = f"more than {MAX_LISTED_INVALID} schedules cannot be planned; the rest unlisted"
_E = ScheduleExecution
_S = Schedule
T = TypeVar("T")


@dataclass
class PassReport:
    """What one watchdog pass did (counts are rows or jobs, ``duration`` is seconds)."""

    #: Executions created (new schedules, a chain that broke, re-enabled or changed schedules).
    created: int = 0
    #: Live executions retired: drifted, duplicated, of disabled/deleted schedules, too late.
    superseded: int = 0
    #: Schedules whose future executions were converged (drift, duplicates).
    repaired: int = 0
    #: Jobs the queue audit found missing from Beanstalkd.
    missing: int = 0
    #: Existing executions put (again): never queued, or lost by Beanstalkd.
    requeued: int = 0
    #: Occurrences recorded ``missed`` in the dispatch log.
    missed: int = 0
    #: Jobs the queue audit checked with ``peek`` and found in place.
    verified: int = 0
    #: Jobs of skipped or superseded executions deleted from Beanstalkd.
    removed: int = 0
    #: Executions left without a job because Beanstalkd is unavailable (retried next pass).
    unqueued: int = 0
    #: Schedules or executions skipped because their stored values cannot be planned or queued.
    invalid: int = 0
    duration: float = 0.0
    #: Why Beanstalkd work was skipped in this pass, if it was.
    queue_error: str | None = None
    problems: list[str] = field(default_factory=list)
    #: Schedules that cannot be planned: name to reason (at most MAX_LISTED_INVALID).
    invalid_schedules: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for logs and ``postburner tick``."""
        counts = ", ".join(f"{name} {value}" for name, value in self.counts().items())
        line = f"{counts} in {self.duration:.3f}s"
        if self.queue_error:
            line += f" (Beanstalkd unavailable: {self.queue_error})"
        return line

    def counts(self) -> dict[str, int]:
        """The integer counters by name."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the heartbeat row)."""
        return asdict(self)

    def note(self, problem: str) -> None:
        """Remember a problem worth one log line (kept short: at most ten per pass)."""
        if len(self.problems) < 10:
            self.problems.append(problem)

    def unplannable(self, error: UnplannableScheduleError) -> None:
        """Count a schedule whose row cannot be planned, and remember why (one log line)."""
        self.invalid += 1
        if len(self.invalid_schedules) < MAX_LISTED_INVALID:
            self.invalid_schedules[error.name] = error.reason
        elif (overflow := _UNLISTED_INVALID) not in self.problems:
            self.note(overflow)

    def log_problems(self) -> None:
        """One warning per problem and per schedule that cannot be planned."""
        for problem in self.problems:
            log.warning("%s", problem)
        for name, reason in self.invalid_schedules.items():
            log.warning("schedule %r cannot be planned, nothing queued: %s", name, reason)


def reconcile_pass(
    pb: Postburner, *, now: datetime, report: PassReport | None = None
) -> PassReport:
    """Converge every schedule as of ``now``; see the module docstring for the steps."""
    report = report if report is not None else PassReport()
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


# --- shared conditions ------------------------------------------------------------------------

#: Rendered inline, exactly like the partial indexes' predicate, so the planner can use them.
LIVE = _E.status.in_([literal_column(f"'{status}'") for status in LIVE_STATUSES])


def execution_occurrence_key() -> ColumnElement[str]:
    key: ColumnElement[str] = _E.cached_schedule["name"].as_string()
    return key


def not_started() -> ColumnElement[bool]:
    """No worker has claimed (or recorded missed) this execution's occurrence."""
    return ~exists().where(
        DispatchRecord.key == execution_occurrence_key(), DispatchRecord.fire_time == _E.run_at
    )


def _schedule_enabled() -> ColumnElement[bool]:
    return exists().where(_S.id == _E.schedule_id, _S.enabled)


def _future(now: datetime) -> ColumnElement[bool]:
    return and_(LIVE, _E.run_at > now)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- 1. stale: live executions of disabled or deleted schedules --------------------------------


def _stale(now: datetime) -> ColumnElement[bool]:
    return and_(
        LIVE,
        _E.run_at > now - LOOKBACK,
        ~_schedule_enabled(),
        or_(_E.run_at > now, not_started()),
    )


def _stale_executions(session: Session, now: datetime) -> Sequence[Row[int, int | None]]:
    """Orphans (schedule deleted) through the partial index, plus the executions of disabled
    schedules: both cheap, as opposed to checking every live execution's schedule."""
    recent = and_(LIVE, _E.run_at > now - LOOKBACK, or_(_E.run_at > now, not_started()))
    orphans = select(_E.id, _E.schedule_id).where(_E.schedule_id.is_(None), recent)
    disabled = (
        select(_E.id, _E.schedule_id).join(_S, _S.id == _E.schedule_id).where(~_S.enabled, recent)
    )
    return session.execute(union_all(orphans, disabled)).all()


def retire_stale(pb: Postburner, now: datetime, report: PassReport) -> None:
    """Supersede the live executions of disabled or deleted schedules (jobs go in step 5)."""
    with pb.session() as session:
        found = _stale_executions(session, now)
    for chunk in chunks(found, REPAIR_BATCH):
        with pb.work_session() as session:
            locked = try_lock_schedules(session, pb.settings.namespace, _schedule_ids(chunk))
            ids = [row.id for row in chunk if row.schedule_id is None or row.schedule_id in locked]
            report.superseded += len(_supersede(session, ids, _stale(now)))
            session.commit()


def _schedule_ids(rows: Iterable[Any]) -> list[int]:
    return sorted({row.schedule_id for row in rows if row.schedule_id is not None})


def _supersede(session: Session, ids: Sequence[int], still: ColumnElement[bool]) -> list[JobRef]:
    if not ids:
        return []
    rows = session.connection().execute(
        update(_E)
        .where(_E.id.in_(ids), still)
        .values(status=SUPERSEDED, updated_at=utcnow())
        .returning(_E.id, _E.beanstalk_job_id, _E.beanstalk_server_id)
    )
    return [JobRef(row[0], row[1], row[2]) for row in rows.all()]


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
            locked = try_lock_schedules(session, pb.settings.namespace, chunk)
            rows = session.execute(
                select(_E.id).where(
                    _E.schedule_id.in_(sorted(locked)), LIVE, or_(_E.run_at > now, not_started())
                )
            ).all()
            retired = _supersede(session, [row.id for row in rows], LIVE)
            report.superseded += len(retired)
            session.commit()


# --- 2. drift: the live future execution does not match the schedule ---------------------------


def drift_clause(dialect: str) -> ColumnElement[bool]:
    """True for a live execution (joined to its schedule) whose snapshot differs from the columns.

    Computed in SQL, never from values Python kept, so an edit made behind the API's back (raw
    SQL, another application) is seen by the next pass. PostgreSQL: one comparison of the
    ``config_digest`` columns, which triggers recompute from the row on every write. SQLite:
    field by field; JSON text first, and on a difference the flattened ``json_tree`` of both
    (so key order and spacing are not drift).
    """
    if dialect == "postgresql":
        return _E.config_digest.is_distinct_from(_S.config_digest)
    return or_(*(text(_sqlite_field_differs(name)) for name in CACHEABLE_ATTRIBUTES))


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
    if name == "anchor":
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


def schedules_to_converge(session: Session, now: datetime) -> tuple[list[int], list[int]]:
    """One grouped query over every enabled schedule and its live future executions.

    Returns the schedules without one (to create) and those whose future executions are
    wrong: more than one, or drifted (to converge).
    """
    dialect = session.get_bind().dialect.name
    futures = func.count(_E.id)
    drifted = func.max(case((drift_clause(dialect), 1), else_=0))
    rows = session.execute(
        select(_S.id, futures)
        .outerjoin(_E, and_(_E.schedule_id == _S.id, _future(now)))
        .where(_S.enabled)
        .group_by(_S.id)
        .having(or_(futures != 1, drifted == 1))
        .order_by(_S.id)
    ).all()
    missing = [row[0] for row in rows if row[1] == 0]
    return missing, [row[0] for row in rows if row[1] != 0]


def repair_drift(
    pb: Postburner, schedule_ids: list[int], now: datetime, report: PassReport
) -> None:
    """Converge drifted or duplicated schedules with the single-schedule rules (``converge``).

    Few schedules drift at once (an edit, a deploy), so each runs the full ``converge``; the
    batch still shares one transaction and one commit. The pending executions it creates are
    put by step 4, the retired ones' jobs deleted by step 5.
    """
    for chunk in chunks(schedule_ids, REPAIR_BATCH):
        with pb.work_session() as session:
            for schedule_id in sorted(try_lock_schedules(session, pb.settings.namespace, chunk)):
                outcome = converge(pb, session, schedule_id, now)
                report.superseded += len(outcome.retired)
                report.created += len(outcome.created)
                report.missed += outcome.missed
                if outcome.invalid is not None:
                    report.unplannable(outcome.invalid)
                else:
                    report.repaired += bool(outcome.retired or outcome.created)
            session.commit()


# --- 3. missing: enabled schedules without a live future execution ------------------------------

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
    _S.cron,
    _S.anchor,
    _S.interval,
    _S.interval_unit,
    _S.timezone,
)
_SNAPSHOT_ONLY_COLUMNS = (_S.job_class, _S.args, _S.kwargs)


def _missing(now: datetime) -> ColumnElement[bool]:
    has_future = exists().where(_E.schedule_id == _S.id, _future(now))
    return and_(_S.enabled, ~has_future)


@dataclass(frozen=True)
class QueuedExecution:
    """An execution to put: what the job body and the put need, without the ORM object."""

    execution_id: int
    key: str
    run_at: datetime
    queue: str
    priority: int
    ttr: int

    @classmethod
    def of(cls, execution_id: int, run_at: datetime, snapshot: dict[str, Any]) -> QueuedExecution:
        """Built from an execution's id, ``run_at`` and ``cached_schedule``."""
        return cls(
            execution_id,
            str(snapshot["name"]),
            run_at,
            str(snapshot["queue"]),
            int(snapshot["priority"]),
            int(snapshot["ttr"]),
        )


def create_missing(
    pb: Postburner, schedule_ids: list[int], now: datetime, report: PassReport
) -> None:
    """Create (and queue) the next execution of the given schedules, if they still have none."""
    with BackgroundPuts(pb, report) as puts:
        for chunk in chunks(schedule_ids, CREATE_BATCH):
            with pb.work_session() as session:
                locked = try_lock_schedules(session, pb.settings.namespace, chunk)
                planned = _create_batch(pb, session, sorted(locked), now, report)
                session.commit()
            report.created += len(planned)
            puts.submit(planned)


def _create_batch(
    pb: Postburner, session: Session, schedule_ids: list[int], now: datetime, report: PassReport
) -> list[QueuedExecution]:
    """Inside the locked transaction: re-check, plan, insert. Returns the rows to put."""
    if not schedule_ids:
        return []
    schedules = _lock_missing(session, schedule_ids, now)
    latest = _latest_accounted(session, [row.id for row in schedules], now)
    planner = _Planner(pb, now)
    plans = {row.id: found for row in schedules if (found := planner.plan(row, latest, report))}
    waiting = _with_waiting(session, [sid for sid, p in plans.items() if p[0].is_due(now)], now)
    news: list[_NewExecution] = []
    missed: list[dict[str, Any]] = []
    for row in schedules:
        if row.id not in plans:
            continue
        plan, following = plans[row.id]
        missed += _missed_rows(pb, str(row.name), plan, now)
        if not (plan.is_due(now) and row.id in waiting):
            news.append(_NewExecution(row, plan.run_at, following))
    report.missed += _insert_missed(session, missed)
    return _insert_executions(session, news, now)


def _lock_missing(session: Session, schedule_ids: list[int], now: datetime) -> Sequence[Row[Any]]:
    """Re-read the schedules still missing an execution, share-locked until the commit.

    The lock keeps the row from changing between this read (the plan) and the insert (the
    snapshot, built by PostgreSQL from the row); a schedule being edited right now is
    skipped: its editor reconciles it, or the next pass does.
    """
    postgresql = session.get_bind().dialect.name == "postgresql"
    columns = _PLAN_COLUMNS if postgresql else _PLAN_COLUMNS + _SNAPSHOT_ONLY_COLUMNS
    statement = select(*columns).where(_S.id.in_(schedule_ids), _missing(now))
    if postgresql:
        statement = statement.with_for_update(read=True, skip_locked=True, of=_S)
    return session.connection().execute(statement).all()


def _latest_accounted(
    session: Session, schedule_ids: list[int], now: datetime
) -> dict[int, datetime]:
    """Per schedule, the latest skipped or already-due live ``run_at`` (lifecycle's baseline)."""
    if not schedule_ids:
        return {}
    accounted = or_(_E.status == SKIPPED, and_(LIVE, _E.run_at <= now))
    rows = session.connection().execute(
        select(_E.schedule_id, func.max(_E.run_at))
        .where(_E.schedule_id.in_(schedule_ids), accounted)
        .group_by(_E.schedule_id)
    )
    return {sid: latest for sid, latest in rows if sid is not None}


class _Planner:
    """``plan_next`` for many schedules; schedules sharing a spec and baseline share the work."""

    def __init__(self, pb: Postburner, now: datetime) -> None:
        self.pb = pb
        self.now = now
        self._grids: dict[tuple[Any, ...], TimeGrid] = {}
        self._plans: dict[tuple[Any, ...], NextOccurrence] = {}
        self._next: dict[tuple[Any, ...], datetime] = {}
        self._tubes: set[str] = set()

    def plan(
        self, row: Row[Any], latest: dict[int, datetime], report: PassReport
    ) -> tuple[NextOccurrence, datetime] | None:
        """The next occurrence of ``row``'s schedule and the grid point after it; None
        (counted invalid) when the row cannot be planned or queued."""
        try:
            self._check_puttable(row)
        except PostburnerError as exc:
            report.invalid += 1
            report.note(f"schedule {row.name!r} cannot be queued: {exc}")
            return None
        try:
            with planning(row.name):
                plan = self._plan(row, latest)
                return plan, self.next_after(row, plan.run_at)
        except UnplannableScheduleError as exc:
            report.unplannable(exc)
            return None

    def _plan(self, row: Row[Any], latest: dict[int, datetime]) -> NextOccurrence:
        accounted = (t for t in (latest.get(row.id), row.resumed_at) if t is not None)
        baseline = max(accounted, default=self.now)
        key = (*_spec(row), baseline, bool(row.catch_up))
        if key not in self._plans:
            self._plans[key] = plan_next(
                self.grid(row),
                baseline=baseline,
                now=self.now,
                catch_up=bool(row.catch_up),
                window=self.pb.settings.catch_up_window,
            )
        return self._plans[key]

    def grid(self, row: Row[Any]) -> TimeGrid:
        """The schedule's time grid (raises for a bad spec, see
        :mod:`postburner_py.schedules.planning`)."""
        spec = _spec(row)
        if spec not in self._grids:
            self._grids[spec] = stored_grid(row)
        return self._grids[spec]

    def next_after(self, row: Row[Any], instant: datetime) -> datetime:
        """The grid point after ``instant`` (the new execution's ``next_run_at``)."""
        key = (*_spec(row), instant)
        if key not in self._next:
            self._next[key] = self.grid(row).next_after(instant)
        return self._next[key]

    def _check_puttable(self, row: Row[Any]) -> None:
        if row.queue not in self._tubes:
            check_puttable(self.pb, row.queue, row.priority, row.ttr)
            self._tubes.add(row.queue)
        else:
            check_puttable(self.pb, None, row.priority, row.ttr)


def _spec(row: Row[Any]) -> tuple[Any, ...]:
    return (row.cron, row.anchor, row.interval, row.interval_unit, row.timezone)


def check_puttable(pb: Postburner, queue: Any, priority: Any, ttr: Any) -> None:
    """Refuse values written behind the API's back that Beanstalkd would reject
    (``queue`` None: already checked)."""
    if queue is not None:
        pb.queue.tube(str(queue))
    for name, value, low in (("priority", priority, 0), ("ttr", ttr, 1)):
        if not isinstance(value, int) or not low <= value <= _MAX_UINT32:
            raise PostburnerError(f"{name} {value!r} is not an integer {low}..{_MAX_UINT32}")


def _with_waiting(session: Session, schedule_ids: list[int], now: datetime) -> set[int]:
    """Schedules with a due live execution no worker has started (it will run, then chain)."""
    if not schedule_ids:
        return set()
    statement = select(_E.schedule_id).where(
        _E.schedule_id.in_(schedule_ids), LIVE, _E.run_at <= now, not_started()
    )
    return {sid for sid in session.scalars(statement.distinct()) if sid is not None}


class _NewExecution:
    """A row to insert: the planned occurrence of one schedule row."""

    __slots__ = ("next_run_at", "row", "run_at")

    def __init__(self, row: Row[Any], run_at: datetime, next_run_at: datetime) -> None:
        self.row = row
        self.run_at = run_at
        self.next_run_at = next_run_at

    def queued(self, execution_id: int) -> QueuedExecution:
        """What the put needs, once the row has its id."""
        row = self.row
        return QueuedExecution(
            execution_id, row.name, self.run_at, row.queue, row.priority, row.ttr
        )

    def snapshot(self) -> dict[str, Any]:
        """``cached_schedule`` built in Python (SQLite; PostgreSQL builds it in the INSERT)."""
        values = {name: getattr(self.row, name) for name in CACHEABLE_ATTRIBUTES}
        snapshot: dict[str, Any] = normalize_snapshot(values)
        return snapshot


def _insert_executions(
    session: Session, news: list[_NewExecution], now: datetime
) -> list[QueuedExecution]:
    """Insert the new executions, already claimed for the put (``scheduled``, ``enqueued_at``).

    One statement per batch. A row the live unique index refuses (someone created that
    occurrence meanwhile) is skipped, and not put.
    """
    if not news:
        return []
    if session.get_bind().dialect.name == "postgresql":
        inserted = _insert_postgresql(session, news, now)
    else:
        inserted = _insert_generic(session, news, now)
    by_key = {(new.row.id, new.run_at): new for new in news}
    return [by_key[(sid, run_at)].queued(eid) for eid, sid, run_at in inserted]


def _snapshot_sql() -> str:
    """``cached_schedule`` as PostgreSQL builds it from the schedule row ``s``.

    The same JSON value as ``Schedule.snapshot()``: jsonb of the columns, and the anchor as
    the UTC ISO-8601 text Python writes (passed in, since SQL would format it differently).
    """
    fields = ", ".join(
        f"'{name}', " + ("v.anchor" if name == "anchor" else f's."{name}"')
        for name in CACHEABLE_ATTRIBUTES
    )
    return f"jsonb_build_object({fields})"


_INSERT_POSTGRESQL = text(
    f"""
    INSERT INTO {ScheduleExecution.__tablename__} (schedule_id, run_at, next_run_at, status,
        enqueued_at, cached_schedule, created_at, updated_at)
    SELECT v.schedule_id, v.run_at, v.next_run_at, 'scheduled', :now, {_snapshot_sql()},
        :stamp, :stamp
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS v(schedule_id bigint, run_at timestamptz, next_run_at timestamptz, anchor jsonb)
    JOIN {Schedule.__tablename__} AS s ON s.id = v.schedule_id
    ON CONFLICT DO NOTHING
    RETURNING id, schedule_id, run_at
    """
)


def _insert_postgresql(
    session: Session, news: list[_NewExecution], now: datetime
) -> list[tuple[int, int, datetime]]:
    """One INSERT ... SELECT over a single JSON document: one parameter whatever the size
    (a multi-row VALUES list costs more to build and parse than the insert itself)."""
    document = ",".join(
        f'{{"schedule_id":{new.row.id},"run_at":"{new.run_at.isoformat()}",'
        f'"next_run_at":"{new.next_run_at.isoformat()}","anchor":{_iso_json(new.row.anchor)}}}'
        for new in news
    )
    rows = session.connection().execute(
        _INSERT_POSTGRESQL, {"now": now, "stamp": utcnow(), "rows": f"[{document}]"}
    )
    return [(int(row[0]), int(row[1]), row[2].astimezone(UTC)) for row in rows.all()]


def _iso_json(value: datetime | None) -> str:
    """A datetime as ``normalize_snapshot`` stores it (UTC ISO-8601), as JSON."""
    return "null" if value is None else f'"{value.astimezone(UTC).isoformat()}"'


def _insert_generic(
    session: Session, news: list[_NewExecution], now: datetime
) -> list[tuple[int, int, datetime]]:
    stamp = utcnow()
    rows = [
        {
            "schedule_id": new.row.id,
            "run_at": new.run_at,
            "next_run_at": new.next_run_at,
            "status": SCHEDULED,
            "enqueued_at": now,
            "cached_schedule": new.snapshot(),
            "created_at": stamp,
            "updated_at": stamp,
        }
        for new in news
    ]
    dialect = session.get_bind().dialect.name
    statement = insert_ignoring_conflicts(dialect, ScheduleExecution).returning(
        _E.id, _E.schedule_id, _E.run_at
    )
    inserted = session.connection().execute(statement, rows).all()
    return [(int(row[0]), int(row[1] or 0), row[2]) for row in inserted]


def _missed_rows(
    pb: Postburner, key: str, plan: NextOccurrence, now: datetime
) -> list[dict[str, Any]]:
    if plan.missed_total > len(plan.missed):
        log.warning(
            "schedule %s missed %d occurrences; the first %d are in the dispatch log",
            key,
            plan.missed_total,
            len(plan.missed),
        )
    return [_missed_row(pb, key, fire_time, now) for fire_time in plan.missed]


def _missed_row(pb: Postburner, key: str, fire_time: datetime, now: datetime) -> dict[str, Any]:
    return {
        "key": key,
        "fire_time": fire_time,
        "dispatched_at": now,
        "node_id": pb.settings.node_id,
        "status": DispatchStatus.MISSED.value,
        "attempt": 0,
        "lease_expires_at": None,
        "updated_at": now,
    }


def _insert_missed(session: Session, rows: list[dict[str, Any]]) -> int:
    """Record missed occurrences in one statement; ones already known are left alone."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    statement = insert_ignoring_conflicts(dialect, DispatchRecord).returning(DispatchRecord.id)
    return len(session.connection().execute(statement, rows).all())


# --- 4. unqueued: live executions without a job -------------------------------------------------


def _unqueued(now: datetime) -> ColumnElement[bool]:
    claimable = or_(
        _E.status == PENDING,
        and_(
            _E.status == SCHEDULED,
            or_(_E.enqueued_at.is_(None), _E.enqueued_at < now - ENQUEUE_GRACE),
        ),
    )
    return and_(
        _E.beanstalk_job_id.is_(None),
        claimable,
        _E.run_at > now - LOOKBACK,
        _schedule_enabled(),
        or_(_E.run_at > now, not_started()),
    )


def queue_unqueued(
    pb: Postburner, now: datetime, report: PassReport, ids: Sequence[int] | None = None
) -> None:
    """Put every live execution that has no job (restricted to ``ids`` when given).

    A due one is put only if a worker would still run it (the worker's rule: at most
    ``catch_up_window`` late, and with ``catch_up=False`` only before the next occurrence is
    due); otherwise it is superseded and its occurrence recorded ``missed``.
    """
    with pb.session() as session:
        statement = select(_E.id).where(_unqueued(now)).order_by(_E.id)
        if ids is not None:
            statement = statement.where(_E.id.in_(ids))
        found = list(session.scalars(statement))
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
    rows = session.execute(
        select(_E.id, _E.schedule_id, _E.run_at, _E.next_run_at, _E.cached_schedule)
        .where(_E.id.in_(ids), _unqueued(now))
        .with_for_update(skip_locked=True, of=_E)
    ).all()
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
    _mark_claimed(session, [item.execution_id for item in claimable], now)
    return claimable


def _would_run(pb: Postburner, row: Row[Any], now: datetime) -> bool:
    """The worker's lateness rule (``job_runner``): would a delivery now still run?"""
    if row.run_at > now:
        return True
    if now - row.run_at > pb.settings.catch_up_window:
        return False
    catch_up = bool(row.cached_schedule.get("catch_up"))
    return catch_up or row.next_run_at is None or row.next_run_at > now


def _settle_too_late(
    pb: Postburner, session: Session, rows: list[Row[Any]], now: datetime, report: PassReport
) -> None:
    """Supersede due executions too late to run and record their occurrences missed."""
    if not rows:
        return
    locked = try_lock_schedules(session, pb.settings.namespace, _schedule_ids(rows))
    mine = [row for row in rows if row.schedule_id in locked]
    retired = _supersede(session, [row.id for row in mine], _unqueued(now))
    gone = {ref.execution_id for ref in retired}
    missed = [
        _missed_row(pb, str(row.cached_schedule["name"]), row.run_at, now)
        for row in mine
        if row.id in gone
    ]
    report.superseded += len(gone)
    report.missed += _insert_missed(session, missed)


def _mark_claimed(session: Session, ids: list[int], now: datetime) -> None:
    if ids:
        session.connection().execute(
            update(_E)
            .where(_E.id.in_(ids))
            .values(status=SCHEDULED, enqueued_at=now, updated_at=utcnow())
        )


# --- 4b. one-off delayed jobs without a job ---------------------------------------------------


def delayed_not_started() -> ColumnElement[bool]:
    return ~exists().where(
        DispatchRecord.key == literal(ONE_OFF_KEY_PREFIX) + DelayedJob.job_id,
        DispatchRecord.fire_time == DelayedJob.run_at,
    )


def _delayed_unqueued(now: datetime) -> ColumnElement[bool]:
    return and_(
        DelayedJob.status == DELAYED_PENDING,
        DelayedJob.beanstalk_job_id.is_(None),
        or_(DelayedJob.enqueued_at.is_(None), DelayedJob.enqueued_at < now - ENQUEUE_GRACE),
        delayed_not_started(),
    )


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
        statement = select(DelayedJob).where(_delayed_unqueued(now)).order_by(DelayedJob.id)
        if ids is not None:
            statement = statement.where(DelayedJob.id.in_(ids))
        rows = session.scalars(statement).all()
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
        claimed = session.connection().execute(
            update(DelayedJob)
            .where(DelayedJob.id == delayed_id, _delayed_unqueued(now))
            .values(enqueued_at=now)
        )
        session.commit()
    return bool(claimed.rowcount)


# --- 5. leftover jobs of retired executions and cancelled one-off jobs --------------------------

_RETIRED: tuple[tuple[type[ScheduleExecution] | type[DelayedJob], tuple[str, ...], str], ...] = (
    (ScheduleExecution, (SKIPPED, SUPERSEDED), "execution"),
    (DelayedJob, (CANCELLED,), "delayed"),
)


def remove_retired_jobs(pb: Postburner, now: datetime, report: PassReport) -> None:
    """Delete the jobs of skipped, superseded or cancelled rows, then forget their ids.

    A job a worker holds reserved cannot be deleted; it keeps its id and is tried again next
    pass (the worker drops it anyway: its row is no longer ``scheduled``/``pending``).
    """
    for model, statuses, kind in _RETIRED:
        if report.queue_error is not None:
            return
        try:
            report.removed += _remove_retired(pb, model, statuses, kind, now)
        except QueueUnavailableError as exc:
            report.queue_error = str(exc)


def _remove_retired(
    pb: Postburner,
    model: type[ScheduleExecution] | type[DelayedJob],
    statuses: tuple[str, ...],
    kind: str,
    now: datetime,
) -> int:
    retired = and_(
        model.status.in_(statuses),
        model.beanstalk_job_id.is_not(None),
        model.run_at > now - LOOKBACK,
    )
    with pb.session() as session:
        found = session.execute(
            select(model.id, model.beanstalk_job_id, model.beanstalk_server_id).where(retired)
        ).all()
    gone = delete_jobs(pb, [JobRef(row[0], row[1], row[2], kind=kind) for row in found])
    for chunk in chunks(gone, PUT_CHUNK):
        with pb.work_session() as session:
            session.connection().execute(
                update(model)
                .where(model.id.in_(chunk), retired)
                .values(beanstalk_job_id=None, beanstalk_server_id=None)
            )
            session.commit()
    return len(gone)


# --- putting and recording --------------------------------------------------------------------


class BackgroundPuts:
    """Puts batches on a background thread while the pass goes on writing the next batch.

    Each submitted batch is already committed (claimed). Leaving the ``with`` block waits for
    every put and record; ``left`` is then how many executions could not be put.
    """

    def __init__(self, pb: Postburner, report: PassReport) -> None:
        self.pb = pb
        self.report = report
        self.left = 0
        self._pending: list[Future[int]] = []

    def __enter__(self) -> BackgroundPuts:
        return self

    def submit(self, items: Sequence[QueuedExecution]) -> None:
        """Put ``items`` (and record their job ids) in the background."""
        if items:
            self._pending.append(_putter().submit(put_and_record, self.pb, items, self.report))

    def __exit__(self, *_exc: object) -> None:
        for future in self._pending:
            self.left += future.result()


_PUTTER: list[ThreadPoolExecutor] = []
_PUTTER_LOCK = threading.Lock()


def _putter() -> ThreadPoolExecutor:
    """The one long-lived put thread of this process, shared by every pass.

    Long-lived on purpose: Beanstalkd connections are per thread, so a thread per pass would
    leave a connection behind each time. One thread also keeps a pass's puts in order.
    """
    with _PUTTER_LOCK:
        if not _PUTTER:
            _PUTTER.append(ThreadPoolExecutor(1, thread_name_prefix="postburner-watchdog-put"))
        return _PUTTER[0]


def put_and_record(pb: Postburner, items: Sequence[QueuedExecution], report: PassReport) -> int:
    """Put claimed executions in chunks over several connections; record each chunk's job ids.

    The rows are committed ``scheduled`` before the put (DESIGN: database first). If Beanstalkd
    is unavailable the claims are released, so the next pass retries at once; returns how many
    were not put.
    """
    left = 0
    for chunk in chunks(items, PUT_CHUNK):
        if report.queue_error is None:
            try:
                _put_chunk(pb, chunk)
                continue
            except QueueUnavailableError as exc:
                report.queue_error = str(exc)
        _release(pb, [item.execution_id for item in chunk])
        left += len(chunk)
    return left


def _put_chunk(pb: Postburner, chunk: Sequence[QueuedExecution]) -> None:
    secret = pb.secret()
    server_before = pb.queue.server_id()
    moment = pb.clock()
    requests = [
        PutRequest(
            body=encode_body(
                JobBody("execution", item.execution_id, item.key, item.run_at), secret
            ),
            queue=item.queue,
            priority=item.priority,
            delay=delay_seconds(item.run_at, moment),
            ttr=item.ttr,
        )
        for item in chunk
    ]
    job_ids = pb.queue.put_many(requests, connections=PUT_CONNECTIONS)
    # Job ids mean something only on the server that issued them. Record the id read before
    # the put: if the server restarted meanwhile it is no longer the current one, and the
    # queue audit checks these jobs with peek instead of trusting them.
    refs = [
        JobRef(item.execution_id, job_id, server_before)
        for item, job_id in zip(chunk, job_ids, strict=True)
    ]
    _record(pb, refs)


def _record(pb: Postburner, refs: list[JobRef]) -> None:
    """Store job ids on rows still live and still without one; take back the other jobs."""
    with pb.work_session() as session:
        if session.get_bind().dialect.name == "postgresql":
            recorded = _record_postgresql(session, refs)
        else:
            recorded = _record_generic(session, refs)
        session.commit()
    for ref in refs:
        if ref.execution_id not in recorded:
            remove_job(pb, ref)  # skipped, superseded or put by someone else meanwhile


_RECORD_POSTGRESQL = text(
    f"""
    UPDATE {ScheduleExecution.__tablename__} AS e
    SET beanstalk_job_id = v.job_id, beanstalk_server_id = :server, updated_at = :stamp
    FROM unnest(CAST(:ids AS bigint[]), CAST(:jobs AS bigint[])) AS v(id, job_id)
    WHERE e.id = v.id AND e.beanstalk_job_id IS NULL AND e.status IN ('pending', 'scheduled')
    RETURNING e.id
    """
)


def _record_postgresql(session: Session, refs: list[JobRef]) -> set[int]:
    rows = session.connection().execute(
        _RECORD_POSTGRESQL,
        {
            "server": refs[0].server_id,
            "stamp": utcnow(),
            "ids": [ref.execution_id for ref in refs],
            "jobs": [ref.job_id for ref in refs],
        },
    )
    return {int(row[0]) for row in rows.all()}


def _record_generic(session: Session, refs: list[JobRef]) -> set[int]:
    """SQLite: an executemany UPDATE, then read back which rows took our job id."""
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


def _release(pb: Postburner, ids: list[int]) -> None:
    """Forget our claim on rows we could not put, so the next pass retries without waiting."""
    if not ids:
        return
    with pb.work_session() as session:
        session.connection().execute(
            update(_E)
            .where(_E.id.in_(ids), _E.beanstalk_job_id.is_(None), _E.status == SCHEDULED)
            .values(enqueued_at=None)
        )
        session.commit()
