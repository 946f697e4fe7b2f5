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

import threading
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from postburner_py.clock import Clock, require_aware
from postburner_py.errors import ConfigurationError
from postburner_py.store.engine import (
    Executor,
    SessionFactory,
    utcnow,
)
from postburner_py.store.history_records import (
    COLUMNS,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_RETENTION,
    TERMINAL_COLUMNS,
    HistoryEntry,
    HistoryRecord,
    HistoryStatus,
    LostAttempt,
    _correct_start,
    _describe,
    _finish_unstored,
    _json_value,
    _milliseconds,
    _positive_retention,
    _record_id,
    _status,
    _terminal,
    check_open,
    entry_of,
    terminal_changes,
)
from postburner_py.store.registry import store_for

__all__ = [
    "COLUMNS",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_RETENTION",
    "TERMINAL_COLUMNS",
    "HistoryEntry",
    "HistoryRecord",
    "HistoryStatus",
    "HistoryStore",
    "LostAttempt",
    "check_open",
    "entry_of",
    "terminal_changes",
]


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
        trigger: str = "schedule",
        due_at: datetime | None = None,
    ) -> HistoryEntry:
        """The unstored entry :meth:`record_start` would write (checked, ``id`` None); the
        worker builds a batch of them and writes it with :meth:`insert_started`. ``due_at``
        (default ``run_at``) is what lateness is measured against (a jittered start)."""
        if attempt < 1:
            raise ValueError(f"attempt: must be at least 1, got {attempt!r}")
        started = self._now("started_at", started_at)
        due = None if run_at is None else require_aware("run_at", run_at)
        late_from = due if due_at is None else require_aware("due_at", due_at)
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
            queue_time_ms=None if late_from is None else _milliseconds(started - late_from),
            execution_time_ms=None,
            error_message=None,
            error_stack=None,
            results=None,
            expires_at=started + keep,
            trigger=trigger,
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
        schedule_name: str | None = None,
    ) -> list[HistoryEntry]:
        """Stored entries with ``from_ <= started_at < to``, newest ``started_at`` first.

        ``status`` is one of ``started``, ``completed``, ``failed``, ``partial_success``;
        ``schedule_name`` keeps the runs of one schedule.
        """
        since = None if from_ is None else require_aware("from_", from_)
        before = None if to is None else require_aware("to", to)
        wanted = None if status is None else _status(status)
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit!r}")
        return self._find(
            from_=since,
            to=before,
            task_identifier=task_identifier,
            status=wanted,
            limit=limit,
            schedule_name=schedule_name,
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
