"""A facet of the storage seam; see the class docstring for what it covers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from postburner_py.store.facet import Facet

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from postburner_py.errors import UnplannableScheduleError
    from postburner_py.store.models import (
        DelayedJob,
        ScheduleExecution,
        WatchdogHeartbeat,
        WorkerHeartbeat,
    )

#: The two kinds of row that own a Beanstalkd job (the job body's ``kind``).
JobKind = Literal["execution", "delayed"]
#: Which rows a supersede still applies to when it runs (re-checked in the UPDATE):
#: ``live`` pending or scheduled; ``stale`` live, of a disabled or deleted schedule, recent,
#: not started; ``unqueued`` live without a job, claimable, of an enabled schedule.
StillRule = Literal["live", "stale", "unqueued"]


@dataclass(frozen=True)
class PutRef:
    """Where one put went: the row, its Beanstalkd job id and the server that issued it."""

    execution_id: int
    job_id: int
    server_id: str | None


@dataclass(frozen=True)
class PlannedExecution:
    """One execution to insert: the plan row of its schedule (:meth:`ScheduleStore.plan_rows`)
    and the planned occurrence."""

    row: Any
    run_at: datetime
    #: The grid point after ``run_at`` (None: the schedule's window ends with this one).
    next_run_at: datetime | None


class ScheduleStore(Facet, ABC):
    """Locks, executions and the watchdog's repair passes.

    Every method takes the caller's session (or connection): it runs inside the caller's
    transaction and never commits or rolls it back unless its contract says so. "Live" means
    ``pending`` or ``scheduled``; an occurrence has "started" once the dispatch log holds any
    row for its (key, fire time), a ``missed`` record included, unless said otherwise.
    """

    # --- locks ------------------------------------------------------------------------------

    @abstractmethod
    def lock_schedules(
        self, session: Session, namespace: str, schedule_ids: Iterable[int], *, blocking: bool
    ) -> bool:
        """Start ``session``'s transaction holding the lock of every schedule in ``schedule_ids``.

        Must be the first thing done with a fresh session. While the transaction lasts no other
        session holds the lock of any of these schedules (in the same ``namespace``); it is
        released by commit, rollback or the death of the process. Blocking: waits, and always
        returns True. Not blocking: returns False, with the transaction rolled back, when a
        lock is held elsewhere (a single-writer store waits a short moment first). Several
        ids are taken in ascending order, so two lockers never deadlock.
        """

    @abstractmethod
    def try_lock_schedules(
        self, session: Session, namespace: str, schedule_ids: Iterable[int]
    ) -> set[int]:
        """Inside an open transaction, take every lock of ``schedule_ids`` that is free, without
        waiting; return the ids now held. A single-writer store's transaction covers every
        schedule: it returns every id. Locks are held until the transaction ends."""

    # --- finding the work -------------------------------------------------------------------

    @abstractmethod
    def schedules_to_converge(self, session: Session, now: datetime) -> tuple[list[int], list[int]]:
        """One read over every enabled, unpaused schedule and its live executions after ``now``.

        Returns (missing, wrong), each in ascending id order: the schedules without a live
        future execution (except those whose ``ends_at`` is at or before ``now``: ended), and
        those with more than one or whose one has drifted. Drift is
        computed in SQL from the stored rows, never from values the process kept, so an edit
        made with raw SQL is seen; key order and spacing of JSON are not drift.
        """

    @abstractmethod
    def stale_executions(
        self, session: Session, now: datetime, lookback: timedelta
    ) -> Sequence[Any]:
        """Live executions of deleted, disabled or paused schedules, after ``now - lookback``,
        that are in the future or not started: rows of (``id``, ``schedule_id``)."""

    @abstractmethod
    def unparsable_schedules(
        self, session: Session, *, enabled_only: bool
    ) -> dict[int, UnplannableScheduleError]:
        """Schedules whose ``anchor``, ``resumed_at``, ``starts_at``, ``ends_at`` or
        ``paused_at`` holds a value that is not an instant.

        Only a store that stores instants as text can hold one (``unparsable_instants``); the
        others return ``{}``. Found in SQL without loading the rows (loading one would raise);
        each is reported as an error naming the schedule and the column, never raised.
        """

    @abstractmethod
    def live_not_started(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> list[int]:
        """The live executions of these schedules that are in the future or not started."""

    @abstractmethod
    def unqueued_executions(
        self,
        session: Session,
        now: datetime,
        lookback: timedelta,
        grace: timedelta,
        ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Ids (ascending) of live executions without a job that may be put: ``pending``, or
        ``scheduled`` with no ``enqueued_at`` or one older than ``grace``; after
        ``now - lookback``, of an enabled unpaused schedule, in the future or not started.
        Restricted to ``ids`` when given."""

    @abstractmethod
    def claim_unqueued(
        self,
        session: Session,
        ids: Sequence[int],
        now: datetime,
        lookback: timedelta,
        grace: timedelta,
    ) -> Sequence[Any]:
        """Of ``ids``, the rows still unqueued (as in :meth:`unqueued_executions`), row-locked
        until the transaction ends; rows another transaction holds are skipped, not waited
        for. Columns ``id, schedule_id, run_at, next_run_at, cached_schedule``."""

    @abstractmethod
    def mark_claimed(self, session: Session, ids: Sequence[int], now: datetime) -> None:
        """Mark these executions ``scheduled`` with ``enqueued_at = now`` (claimed for a put)."""

    @abstractmethod
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
        """Mark ``superseded`` the executions of ``ids`` that still match ``still`` (re-checked
        in the same statement, so a row a worker or an editor changed meanwhile is left alone);
        ``lookback`` and ``grace`` are the rule's parameters. Returns (id, job id,
        server id) of each row changed, so the caller can remove the jobs after the commit."""

    # --- creating executions ----------------------------------------------------------------

    @abstractmethod
    def plan_rows(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> Sequence[Any]:
        """Re-read the enabled, unpaused schedules of ``schedule_ids`` still without a live
        future execution: the columns planning and the put need (``id, name, queue, priority,
        ttr, catch_up, resumed_at, catch_up_window, starts_at, ends_at, cron, anchor,
        interval, interval_unit, timezone``, and what
        :meth:`insert_executions` needs for the snapshot). Where the store can, the rows are
        share-locked until the commit and a row being edited is skipped, so the insert's
        snapshot is the row that was planned."""

    @abstractmethod
    def latest_accounted(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> dict[int, datetime]:
        """Per schedule, the latest ``run_at`` of a skipped execution or of a live one at or
        before ``now`` (the planning baseline); schedules with none are absent."""

    @abstractmethod
    def schedules_with_waiting(
        self, session: Session, schedule_ids: Sequence[int], now: datetime
    ) -> set[int]:
        """The schedules with a live execution due by ``now`` that no worker has started."""

    @abstractmethod
    def insert_executions(
        self, session: Session, planned: Sequence[PlannedExecution], now: datetime
    ) -> list[tuple[int, int, datetime]]:
        """Insert the planned executions, already claimed for a put (``scheduled``,
        ``enqueued_at = now``), their snapshot taken from the schedule row.

        One statement. A row the live ``(schedule_id, run_at)`` unique index refuses (someone
        created that occurrence meanwhile, or it is in the list twice) is skipped without an
        error, and concurrent inserters of one occurrence never both succeed. Returns (id,
        schedule id, run_at) of exactly the rows inserted.
        """

    @abstractmethod
    def record_puts(self, session: Session, refs: Sequence[PutRef]) -> set[int]:
        """Store job ids on rows still live and still without one; the ids of the rows that
        took theirs. A row skipped, superseded or put by someone else meanwhile is left alone
        and absent from the result (its job must be taken back by the caller). ``refs`` of one
        call share one server id."""

    @abstractmethod
    def release_claims(self, session: Session, execution_ids: Sequence[int]) -> None:
        """Forget the put claim (``enqueued_at``) of ``scheduled`` rows still without a job."""

    @abstractmethod
    def latest_live_run_at(
        self, session: Session, schedule_ids: Sequence[int]
    ) -> dict[int, datetime]:
        """Per schedule, the latest ``run_at`` of its live executions (absent: none)."""

    # --- one execution (lifecycle) ----------------------------------------------------------

    @abstractmethod
    def claim_for_put(
        self, session: Session, execution_id: int, now: datetime, grace: timedelta
    ) -> bool:
        """Conditionally mark one execution ``scheduled`` with ``enqueued_at = now``: only when
        it has no job and is ``pending``, or ``scheduled`` with a claim older than ``grace``.
        Of two concurrent claimers at most one gets True."""

    @abstractmethod
    def release_claim(self, session: Session, execution_id: int) -> None:
        """Clear one execution's put claim (``enqueued_at``) when it is still without a job."""

    @abstractmethod
    def record_job(self, session: Session, execution_id: int, job_id: int, server_id: str) -> bool:
        """Store a job id on one execution if it is still live; False when it is not."""

    @abstractmethod
    def forget_jobs(self, session: Session, execution_ids: Sequence[int]) -> None:
        """Clear the job ids of these executions (their jobs are gone from Beanstalkd)."""

    @abstractmethod
    def execution_for_update(self, session: Session, execution_id: int) -> ScheduleExecution:
        """One execution, row-locked until the transaction ends (raises if absent)."""

    @abstractmethod
    def live_executions(self, session: Session, schedule_id: int) -> list[ScheduleExecution]:
        """The live executions of one schedule, oldest first, reloaded from the database."""

    @abstractmethod
    def claimed_occurrences(
        self, session: Session, occurrences: Sequence[tuple[str, datetime]]
    ) -> set[tuple[str, datetime]]:
        """Of these (key, fire time) occurrences, the ones the dispatch log holds any row for."""

    @abstractmethod
    def occurrence_claimed(self, session: Session, key: str, fire_time: datetime) -> bool:
        """True when the dispatch log holds a claim for it (``dispatched``, ``completed`` or
        ``failed``; not a ``missed``, ``paused`` or ``skipped`` record of one that never ran)."""

    @abstractmethod
    def skipped_ahead(
        self, session: Session, keys: Sequence[str], after: datetime
    ) -> dict[str, set[datetime]]:
        """Per key of ``keys``, the fire times after ``after`` an operator skipped ahead (the
        dispatch log's ``skipped`` rows): planning steps over them. Keys with none are
        absent. One indexed read (status, fire time); takes no lock, writes nothing."""

    @abstractmethod
    def schedule_enabled(self, session: Session, schedule_id: int) -> bool:
        """Whether the schedule exists and is enabled."""

    @abstractmethod
    def schedule_name(self, session: Session, schedule_id: int) -> str | None:
        """The schedule's name, read as a column (works when the row cannot be loaded)."""

    @abstractmethod
    def retire_executions_of(
        self, session: Session, schedule_id: int
    ) -> list[tuple[int, int | None, str | None]]:
        """Supersede every live execution of a schedule being deleted; (id, job id, server)."""

    # --- jobs of retired rows, one-off jobs ---------------------------------------------------

    @abstractmethod
    def retired_jobs(
        self, session: Session, kind: JobKind, now: datetime, lookback: timedelta
    ) -> Sequence[Any]:
        """Skipped or superseded executions (``execution``), cancelled one-off jobs
        (``delayed``), after ``now - lookback``, that still have a job: (id, job id, server)."""

    @abstractmethod
    def forget_retired_jobs(
        self,
        session: Session,
        kind: JobKind,
        ids: Sequence[int],
        now: datetime,
        lookback: timedelta,
    ) -> None:
        """Clear the job ids of those of ``ids`` still retired (as in :meth:`retired_jobs`)."""

    @abstractmethod
    def unqueued_delayed(
        self, session: Session, now: datetime, grace: timedelta, ids: Sequence[int] | None = None
    ) -> list[DelayedJob]:
        """Pending one-off jobs without a job and without a claim younger than ``grace``, not
        started (ascending id; restricted to ``ids`` when given)."""

    @abstractmethod
    def claim_delayed(
        self, session: Session, delayed_id: int, now: datetime, grace: timedelta | None = None
    ) -> bool:
        """Conditionally set ``enqueued_at = now`` on one pending one-off job without a job:
        with ``grace``, only when it is unqueued as in :meth:`unqueued_delayed`. At most one
        of concurrent claimers gets True."""

    @abstractmethod
    def set_delayed_job(
        self, session: Session, delayed_id: int, job_id: int | None, server_id: str | None
    ) -> None:
        """Record (or with None clear, releasing the claim) one one-off job's Beanstalkd job."""

    @abstractmethod
    def delayed_status(self, session: Session, job_id: str) -> str | None:
        """The status of the newest one-off job with ``job_id`` (None: there is none)."""

    @abstractmethod
    def pending_delayed_for_update(self, session: Session, job_id: str) -> DelayedJob | None:
        """The pending one-off job with ``job_id``, row-locked until the transaction ends."""

    # --- the queue audit ----------------------------------------------------------------------

    @abstractmethod
    def audit_tally(
        self,
        session: Session,
        kind: JobKind,
        server_id: str,
        now: datetime,
        window: timedelta,
        margin: timedelta,
    ) -> Sequence[Any]:
        """Per queue, over rows of ``kind`` that own a job and may still run: how many future
        jobs (due after ``now + margin``) are expected on ``server_id``, and how many were put
        on another server; rows of (queue, expected, foreign). Read-only, one grouped query."""

    @abstractmethod
    def audit_suspects(
        self,
        session: Session,
        kind: JobKind,
        server_id: str,
        short_queues: Sequence[str],
        now: datetime,
        window: timedelta,
    ) -> Sequence[Any]:
        """Rows of ``kind`` whose job is foreign, or in a short tube (future, this server):
        ``id, beanstalk_job_id, beanstalk_server_id, run_at, key``."""

    @abstractmethod
    def adopt_jobs(
        self, connection: Connection, kind: JobKind, rows: Sequence[Any], server_id: str
    ) -> None:
        """Record ``server_id`` on rows whose job survived a restart (unless their job changed)."""

    @abstractmethod
    def forget_lost_jobs(self, connection: Connection, kind: JobKind, rows: Sequence[Any]) -> None:
        """Clear the job id and claim of rows whose job is lost, unless the row changed."""

    # --- watchdog and settings ------------------------------------------------------------------

    @abstractmethod
    def heartbeats(self, session: Session) -> list[WatchdogHeartbeat]:
        """Every watchdog's heartbeat row, by node."""

    @abstractmethod
    def beat(self, session: Session, row: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Insert the heartbeat ``row``, or apply ``changes`` to the one its node has (upsert)."""

    @abstractmethod
    def forget_heartbeat(self, session: Session, node: str) -> None:
        """Delete one watchdog's heartbeat row."""

    @abstractmethod
    def worker_heartbeats(self, session: Session) -> list[WorkerHeartbeat]:
        """Every worker's heartbeat row, live or stale, ordered by node then start.

        The caller decides what is live (``last_seen_at`` against its own clock); one query
        whatever the number of workers.
        """

    @abstractmethod
    def beat_worker(self, session: Session, row: Mapping[str, Any]) -> None:
        """Insert the worker heartbeat ``row`` (every column), or overwrite the row with its
        ``id`` (one statement, an upsert: never two rows for one id)."""

    @abstractmethod
    def forget_worker(self, session: Session, worker_id: str) -> None:
        """Delete one worker's heartbeat row (a clean stop); no error when it is gone."""

    @abstractmethod
    def expire_worker_heartbeats(self, session: Session, before: datetime) -> int:
        """Delete the worker heartbeat rows last seen before ``before``; returns how many.

        One statement; rows of workers still beating are never touched as long as their
        last beat is at or after ``before``.
        """

    @abstractmethod
    def queues_in_use(self, session: Session) -> list[str]:
        """The queue names of enabled schedules and of pending one-off jobs, sorted, each once.

        What a worker started without ``--queue`` serves; one query, no lock.
        """

    def read_setting(self, session: Session, key: str) -> str | None:
        """The value of setting ``key``, or None when there is no such row. Reads only."""

    @abstractmethod
    def write_setting(self, session: Session, key: str, value: str, stamp: datetime) -> None:
        """Store ``value`` as setting ``key`` (inserted or replaced in one statement, so two
        concurrent writers leave one row); the caller commits."""

    @abstractmethod
    def schedule_zones(self, session: Session) -> list[str]:
        """The distinct ``timezone`` values of enabled schedules, sorted (one query). Reads
        only; a stored value need not be a valid zone name."""

    @abstractmethod
    def future_runs_in_zones(
        self, session: Session, zones: Sequence[str], now: datetime
    ) -> Sequence[Any]:
        """One row per live execution due after ``now`` of an enabled schedule whose
        ``timezone`` is in ``zones``: the schedule's plan columns (as :meth:`plan_rows`,
        ``id`` being the schedule's) and ``run_at``, ordered by schedule id then ``run_at``.
        One query, whatever the number of zones; reads only."""

    @abstractmethod
    def setting(self, connection: Connection, key: str, candidate: str, stamp: datetime) -> str:
        """The value of setting ``key``, first stored as ``candidate`` if there is none.

        Concurrent callers all get the one value stored first: a conflicting insert is
        ignored and the row read back.
        """
