"""Job execution history: rows in ``postburner_job_history`` and a ring buffer of recent runs.

One :class:`HistoryStore` per system, shared by the components that record or read history::

    store = HistoryStore(pb.session_factory, buffer_size=500)

    started = store.record_start(job_id=str(execution.id), task_identifier="app.jobs.Report",
                                 worker_id="worker-1", correlation_id=occurrence_key,
                                 run_at=execution.run_at)
    ...  # the job runs
    store.record_completion(started, worker_id="worker-1", execution_time_ms=elapsed_ms)

    store.get_by_job_id(str(execution.id))         # database, newest first
    store.query(status="failed", limit=50)          # database
    store.recent(20)                                # ring buffer, no database

Ring buffer: :meth:`~HistoryStore.record_start` writes to the database only; the terminal
records (:meth:`~HistoryStore.record_completion`, :meth:`~HistoryStore.record_failure`,
:meth:`~HistoryStore.record_partial_success`) update the database row and push the terminal
entry into the buffer; :meth:`~HistoryStore.observe` pushes into the buffer only.

Identity: each ``record_start`` creates its own row, one per attempt, and terminal records name
that row by the :class:`HistoryEntry` it returned (or its ``id``, the primary key). A job id is
not enough: retries of one job share it. Without a database the store keeps the buffer only:
``record_start`` returns an entry without ``id`` and the terminal records complete that entry.
"""

from __future__ import annotations

import json
import threading
import traceback
from collections import deque
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from postburner_py.clock import Clock, require_aware
from postburner_py.errors import ConfigurationError
from postburner_py.store.engine import (
    Base,
    BigIntPK,
    Executor,
    JSONType,
    SessionFactory,
    UTCDateTime,
    utcnow,
)
from postburner_py.store.registry import store_for

DEFAULT_RETENTION = timedelta(days=30)
DEFAULT_BUFFER_SIZE = 1000


class HistoryStatus(StrEnum):
    """Status of a history row."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL_SUCCESS = "partial_success"


_STATUS_SQL = "status IN ('started', 'completed', 'failed', 'partial_success')"


class HistoryRecord(Base):
    """One attempt at running a job: when it was due, when it ran, how it ended."""

    __tablename__ = "postburner_job_history"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(255))
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    task_identifier: Mapped[str] = mapped_column(String(255))
    schedule_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    worker_id: Mapped[str] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_time_ms: Mapped[float | None] = mapped_column(Float)
    execution_time_ms: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_stack: Mapped[str | None] = mapped_column(Text)
    results: Mapped[Any | None] = mapped_column(JSONType)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_STATUS_SQL, name="status"),
        Index("ix_postburner_job_history_job_id_started_at", "job_id", "started_at"),
        Index("ix_postburner_job_history_correlation_id", "correlation_id"),
        Index("ix_postburner_job_history_status_started_at", "status", "started_at"),
        Index(
            "ix_postburner_job_history_task_identifier_started_at",
            "task_identifier",
            "started_at",
        ),
        Index("ix_postburner_job_history_started_at", "started_at"),
        Index("ix_postburner_job_history_expires_at", "expires_at"),
    )


@dataclass(frozen=True)
class HistoryEntry:
    """A history row as read; ``id`` is None for entries that were never stored."""

    id: int | None
    job_id: str
    correlation_id: str | None
    task_identifier: str
    schedule_name: str | None
    status: HistoryStatus
    worker_id: str
    attempt: int
    run_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    queue_time_ms: float | None
    execution_time_ms: float | None
    error_message: str | None
    error_stack: str | None
    results: Any
    expires_at: datetime


COLUMNS = tuple(field.name for field in fields(HistoryEntry) if field.name != "id")
TERMINAL_COLUMNS = (
    "status",
    "worker_id",
    "finished_at",
    "execution_time_ms",
    "started_at",
    "queue_time_ms",
    "results",
    "error_message",
    "error_stack",
)


@dataclass(frozen=True, slots=True)
class LostAttempt:
    """Attempts of one occurrence whose worker was lost (its lease expired and a delivery
    took over): every ``started`` row of ``correlation_id`` up to ``attempt`` is closed."""

    correlation_id: str
    attempt: int
    finished_at: datetime
    error_message: str


class HistoryStore:
    """Job history in the database plus a thread-safe ring buffer of recent terminal entries.

    ``session_factory`` may be None: the store then keeps the ring buffer only, database
    queries raise :class:`~postburner_py.errors.ConfigurationError` and :meth:`expire`
    deletes nothing.
    """

    def __init__(
        self,
        session_factory: SessionFactory | None,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Clock = utcnow,
    ) -> None:
        if buffer_size < 0:
            raise ConfigurationError(f"buffer_size: must not be negative, got {buffer_size!r}")
        self._session_factory = session_factory
        self._retention = _positive_retention(retention)
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: deque[HistoryEntry] = deque(maxlen=buffer_size)

    def record_start(
        self,
        *,
        job_id: str,
        task_identifier: str,
        worker_id: str,
        correlation_id: str | None = None,
        attempt: int = 1,
        run_at: datetime | None = None,
        schedule_name: str | None = None,
        started_at: datetime | None = None,
        retention: timedelta | None = None,
        session: Executor | None = None,
    ) -> HistoryEntry:
        """Write the start of an attempt to the database (not to the buffer); return its entry.

        ``run_at`` is when the run was due: ``queue_time_ms`` is the lateness,
        ``started_at - run_at``. The row expires ``retention`` (default: the store's) after
        ``started_at``. With ``session`` the row is written inside that session's open
        transaction and the caller commits (the worker writes it with its claim).
        """
        entry = self.start_entry(
            job_id=job_id,
            task_identifier=task_identifier,
            worker_id=worker_id,
            correlation_id=correlation_id,
            attempt=attempt,
            run_at=run_at,
            schedule_name=schedule_name,
            started_at=started_at,
            retention=retention,
        )
        if session is None and self._session_factory is None:
            return entry
        return self._insert(entry, session)

    def start_entry(
        self,
        *,
        job_id: str,
        task_identifier: str,
        worker_id: str,
        correlation_id: str | None = None,
        attempt: int = 1,
        run_at: datetime | None = None,
        schedule_name: str | None = None,
        started_at: datetime | None = None,
        retention: timedelta | None = None,
    ) -> HistoryEntry:
        """The unstored entry :meth:`record_start` would write (checked, ``id`` None); the
        worker builds a batch of them and writes it with :meth:`insert_started`."""
        if attempt < 1:
            raise ValueError(f"attempt: must be at least 1, got {attempt!r}")
        started = self._now("started_at", started_at)
        due = None if run_at is None else require_aware("run_at", run_at)
        keep = self._retention if retention is None else _positive_retention(retention)
        return HistoryEntry(
            id=None,
            job_id=job_id,
            correlation_id=correlation_id,
            task_identifier=task_identifier,
            schedule_name=schedule_name,
            status=HistoryStatus.STARTED,
            worker_id=worker_id,
            attempt=attempt,
            run_at=due,
            started_at=started,
            finished_at=None,
            queue_time_ms=None if due is None else _milliseconds(started - due),
            execution_time_ms=None,
            error_message=None,
            error_stack=None,
            results=None,
            expires_at=started + keep,
        )

    def insert_started(self, session: Executor, entries: list[HistoryEntry]) -> list[HistoryEntry]:
        """Write start entries (from :meth:`start_entry`) in the caller's transaction with one
        multi-row INSERT; the entries with their ids, in the same order."""
        if not entries:
            return []
        return store_for(session).insert_started(session, entries)

    def record_completion(
        self,
        record: HistoryEntry | int,
        *,
        worker_id: str,
        execution_time_ms: float,
        correlation_id: str | None = None,
        finished_at: datetime | None = None,
        session: Executor | None = None,
        started_at: datetime | None = None,
    ) -> HistoryEntry:
        """Mark the started ``record`` completed in the database and push it to the buffer.

        ``record`` is the entry :meth:`record_start` returned, or its ``id``. A
        ``correlation_id`` fills in the row's when it had none and must match it otherwise.
        With ``session`` the update joins that session's transaction (the caller commits).
        ``started_at`` corrects the start instant (and ``queue_time_ms``) when the attempt
        really began later than the start record said; the three terminal records take it.
        """
        changes = _terminal(worker_id, execution_time_ms, self._now("finished_at", finished_at))
        _correct_start(changes, record, started_at)
        return self._finish(record, HistoryStatus.COMPLETED, changes, correlation_id, session)

    def record_failure(
        self,
        record: HistoryEntry | int,
        *,
        worker_id: str,
        execution_time_ms: float,
        error: BaseException | str,
        correlation_id: str | None = None,
        finished_at: datetime | None = None,
        session: Executor | None = None,
        started_at: datetime | None = None,
    ) -> HistoryEntry:
        """Mark ``record`` failed; an exception's message and formatted stack are kept."""
        changes = _terminal(worker_id, execution_time_ms, self._now("finished_at", finished_at))
        _correct_start(changes, record, started_at)
        changes["error_message"], changes["error_stack"] = _describe(error)
        return self._finish(record, HistoryStatus.FAILED, changes, correlation_id, session)

    def record_partial_success(
        self,
        record: HistoryEntry | int,
        *,
        worker_id: str,
        execution_time_ms: float,
        results: Any,
        correlation_id: str | None = None,
        finished_at: datetime | None = None,
        session: Executor | None = None,
        started_at: datetime | None = None,
    ) -> HistoryEntry:
        """Mark ``record`` partially successful with JSON-serializable ``results``."""
        changes = _terminal(worker_id, execution_time_ms, self._now("finished_at", finished_at))
        _correct_start(changes, record, started_at)
        changes["results"] = _json_value(results)
        return self._finish(record, HistoryStatus.PARTIAL_SUCCESS, changes, correlation_id, session)

    def get_by_job_id(self, job_id: str) -> list[HistoryEntry]:
        """Every stored attempt of ``job_id``, newest first."""
        return self._find(job_id=job_id)

    def get_by_correlation_id(self, correlation_id: str) -> list[HistoryEntry]:
        """Every stored attempt of one occurrence, newest first."""
        return self._find(correlation_id=correlation_id)

    def query(
        self,
        from_: datetime | None = None,
        to: datetime | None = None,
        task_identifier: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]:
        """Stored entries with ``from_ <= started_at < to``, newest ``started_at`` first.

        ``status`` is one of ``started``, ``completed``, ``failed``, ``partial_success``.
        """
        since = None if from_ is None else require_aware("from_", from_)
        before = None if to is None else require_aware("to", to)
        wanted = None if status is None else _status(status)
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit!r}")
        return self._find(
            from_=since, to=before, task_identifier=task_identifier, status=wanted, limit=limit
        )

    def recent(self, n: int | None = None) -> list[HistoryEntry]:
        """Entries of the ring buffer in insertion order; with ``n``, the last ``n``."""
        if n is not None and n < 0:
            raise ValueError(f"n: must not be negative, got {n!r}")
        with self._lock:
            entries = list(self._buffer)
        if n is None:
            return entries
        return entries[len(entries) - n :] if n < len(entries) else entries

    def observe(self, entry: HistoryEntry) -> None:
        """Push ``entry`` into the ring buffer, without touching the database."""
        with self._lock:
            self._buffer.append(entry)

    def expire(self, *, now: datetime | None = None) -> int:
        """Delete stored entries whose ``expires_at`` has passed; return how many."""
        if self._session_factory is None:
            return 0
        now = self._now("now", now)
        with self._session_factory() as session, session.begin():
            return store_for(session).expire_history(session, now=now)

    def _insert(self, entry: HistoryEntry, session: Executor | None) -> HistoryEntry:
        if session is not None:
            return self.insert_started(session, [entry])[0]
        with self._database() as own, own.begin():
            return self.insert_started(own, [entry])[0]

    def _finish(
        self,
        record: HistoryEntry | int,
        status: HistoryStatus,
        changes: dict[str, Any],
        correlation_id: str | None,
        session: Executor | None = None,
    ) -> HistoryEntry:
        changes["status"] = status
        if session is None and self._session_factory is None:
            entry = _finish_unstored(record, changes, correlation_id)
        elif session is not None:
            entry = store_for(session).finish_history(
                session, _record_id(record), changes, correlation_id
            )
        else:
            with self._database() as own, own.begin():
                entry = store_for(own).finish_history(
                    own, _record_id(record), changes, correlation_id
                )
        self.observe(entry)
        return entry

    def _find(self, **criteria: Any) -> list[HistoryEntry]:
        with self._database() as session:
            return store_for(session).find_history(session, **criteria)

    def _database(self) -> Session:
        if self._session_factory is None:
            raise ConfigurationError(
                "this HistoryStore has no database (session_factory=None): only recent() "
                "and observe() are available"
            )
        return self._session_factory()

    def _now(self, name: str, value: datetime | None) -> datetime:
        return require_aware(name, self._clock() if value is None else value)


def _correct_start(
    changes: dict[str, Any], record: HistoryEntry | int, started_at: datetime | None
) -> None:
    if started_at is None:
        return
    changes["started_at"] = require_aware("started_at", started_at)
    if isinstance(record, HistoryEntry) and record.run_at is not None:
        changes["queue_time_ms"] = _milliseconds(changes["started_at"] - record.run_at)


def _finish_unstored(
    record: HistoryEntry | int, changes: dict[str, Any], correlation_id: str | None
) -> HistoryEntry:
    if not isinstance(record, HistoryEntry):
        raise ConfigurationError(
            "record: a history id needs a database; without one pass the HistoryEntry "
            "that record_start returned"
        )
    check_open(record.id, record.status, record.correlation_id, correlation_id)
    if correlation_id is not None:
        changes["correlation_id"] = correlation_id
    return replace(record, **changes)


def _record_id(record: HistoryEntry | int) -> int:
    if isinstance(record, int):
        return record
    if record.id is None:
        raise ValueError("record: this HistoryEntry was never stored, it has no id")
    return record.id


def check_open(
    record_id: int | None, status: str, stored_correlation: str | None, given: str | None
) -> None:
    """Refuse a second terminal record and a correlation id that contradicts the row's."""
    if status != HistoryStatus.STARTED:
        raise ValueError(f"record: history row {record_id} is already {status}")
    if given is not None and stored_correlation not in (None, given):
        raise ValueError(
            f"correlation_id: {given!r} does not match {stored_correlation!r} "
            f"of history row {record_id}"
        )


def _terminal(worker_id: str, execution_time_ms: float, finished_at: datetime) -> dict[str, Any]:
    if not execution_time_ms >= 0:
        raise ValueError(f"execution_time_ms: must not be negative, got {execution_time_ms!r}")
    return {
        "worker_id": worker_id,
        "execution_time_ms": float(execution_time_ms),
        "finished_at": finished_at,
    }


def terminal_changes(
    status: HistoryStatus,
    *,
    started: HistoryEntry,
    worker_id: str,
    execution_time_ms: float,
    finished_at: datetime,
    began_at: datetime,
    results: Any = None,
    error: BaseException | str | None = None,
) -> dict[str, Any]:
    """The column values that close ``started`` as ``status`` (a
    :class:`~postburner_py.store.contract.gate.Closing`'s ``changes``): the real start
    ``began_at`` corrects the start instant and the lateness, as the ``started_at`` argument
    of the terminal records does; an ``error`` is kept as message and formatted stack, as
    :meth:`record_failure` keeps it."""
    changes = _terminal(worker_id, execution_time_ms, require_aware("finished_at", finished_at))
    changes["status"] = status
    changes["started_at"] = require_aware("began_at", began_at)
    changes["queue_time_ms"] = (
        None if started.run_at is None else _milliseconds(changes["started_at"] - started.run_at)
    )
    changes["results"] = None if results is None else _json_value(results)
    changes["error_message"], changes["error_stack"] = (
        (None, None) if error is None else _describe(error)
    )
    return changes


def _describe(error: BaseException | str) -> tuple[str, str | None]:
    """The message and, for an exception, the formatted stack of ``error``."""
    if isinstance(error, str):
        return error, None
    name = type(error).__qualname__
    text = str(error)
    message = f"{name}: {text}" if text else name
    return message, "".join(traceback.format_exception(error))


def _json_value(results: Any) -> Any:
    try:
        json.dumps(results, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"results: not JSON-serializable ({error})") from None
    return results


def entry_of(row: Any) -> HistoryEntry:
    """A :class:`HistoryEntry` from an ORM object or a Core row (same attribute names)."""
    values = {name: getattr(row, name) for name in COLUMNS}
    values["status"] = HistoryStatus(row.status)
    return HistoryEntry(id=row.id, **values)


def _status(value: str) -> HistoryStatus:
    try:
        return HistoryStatus(value)
    except ValueError:
        allowed = ", ".join(status.value for status in HistoryStatus)
        raise ValueError(f"status: {value!r} is not one of {allowed}") from None


def _positive_retention(retention: timedelta) -> timedelta:
    if retention <= timedelta(0):
        raise ConfigurationError(f"retention: must be positive, got {retention!r}")
    return retention


def _milliseconds(delta: timedelta) -> float:
    return delta / timedelta(milliseconds=1)
