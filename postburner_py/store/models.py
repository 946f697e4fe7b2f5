"""ORM models: :class:`Schedule` (what runs, when), :class:`ScheduleExecution` (one run),
:class:`DelayedJob` (a one-off job), :class:`WatchdogHeartbeat`, :class:`WorkerHeartbeat` and
:class:`Setting`.

Model methods that touch the queue reach it through the session that loaded them: sessions
made by :meth:`postburner_py.Postburner.session` carry their ``Postburner`` in ``session.info``.
The rules they apply (:mod:`postburner_py.schedules.lifecycle`) register themselves with
:func:`register_lifecycle` when imported (the session hooks import them), so this module
imports no role above the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, object_session, relationship, validates

from postburner_py import validation
from postburner_py.errors import (
    NextExecutionRunAtConflict,
    PostburnerError,
    ScheduleValidationError,
)
from postburner_py.keys import one_off_key
from postburner_py.store.engine import Base as Base
from postburner_py.store.engine import BigIntPK, JSONType, UTCDateTime, utcnow
from postburner_py.timegrid import grid as timegrid
from postburner_py.timegrid.dst import (
    DEFAULT_DST_FOLD,
    DEFAULT_DST_GAP,
    validate_dst_fold,
    validate_dst_gap,
)
from postburner_py.timegrid.grid import TimeGrid
from postburner_py.timegrid.window import WindowedGrid, WindowEnded

if TYPE_CHECKING:
    from postburner_py.app import Postburner


class ExecutionStatus(StrEnum):
    """The stored status of a :class:`ScheduleExecution` (equal to the stored text)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"


class DelayedStatus(StrEnum):
    """The stored status of a :class:`DelayedJob` (equal to the stored text)."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING = ExecutionStatus.PENDING
SCHEDULED = ExecutionStatus.SCHEDULED
SKIPPED = ExecutionStatus.SKIPPED
SUPERSEDED = ExecutionStatus.SUPERSEDED
LIVE_STATUSES = (PENDING, SCHEDULED)
_LIVE_SQL = "status IN ('pending', 'scheduled')"

CACHEABLE_ATTRIBUTES = (
    "job_class",
    "args",
    "kwargs",
    "queue",
    "priority",
    "ttr",
    "timezone",
    "anchor",
    "interval",
    "interval_unit",
    "cron",
    "catch_up",
    "name",
    "catch_up_window",
    "starts_at",
    "ends_at",
    "dst_gap",
    "dst_fold",
    "jitter",
)

DEFAULT_TTR = 300
DEFAULT_MAX_ATTEMPTS = 3
_SCHEDULE_DEFAULTS: dict[str, Any] = {
    "queue": "default",
    "priority": validation.DEFAULT_PRIORITY,
    "ttr": DEFAULT_TTR,
    "max_attempts": DEFAULT_MAX_ATTEMPTS,
    "timezone": "UTC",
    "catch_up": False,
    "enabled": True,
    "dst_gap": DEFAULT_DST_GAP,
    "dst_fold": DEFAULT_DST_FOLD,
    "overlap": "skip",
}


class LifecycleRules(Protocol):
    """What the model methods ask of :mod:`postburner_py.schedules.lifecycle`."""

    def reconcile_schedule(
        self, pb: Postburner, schedule_id: int, *, blocking: bool = ..., now: datetime | None = ...
    ) -> bool: ...

    def enqueue_execution(self, pb: Postburner, execution_id: int, *, now: datetime) -> None: ...

    def skip_execution(
        self, pb: Postburner, execution_id: int, *, now: datetime | None = ...
    ) -> bool: ...

    def supersede_execution(self, pb: Postburner, execution_id: int) -> bool: ...

    def pause_schedule(
        self, pb: Postburner, schedule_id: int, *, reason: str | None, now: datetime | None = ...
    ) -> bool: ...

    def resume_schedule(
        self, pb: Postburner, schedule_id: int, *, now: datetime | None = ...
    ) -> bool: ...

    def skip_occurrence(
        self, pb: Postburner, schedule_id: int, run_at: datetime, *, now: datetime | None = ...
    ) -> bool: ...


_LIFECYCLE: list[LifecycleRules] = []


class RunControlRules(Protocol):
    """What the model methods ask of :mod:`postburner_py.schedules.run_control`."""

    def trigger_now(
        self,
        pb: Postburner,
        schedule_id: int,
        *,
        overlap: str | None = ...,
        now: datetime | None = ...,
    ) -> Any: ...

    def backfill(
        self,
        pb: Postburner,
        schedule_id: int,
        start: datetime,
        end: datetime,
        *,
        dry_run: bool = ...,
        now: datetime | None = ...,
    ) -> Any: ...

    def retry_occurrence(
        self, pb: Postburner, schedule_id: int, fire_time: datetime, *, now: datetime | None = ...
    ) -> Any: ...


_RUN_CONTROL: list[RunControlRules] = []


def register_run_control(rules: RunControlRules) -> None:
    """Install the run-now, backfill and retry rules (the run_control module, on its import)."""
    _RUN_CONTROL[:] = [rules]


def run_control() -> RunControlRules:
    """The registered run-control rules (imported with the session hooks)."""
    if not _RUN_CONTROL:
        raise PostburnerError(
            "run control is not loaded; import postburner_py.schedules.run_control"
        )
    return _RUN_CONTROL[0]


def register_lifecycle(rules: LifecycleRules) -> None:
    """Install the rules the model methods apply (the lifecycle module, on its import)."""
    _LIFECYCLE[:] = [rules]


def lifecycle() -> LifecycleRules:
    """The registered lifecycle rules; they are imported with the session hooks that every
    session made by :meth:`postburner_py.Postburner.session` carries."""
    if not _LIFECYCLE:
        raise PostburnerError(
            "the schedule lifecycle is not loaded; import postburner_py.schedules.lifecycle"
        )
    return _LIFECYCLE[0]


def postburner_of(instance: Base) -> Postburner:
    """The :class:`Postburner` whose session loaded ``instance``."""
    session = object_session(instance)
    owner = session.info.get("postburner") if session is not None else None
    if owner is None:
        raise PostburnerError(
            f"{type(instance).__name__} is not attached to a session made by "
            "Postburner.session(); load it with `with pb.session() as s: ...`"
        )
    return cast("Postburner", owner)


def postburner_clock(instance: Base) -> Callable[[], datetime]:
    """The clock of the owning :class:`Postburner`, or the wall clock when detached."""
    session = object_session(instance)
    owner = session.info.get("postburner") if session is not None else None
    return owner.clock if owner is not None else utcnow


def normalize_snapshot(attributes: dict[str, Any]) -> Any:
    """One identical JSON round trip: an aware datetime equals its UTC ISO-8601 string."""
    return json.loads(json.dumps(attributes, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        instant: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return instant.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


class Schedule(Base):
    """A recurring job: *what* runs (``job_class``, ``args``, ``kwargs``, ``queue``,
    ``priority``, ``ttr``) and *when* (``cron``, or ``anchor`` + ``interval`` +
    ``interval_unit``, in ``timezone``, with the DST policy ``dst_gap`` and ``dst_fold``).

    Field checks run on assignment; the cron/interval combination, and that the next
    occurrence can be put into Beanstalkd, are checked when the session flushes. Either way a
    bad value raises :class:`~postburner_py.errors.ScheduleValidationError` naming the field
    and nothing is written. Text must fit its column without NUL characters or lone
    surrogates, integers their column and Beanstalkd's range; ``args``/``kwargs`` are JSON
    of at most ``MAX_ARGUMENT_DEPTH`` levels and ``MAX_ARGUMENT_BYTES`` bytes each
    (:mod:`postburner_py.validation`). Strings in them may hold placeholders such as
    ``{{fire_time.iso8601}}``, filled per occurrence; ``\\{{`` is a literal ``{{``.
    """

    __tablename__ = "postburner_schedules"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    job_class: Mapped[str] = mapped_column(String(255))
    args: Mapped[list[Any]] = mapped_column(JSONType)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONType)
    queue: Mapped[str] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(BigInteger)
    ttr: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    #: Seconds an attempt may run before it is failed and its thread abandoned (None: no
    #: limit). Read by the worker at each delivery, not part of the queued snapshot.
    timeout: Mapped[float | None] = mapped_column(Float)
    #: Dotted exception class names that fail the occurrence at once, never retried.
    no_retry_on: Mapped[list[str] | None] = mapped_column(JSONType)
    timezone: Mapped[str] = mapped_column(String(64))
    cron: Mapped[str | None] = mapped_column(String(255))
    anchor: Mapped[datetime | None] = mapped_column(UTCDateTime)
    interval: Mapped[int | None] = mapped_column(BigInteger)
    interval_unit: Mapped[str | None] = mapped_column(String(16))
    catch_up: Mapped[bool] = mapped_column(Boolean)
    #: What a fixed-hour time a spring gap skips does: ``shift`` (run at the end of the gap)
    #: or ``skip`` (not that day). Hourly-or-faster schedules follow elapsed time instead.
    dst_gap: Mapped[str] = mapped_column(
        String(8), default=DEFAULT_DST_GAP, server_default=DEFAULT_DST_GAP
    )
    #: Which occurrence of a fixed-hour time an autumn fold repeats runs: ``first``,
    #: ``last`` or ``both`` (two distinct instants).
    dst_fold: Mapped[str] = mapped_column(
        String(8), default=DEFAULT_DST_FOLD, server_default=DEFAULT_DST_FOLD
    )
    enabled: Mapped[bool] = mapped_column(Boolean)
    #: What an occurrence does that falls due while another of this schedule runs: ``skip``
    #: (recorded ``skipped_overlap``), ``buffer_one`` (waits; at most one) or ``allow``.
    #: Read by the worker at each delivery, not part of the queued snapshot.
    overlap: Mapped[str] = mapped_column(String(16), server_default="skip")
    #: Seconds each occurrence may start after its grid point (None: none): the offset in
    #: ``[0, jitter)`` is derived from the key and the grid point (part of the snapshot).
    jitter: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    #: Occurrences at or before this instant are never counted as missed. Set when the
    #: schedule is created, enabled or resumed and whenever what or when it runs changes.
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Seconds a missed occurrence may still run late (``catch_up``) or a late delivery
    #: still start; None: the global ``catch_up_window``. Part of the queued snapshot.
    catch_up_window: Mapped[int | None] = mapped_column(Integer)
    #: No occurrence before this instant (None: no start). Part of the queued snapshot.
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: No occurrence after this instant; once past it the schedule has no job (None: no
    #: end). Part of the queued snapshot.
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When an operator paused the schedule (None: not paused). A paused schedule has no
    #: job; its occurrences are recorded ``paused``. Set by :meth:`pause`, cleared by
    #: :meth:`resume`; a schedule-file sync never changes it.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why it was paused (free text, shown by ``schedules list``).
    pause_reason: Mapped[str | None] = mapped_column(Text)
    #: Who owns the schedule: the label of the schedule file that created it (``postburner
    #: sync`` touches only its own label's schedules), or None: created from code.
    label: Mapped[str | None] = mapped_column(String(255))
    #: md5 of the cacheable attributes as JSONB text, set by a PostgreSQL trigger on every
    #: write (raw SQL included): the watchdog finds drift by comparing it with the executions'
    #: digest. Always NULL on SQLite, where the watchdog compares the columns themselves.
    config_digest: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    executions: Mapped[list[ScheduleExecution]] = relationship(
        back_populates="schedule", passive_deletes=True, order_by="ScheduleExecution.run_at"
    )

    def __init__(self, **kwargs: Any) -> None:
        fields = type(self).__mapper__.attrs.keys()
        for key in kwargs:
            if key not in fields:
                raise ScheduleValidationError(key, f"is not a Schedule field; fields: {fields}")
        for key, value in _SCHEDULE_DEFAULTS.items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("args", [])
        kwargs.setdefault("kwargs", {})
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        when = self.cron or f"every {self.interval} {self.interval_unit}"
        return f"<Schedule {self.name!r} {when} {self.timezone} enabled={self.enabled}>"

    def _fits(self, key: str, value: Any) -> Any:
        """``value`` once it is known to fit its column on every database."""
        return validation.fit_column(key, value, type(self).__table__.c[key])

    @validates("name")
    def _check_name(self, key: str, value: Any) -> str:
        return self._fits(key, validation.validate_name(value))  # type: ignore[no-any-return]

    @validates("job_class")
    def _check_job_class(self, key: str, value: Any) -> str:
        return self._fits(key, validation.validate_job_class(value))  # type: ignore[no-any-return]

    @validates("args")
    def _check_args(self, _key: str, value: Any) -> list[Any]:
        return validation.validate_args(value)

    @validates("kwargs")
    def _check_kwargs(self, _key: str, value: Any) -> dict[str, Any]:
        return validation.validate_kwargs(value)

    @validates("queue")
    def _check_queue(self, key: str, value: Any) -> str:
        from postburner_py.queue.beanstalk import validate_queue_name

        return self._fits(key, validate_queue_name(value))  # type: ignore[no-any-return]

    @validates("priority")
    def _check_priority(self, key: str, value: Any) -> int:
        return self._fits(key, validation.validate_priority(value))  # type: ignore[no-any-return]

    @validates("ttr")
    def _check_ttr(self, key: str, value: Any) -> int:
        ttr = validation.validate_positive_int(key, value, "seconds a worker may run the job")
        return self._fits(key, ttr)  # type: ignore[no-any-return]

    @validates("max_attempts")
    def _check_max_attempts(self, key: str, value: Any) -> int:
        attempts = validation.validate_positive_int(key, value, "1 means no retry")
        return self._fits(key, attempts)  # type: ignore[no-any-return]

    @validates("timeout")
    def _check_timeout(self, _key: str, value: Any) -> float | None:
        return validation.validate_timeout(value)

    @validates("no_retry_on")
    def _check_no_retry_on(self, _key: str, value: Any) -> list[str] | None:
        return validation.validate_no_retry_on(value)

    @validates("timezone")
    def _check_timezone(self, key: str, value: Any) -> str:
        timegrid.validate_timezone(value)
        return self._fits(key, str(value))  # type: ignore[no-any-return]

    @validates("cron")
    def _check_cron(self, key: str, value: Any) -> str | None:
        return None if value is None else self._fits(key, timegrid.validate_cron(value))

    @validates("dst_gap")
    def _check_dst_gap(self, _key: str, value: Any) -> str:
        return validate_dst_gap(value)

    @validates("dst_fold")
    def _check_dst_fold(self, _key: str, value: Any) -> str:
        return validate_dst_fold(value)

    @validates("anchor")
    def _check_anchor(self, _key: str, value: Any) -> datetime | None:
        if value is None:
            return None
        return validation.require_aware("anchor", value).astimezone(UTC)

    @validates("interval")
    def _check_interval(self, key: str, value: Any) -> int | None:
        if value is None:
            return None
        interval = validation.validate_positive_int(key, value, "a whole number of units")
        return self._fits(key, interval)  # type: ignore[no-any-return]

    @validates("interval_unit")
    def _check_interval_unit(self, key: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ScheduleValidationError(key, f"must be text, e.g. 'minutes', got {value!r}")
        return self._fits(key, value)  # type: ignore[no-any-return]

    @validates("catch_up_window")
    def _check_catch_up_window(self, key: str, value: Any) -> int | None:
        return self._fits(key, validation.validate_catch_up_window(value))  # type: ignore[no-any-return]

    @validates("starts_at", "ends_at", "paused_at")
    def _check_instant(self, key: str, value: Any) -> datetime | None:
        return validation.validate_optional_instant(key, value)

    @validates("pause_reason")
    def _check_pause_reason(self, key: str, value: Any) -> str | None:
        return self._fits(key, validation.validate_optional_text(key, value))  # type: ignore[no-any-return]

    @validates("label")
    def _check_label(self, key: str, value: Any) -> str | None:
        return self._fits(key, validation.validate_label(value))  # type: ignore[no-any-return]

    @validates("catch_up", "enabled")
    def _check_flag(self, key: str, value: Any) -> bool:
        return validation.validate_flag(key, value)

    @validates("overlap")
    def _check_overlap(self, _key: str, value: Any) -> str:
        return validation.validate_overlap(value)

    @validates("jitter")
    def _check_jitter(self, _key: str, value: Any) -> float | None:
        return validation.validate_jitter(value)

    @validates("description")
    def _check_description(self, key: str, value: Any) -> str | None:
        return self._fits(key, validation.validate_optional_text(key, value))  # type: ignore[no-any-return]

    def grid(self) -> TimeGrid:
        """The schedule's time grid, unbounded (:meth:`occurrence_grid` honours
        ``starts_at``/``ends_at``); raises ScheduleValidationError when the spec is incomplete."""
        return timegrid.make_grid(
            cron=self.cron,
            anchor=self.anchor,
            interval=self.interval,
            interval_unit=self.interval_unit,
            timezone=self.timezone,
            dst_gap=self.dst_gap,
            dst_fold=self.dst_fold,
        )

    def occurrence_grid(self) -> WindowedGrid:
        """The points the schedule fires at: its grid inside ``[starts_at, ends_at]``."""
        return WindowedGrid(self.grid(), self.starts_at, self.ends_at)

    def validate(self, now: datetime | None = None) -> None:
        """Check what single fields cannot: that ``name`` and ``job_class`` are given, the
        cron/interval combination, that ``ends_at`` is after ``starts_at``, and that the first
        occurrence after ``now`` (default: the owning Postburner's clock) and every later
        step can be put into Beanstalkd.

        Raises :class:`~postburner_py.errors.ScheduleValidationError` naming the field.
        """
        for required in ("name", "job_class"):
            if getattr(self, required) is None:
                raise ScheduleValidationError(required, "is required")
        grid = self.grid()
        if self.interval is not None and self.interval_unit is not None:
            validation.check_interval_step(self.interval, self.interval_unit)
        validation.check_run_window(self.starts_at, self.ends_at)
        now = now or postburner_clock(self)()
        field = "cron" if self.cron is not None else "interval"
        try:
            first = grid.next_after(now)
            windowed = self.occurrence_grid().next_after(now)
        except WindowEnded:
            return  # an ended schedule is valid; it simply has nothing to queue
        except ScheduleValidationError:
            raise
        except (ValueError, OverflowError):
            raise ScheduleValidationError(
                field, f"has no occurrence after {now.isoformat()} within years 1-9999"
            ) from None
        validation.check_delay(field, first, now)
        validation.check_delay("starts_at" if windowed != first else field, windowed, now)

    def next_run_at(self, after: datetime) -> datetime | None:
        """The first occurrence strictly after ``after`` (aware UTC) inside
        ``[starts_at, ends_at]``; None once the window has ended."""
        try:
            return self.occurrence_grid().next_after(after)
        except WindowEnded:
            return None

    def upcoming(self, count: int, after: datetime | None = None) -> list[datetime]:
        """The next ``count`` occurrences strictly after ``after`` (default: now), inside
        ``[starts_at, ends_at]`` (fewer once the window ends)."""
        return self.occurrence_grid().upcoming(count, after or postburner_clock(self)())

    def cacheable_attributes(self) -> dict[str, Any]:
        """The attributes whose change makes a queued execution stale (drift)."""
        return {name: getattr(self, name) for name in CACHEABLE_ATTRIBUTES}

    def snapshot(self) -> dict[str, Any]:
        """``cacheable_attributes()`` as stored JSON (datetimes as UTC ISO-8601)."""
        return normalize_snapshot(self.cacheable_attributes())  # type: ignore[no-any-return]

    def future_live(self, now: datetime | None = None) -> list[ScheduleExecution]:
        """Live (pending or scheduled) executions whose ``run_at`` is after ``now``."""
        session = object_session(self)
        if session is None or self.id is None:
            return []
        return list(session.scalars(future_live_query(self.id, now or postburner_clock(self)())))

    def reconcile(self, *, blocking: bool = True, now: datetime | None = None) -> bool:
        """Converge this schedule to exactly one live future execution, queued in Beanstalkd.

        Returns False only when ``blocking=False`` and another process holds the lock.
        """
        pb = postburner_of(self)
        return lifecycle().reconcile_schedule(pb, self.id, blocking=blocking, now=now)

    def trigger_now(self, *, overlap: str | None = None, now: datetime | None = None) -> Any:
        """Run the job once, now, outside the grid (trigger ``manual``), through the same gate,
        fencing and history; obeys the overlap policy unless ``overlap`` is given. Commits
        the caller's session first. Returns a ``Triggered`` (key, fire_time, queued: False
        when the same second's occurrence was queued already). See
        :mod:`postburner_py.schedules.run_control`."""
        _require_session(self).commit()
        return run_control().trigger_now(postburner_of(self), self.id, overlap=overlap, now=now)

    def backfill(
        self,
        start: datetime,
        end: datetime,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> Any:
        """Run every grid point in ``start <= t <= end`` with no dispatch-log row, oldest
        first, as trigger ``backfill``; returns a ``Backfill`` (``points``, ``queued``).
        Refuses a window in the future or of more than 1,000 points
        (:class:`~postburner_py.errors.ScheduleValidationError`, nothing written)."""
        _require_session(self).commit()
        return run_control().backfill(
            postburner_of(self), self.id, start, end, dry_run=dry_run, now=now
        )

    def retry(self, fire_time: datetime, *, now: datetime | None = None) -> Any:
        """Run the failed (or buried) occurrence at ``fire_time`` again as its next attempt
        (trigger ``retry``); raises :class:`~postburner_py.errors.PostburnerError` when it
        is not failed."""
        _require_session(self).commit()
        return run_control().retry_occurrence(postburner_of(self), self.id, fire_time, now=now)

    def enable(self, *, now: datetime | None = None) -> None:
        """Enable the schedule, commit, and queue its next occurrence."""
        self._set_enabled(True, now)

    def disable(self, *, now: datetime | None = None) -> None:
        """Disable the schedule, commit, and remove its queued occurrence."""
        self._set_enabled(False, now)

    def _set_enabled(self, enabled: bool, now: datetime | None) -> None:
        session = _require_session(self)
        self.enabled = enabled
        session.commit()
        self.reconcile(now=now)

    @property
    def is_paused(self) -> bool:
        """True while an operator has the schedule paused (:meth:`pause`)."""
        return self.paused_at is not None

    def pause(self, reason: str | None = None, *, now: datetime | None = None) -> bool:
        """Pause the schedule: commit the caller's session, record ``paused_at`` (``now``,
        default the owning Postburner's clock) and ``reason``, and remove its queued job.

        While paused the schedule has no job and the watchdog queues none; the occurrences
        that fall meanwhile are recorded ``paused`` in the dispatch log (on :meth:`resume`).
        Returns False, changing nothing, when it is already paused. A schedule-file sync
        never resumes it: pause is the operator's switch, ``enabled`` the definition's.
        """
        column = type(self).__table__.c["pause_reason"]
        validation.fit_column("reason", validation.validate_optional_text("reason", reason), column)
        session = _require_session(self)
        session.commit()
        paused = lifecycle().pause_schedule(postburner_of(self), self.id, reason=reason, now=now)
        session.refresh(self)
        return paused

    def resume(self, *, now: datetime | None = None) -> bool:
        """Resume a paused schedule: record its occurrences since the pause as ``paused``,
        then queue the first grid point after ``now`` (none of the paused ones is caught
        up). Returns False, changing nothing, when it is not paused."""
        session = _require_session(self)
        session.commit()
        resumed = lifecycle().resume_schedule(postburner_of(self), self.id, now=now)
        session.refresh(self)
        return resumed

    def skip_occurrence(self, run_at: datetime, *, now: datetime | None = None) -> bool:
        """Skip the future occurrence at ``run_at`` (any grid point, e.g. a holiday next
        month) so that it never starts; the schedule runs on at the points around it.

        ``run_at`` must be a point of the schedule's grid inside its window and after
        ``now``: otherwise :class:`~postburner_py.errors.OffGridError` (naming the nearest
        points before and after) or :class:`~postburner_py.errors.ScheduleValidationError`.
        Returns False, changing nothing, when the occurrence is already skipped, or a
        worker has already claimed it (it is running or ran).
        """
        validation.require_aware("run_at", run_at)
        session = _require_session(self)
        session.commit()
        pb = postburner_of(self)
        return lifecycle().skip_occurrence(pb, self.id, run_at.astimezone(UTC), now=now)


def future_live_query(schedule_id: int, now: datetime) -> Any:
    """SELECT of one schedule's live executions after ``now``, oldest first."""
    return (
        select(ScheduleExecution)
        .where(
            ScheduleExecution.schedule_id == schedule_id,
            ScheduleExecution.status.in_(LIVE_STATUSES),
            ScheduleExecution.run_at > now,
        )
        .order_by(ScheduleExecution.run_at)
    )


def _require_session(instance: Base) -> Session:
    session = object_session(instance)
    if session is None:
        raise PostburnerError(f"{type(instance).__name__} is not attached to a session")
    return session


class ScheduleExecution(Base):
    """One occurrence of a schedule, created ahead of time and pre-enqueued in Beanstalkd.

    Statuses: ``pending`` (created, not yet queued), ``scheduled`` (queued),
    ``skipped`` (an operator cancelled this one occurrence), ``superseded`` (replaced
    because the schedule changed or was disabled).
    """

    __tablename__ = "postburner_schedule_executions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int | None] = mapped_column(
        BigIntPK,
        ForeignKey(
            "postburner_schedules.id", ondelete="SET NULL", name="fk_postburner_executions_schedule"
        ),
    )
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    beanstalk_job_id: Mapped[int | None] = mapped_column(BigInteger)
    beanstalk_server_id: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(255))
    cached_schedule: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: md5 of ``cached_schedule`` as JSONB text (PostgreSQL trigger; NULL on SQLite).
    config_digest: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    schedule: Mapped[Schedule | None] = relationship(back_populates="executions")

    __table_args__ = (
        Index(
            "uq_postburner_schedule_executions_live_run_at",
            "schedule_id",
            "run_at",
            unique=True,
            postgresql_where=text(_LIVE_SQL),
            sqlite_where=text(_LIVE_SQL),
        ),
        Index("ix_postburner_schedule_executions_status_run_at", "status", "run_at"),
    )

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("status", PENDING)
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        return (
            f"<ScheduleExecution {self.id} schedule={self.schedule_id} "
            f"run_at={self.run_at.isoformat()} {self.status}>"
        )

    @property
    def is_live(self) -> bool:
        """Pending or scheduled: this occurrence may still run."""
        return self.status in LIVE_STATUSES

    @property
    def enqueued(self) -> bool:
        """True once a Beanstalkd job id and ``enqueued_at`` are recorded."""
        return self.beanstalk_job_id is not None and self.enqueued_at is not None

    def enqueue(self, *, now: datetime | None = None) -> None:
        """Queue this execution in Beanstalkd; idempotent (a queued one is left alone)."""
        pb, session = self._committed()
        lifecycle().enqueue_execution(pb, self.id, now=now or pb.clock())
        session.refresh(self)

    def skip(self, *, now: datetime | None = None) -> bool:
        """Skip this one occurrence; the schedule keeps running at the next grid point.

        Returns False (and changes nothing) when already skipped or superseded, or when
        the occurrence has already started.
        """
        pb, session = self._committed()
        skipped = lifecycle().skip_execution(pb, self.id, now=now)
        session.refresh(self)
        return skipped

    def supersede(self) -> bool:
        """Tear down the queued job and mark ``superseded``; False if already skipped/superseded."""
        pb, session = self._committed()
        superseded = lifecycle().supersede_execution(pb, self.id)
        session.refresh(self)
        return superseded

    def _committed(self) -> tuple[Postburner, Session]:
        """Commit the caller's session (so our own transactions never wait on it)."""
        session = _require_session(self)
        session.commit()
        return postburner_of(self), session

    def is_drifted(self, schedule: Schedule) -> bool:
        """True when the cached snapshot no longer matches ``schedule.cacheable_attributes()``."""
        current = normalize_snapshot(schedule.cacheable_attributes())
        return bool(current != normalize_snapshot(self.cached_schedule))

    def validate_next_execution(self, next_execution: ScheduleExecution) -> bool:
        """True when ``next_run_at`` is unset or equals ``next_execution.run_at`` to the second.

        Raises :class:`NextExecutionRunAtConflict` otherwise.
        """
        if self.next_run_at is None:
            return True
        if int(next_execution.run_at.timestamp()) == int(self.next_run_at.timestamp()):
            return True
        raise NextExecutionRunAtConflict(
            f"ScheduleExecution {self.id} has next_run_at {self.next_run_at.isoformat()} "
            f"but next execution has run_at {next_execution.run_at.isoformat()}"
        )


class Setting(Base):
    """A key/value row shared by every process on one database (e.g. the signing secret)."""

    __tablename__ = "postburner_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DelayedJob(Base):
    """A one-off job due at ``run_at``."""

    __tablename__ = "postburner_delayed_jobs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(255))
    job_class: Mapped[str] = mapped_column(String(255))
    args: Mapped[list[Any]] = mapped_column(JSONType)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONType)
    queue: Mapped[str] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(BigInteger)
    ttr: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[float | None] = mapped_column(Float)
    no_retry_on: Mapped[list[str] | None] = mapped_column(JSONType)
    #: The trace context of the span that enqueued the job (``postburner_py.tracing``).
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    beanstalk_job_id: Mapped[int | None] = mapped_column(BigInteger)
    beanstalk_server_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index(
            "uq_postburner_delayed_jobs_pending_job_id",
            "job_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_postburner_delayed_jobs_status_run_at", "status", "run_at"),
    )

    @property
    def occurrence_key(self) -> str:
        """The dispatch-log key of this job's single occurrence."""
        return one_off_key(self.job_id)

    def __repr__(self) -> str:
        when = self.run_at.isoformat()
        return f"<DelayedJob {self.job_id!r} {self.job_class} at {when} {self.status}>"


class WatchdogHeartbeat(Base):
    """One row per running watchdog: when it started, its last pass, and what that pass did."""

    __tablename__ = "postburner_watchdog_heartbeats"

    node: Mapped[str] = mapped_column(String(255), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_pass_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class WorkerHeartbeat(Base):
    """One row per running worker process, written once per heartbeat interval (never per
    job): who it is, what it serves, when it was last seen and how many jobs it ran.

    ``id`` is random per process start, so workers sharing a node id (replicas started from
    one environment file) never overwrite each other's row. A clean stop deletes the row;
    a crashed worker's row stops moving and expires (``postburner status`` shows it stale).
    """

    __tablename__ = "postburner_worker_heartbeats"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: The queue names this worker serves now (a worker started without ``--queue`` follows
    #: the queues that have schedules).
    queues: Mapped[list[str]] = mapped_column(JSONType)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    jobs_run: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_postburner_worker_heartbeats_last_seen_at", "last_seen_at"),)
