"""The job history's rows and rules: its table, entries and the terminal transitions.

Pure of any store lookup, so both the stores (``store/sql/gate.py``) and
:class:`~postburner_py.store.history.HistoryStore` build on it.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from postburner_py.clock import require_aware
from postburner_py.errors import ConfigurationError
from postburner_py.store.engine import (
    Base,
    BigIntPK,
    JSONType,
    UTCDateTime,
)

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
    #: What asked for the occurrence: ``schedule``, ``manual``, ``backfill`` or ``retry``.
    trigger: Mapped[str] = mapped_column(String(16), default="schedule", server_default="schedule")

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
    #: What asked for the occurrence (see the dispatch log's ``Trigger``).
    trigger: str = "schedule"


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
    due_at: datetime | None = None,
) -> dict[str, Any]:
    """The column values that close ``started`` as ``status`` (a
    :class:`~postburner_py.store.contract.gate.Closing`'s ``changes``): the real start
    ``began_at`` corrects the start instant and the lateness, as the ``started_at`` argument
    of the terminal records does; an ``error`` is kept as message and formatted stack, as
    :meth:`record_failure` keeps it. ``due_at`` (default: the row's ``run_at``) is the
    instant lateness is measured against (a jittered occurrence's start instant)."""
    changes = _terminal(worker_id, execution_time_ms, require_aware("finished_at", finished_at))
    changes["status"] = status
    changes["started_at"] = require_aware("began_at", began_at)
    due = started.run_at if due_at is None else due_at
    changes["queue_time_ms"] = None if due is None else _milliseconds(changes["started_at"] - due)
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
