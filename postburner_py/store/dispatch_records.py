"""The dispatch log's rows and rules: its table, entries, claims and the state machine.

Pure of any store lookup, so both the stores (``store/sql/gate.py``) and the registries
(:mod:`postburner_py.store.dispatch_log`) build on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from postburner_py.clock import Clock, require_aware
from postburner_py.store.engine import (
    Base,
    BigIntPK,
    UTCDateTime,
)


class DispatchStatus(StrEnum):
    """Status of a dispatch row."""

    DISPATCHED = "dispatched"
    COMPLETED = "completed"
    FAILED = "failed"
    MISSED = "missed"
    #: Not run: an earlier occurrence of the same schedule was still running (overlap policy).
    SKIPPED_OVERLAP = "skipped_overlap"
    #: Not run: the schedule was paused when the occurrence fell due.
    PAUSED = "paused"
    #: Not run: an operator skipped it (or stopped the schedule before its start instant).
    SKIPPED = "skipped"


class Trigger(StrEnum):
    """What asked for an occurrence: its schedule's grid, an operator's run now, a backfill
    of a past window, or a retry of a failed occurrence."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    BACKFILL = "backfill"
    RETRY = "retry"


class Overlap(StrEnum):
    """A schedule's overlap policy: what an occurrence does that falls due while another
    occurrence of the same schedule is running."""

    #: Not run, recorded ``skipped_overlap``.
    SKIP = "skip"
    #: Waits and runs as soon as the running one finishes; at most one waits.
    BUFFER_ONE = "buffer_one"
    #: Runs anyway.
    ALLOW = "allow"
    #: Waits however many others wait (a backfill's occurrences, asked for explicitly).
    WAIT = "wait"


#: Seconds a waiting occurrence's job is held back before it looks at the running one again.
WAIT_POLL_SECONDS = 1
#: How long a waiting occurrence's row holds its place without its job coming back.
WAIT_LEASE_SECONDS = 30


#: Rows that record an occurrence which never ran (attempt 0, no lease): not a claim.
NOT_RUN_STATUSES = (
    DispatchStatus.MISSED,
    DispatchStatus.PAUSED,
    DispatchStatus.SKIPPED,
    DispatchStatus.SKIPPED_OVERLAP,
)


class ClaimOutcome(StrEnum):
    """What :meth:`DispatchRegistry.claim` decided."""

    #: First delivery: the row was inserted, this is attempt 1. Run the job.
    ACQUIRED = "acquired"
    #: The previous attempt's lease expired and attempts remain: this is the next attempt. Run it.
    TAKEN_OVER = "taken_over"
    #: Another attempt holds a live lease. Do not run.
    BUSY = "busy"
    #: The occurrence is already completed, failed or missed. Do not run.
    FINISHED = "finished"
    #: The lease expired but every attempt was used; the row was marked failed. Do not run.
    EXHAUSTED = "exhausted"
    #: Another occurrence of the schedule is running: recorded ``skipped_overlap``. Do not run.
    OVERLAP = "overlap"
    #: Another occurrence of the schedule is running and this one waits for it (``buffer_one``,
    #: a backfill, a retry): look again in :data:`WAIT_POLL_SECONDS`. Do not run yet.
    WAITING = "waiting"


_RUNNABLE = frozenset({ClaimOutcome.ACQUIRED, ClaimOutcome.TAKEN_OVER})
_STATUS_SQL = (
    "status IN ('dispatched', 'completed', 'failed', 'missed', 'skipped_overlap', 'paused', "
    "'skipped')"
)
#: A ``dispatched`` row of attempt 0 is an occurrence waiting for the running one (buffer_one).
_WAITING_SQL = "status = 'dispatched' AND attempt = 0"
_RUNNING_SQL = "running_key IS NOT NULL"


class DispatchRecord(Base):
    """One occurrence ``(key, fire_time)`` and the state of its latest attempt."""

    __tablename__ = "postburner_dispatches"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    fire_time: Mapped[datetime] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    node_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: What asked for the occurrence (:class:`Trigger`).
    trigger: Mapped[str] = mapped_column(
        String(16), default=Trigger.SCHEDULE, server_default=Trigger.SCHEDULE.value
    )
    #: The schedule's key while this attempt holds its running slot (overlap ``skip`` and
    #: ``buffer_one``): unique, so two occurrences of one schedule never hold it at once.
    running_key: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        UniqueConstraint("key", "fire_time", name="uq_postburner_dispatches_key_fire_time"),
        CheckConstraint(_STATUS_SQL, name="status"),
        Index(
            "uq_postburner_dispatches_running_key",
            "running_key",
            unique=True,
            postgresql_where=text(_RUNNING_SQL),
            sqlite_where=text(_RUNNING_SQL),
        ),
        Index(
            "uq_postburner_dispatches_waiting_key",
            "key",
            unique=True,
            postgresql_where=text(_WAITING_SQL),
            sqlite_where=text(_WAITING_SQL),
        ),
        Index("ix_postburner_dispatches_node_id_fire_time", "node_id", "fire_time"),
        Index("ix_postburner_dispatches_status_fire_time", "status", "fire_time"),
        Index("ix_postburner_dispatches_fire_time", "fire_time"),
    )


@dataclass(frozen=True, slots=True)
class DispatchEntry:
    """A dispatch row as read. ``dispatched_at`` and ``node_id`` describe the latest attempt."""

    key: str
    fire_time: datetime
    dispatched_at: datetime
    node_id: str
    status: DispatchStatus
    attempt: int
    lease_expires_at: datetime | None
    updated_at: datetime
    trigger: str = Trigger.SCHEDULE
    running_key: str | None = None

    @property
    def waiting(self) -> bool:
        """True for an occurrence waiting for the running one (``buffer_one``), not started."""
        return self.status is DispatchStatus.DISPATCHED and self.attempt == 0

    def lease_live(self, now: datetime) -> bool:
        """True while a ``dispatched`` attempt still holds its lease at ``now``."""
        if self.status is not DispatchStatus.DISPATCHED:
            return False
        return self.lease_expires_at is None or self.lease_expires_at > now


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer of :meth:`DispatchRegistry.claim`: the outcome and the row it left behind."""

    outcome: ClaimOutcome
    entry: DispatchEntry
    #: The row as it was before this claim changed it: the lost attempt of a ``taken_over``
    #: or ``exhausted`` claim (None for the other outcomes).
    previous: DispatchEntry | None = None

    @property
    def attempt(self) -> int:
        """The attempt number of the row (the caller's own attempt when it may run)."""
        return self.entry.attempt

    @property
    def should_run(self) -> bool:
        """True for ``acquired`` and ``taken_over``: this delivery owns the occurrence."""
        return self.outcome in _RUNNABLE


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One claim of a batch (:meth:`SqlDispatchRegistry.claim_many_in`), made as ``node_id``."""

    key: str
    fire_time: datetime
    node_id: str
    lease_seconds: float
    max_attempts: int
    now: datetime
    #: The occurrence's overlap policy (:class:`Overlap`); ``allow`` decides as before.
    overlap: str = Overlap.ALLOW
    #: What asked for the occurrence (:class:`Trigger`), written on a fresh row.
    trigger: str = Trigger.SCHEDULE


@dataclass(frozen=True, slots=True)
class FinishRequest:
    """One attempt of a batch to close (:func:`finish_many_in`)."""

    key: str
    fire_time: datetime
    attempt: int
    now: datetime
    failed: bool = False


# --- the state machine, shared by both backends --------------------------------------------


def decide(current: DispatchEntry, *, now: datetime, max_attempts: int) -> ClaimOutcome:
    """What a claim on an existing row amounts to."""
    if current.status is not DispatchStatus.DISPATCHED:
        return ClaimOutcome.FINISHED
    if current.lease_live(now):
        return ClaimOutcome.BUSY
    if current.attempt < max_attempts or _retry_requested(current):
        return ClaimOutcome.TAKEN_OVER
    return ClaimOutcome.EXHAUSTED


def claim_changes(
    outcome: ClaimOutcome,
    current: DispatchEntry,
    node_id: str,
    now: datetime,
    lease_until: datetime,
    *,
    running_key: str | None = None,
) -> dict[str, Any] | None:
    """The column changes an outcome makes to the row; None when it leaves the row alone.
    A take-over holds the schedule's running slot as ``running_key`` (None: no slot)."""
    if outcome is ClaimOutcome.TAKEN_OVER:
        return {
            "attempt": current.attempt + 1,
            "node_id": node_id,
            "dispatched_at": now,
            "lease_expires_at": lease_until,
            "updated_at": now,
            "running_key": running_key,
        }
    if outcome is ClaimOutcome.EXHAUSTED:
        return _final_changes(DispatchStatus.FAILED, now)
    return None


def fresh_row(
    ident: tuple[str, datetime],
    node_id: str,
    now: datetime,
    lease_until: datetime,
    *,
    overlap: str = Overlap.ALLOW,
    trigger: str = Trigger.SCHEDULE,
) -> dict[str, Any]:
    """A first attempt's row; it holds the schedule's running slot unless overlap is allowed."""
    return {
        "key": ident[0],
        "fire_time": ident[1],
        "dispatched_at": now,
        "node_id": node_id,
        "status": DispatchStatus.DISPATCHED,
        "attempt": 1,
        "lease_expires_at": lease_until,
        "updated_at": now,
        "trigger": str(trigger),
        "running_key": holds_slot(ident[0], overlap),
    }


def holds_slot(key: str, overlap: str) -> str | None:
    """The ``running_key`` an attempt under ``overlap`` holds (None: it takes no slot)."""
    return None if overlap == Overlap.ALLOW else key


def not_run_row(
    ident: tuple[str, datetime], node_id: str, now: datetime, status: DispatchStatus, trigger: str
) -> dict[str, Any]:
    """The row of an occurrence that was not run (attempt 0, no lease): ``skipped_overlap``,
    ``paused`` or ``skipped``."""
    return {
        "key": ident[0],
        "fire_time": ident[1],
        "dispatched_at": now,
        "node_id": node_id,
        "status": status,
        "attempt": 0,
        "lease_expires_at": None,
        "updated_at": now,
        "trigger": str(trigger),
        "running_key": None,
    }


def waiting_row(
    ident: tuple[str, datetime], node_id: str, now: datetime, trigger: str
) -> dict[str, Any]:
    """The row of an occurrence waiting for the running one (``buffer_one``): ``dispatched``
    attempt 0 without a slot, holding its place for :data:`WAIT_LEASE_SECONDS`."""
    row = not_run_row(ident, node_id, now, DispatchStatus.DISPATCHED, trigger)
    row["lease_expires_at"] = now + timedelta(seconds=WAIT_LEASE_SECONDS)
    return row


def missed_rows(
    occurrences: Iterable[tuple[str, datetime]],
    node_id: str,
    now: datetime,
    status: DispatchStatus = DispatchStatus.MISSED,
) -> list[dict[str, Any]]:
    """The not-run dispatch rows (attempt 0, no lease; ``status`` one of
    :data:`NOT_RUN_STATUSES`, default ``missed``) of ``(key, fire_time)`` pairs, each
    occurrence once."""
    if status not in NOT_RUN_STATUSES:
        raise ValueError(f"status: {status!r} is not one of {', '.join(NOT_RUN_STATUSES)}")
    unique = dict.fromkeys((key, require_aware("fire_times", at)) for key, at in occurrences)
    return [
        {
            "key": key,
            "fire_time": fire_time,
            "dispatched_at": now,
            "node_id": node_id,
            "status": status,
            "attempt": 0,
            "lease_expires_at": None,
            "updated_at": now,
            "trigger": Trigger.SCHEDULE.value,
            "running_key": None,
        }
        for key, fire_time in unique
    ]


def _final_changes(status: DispatchStatus, now: datetime) -> dict[str, Any]:
    return {
        "status": status,
        "lease_expires_at": None,
        "updated_at": require_aware("now", now),
        "running_key": None,
    }


def _owned_by(entry: DispatchEntry, attempt: int) -> bool:
    return entry.status is DispatchStatus.DISPATCHED and entry.attempt == attempt


# A claim and a renewal set the lease past updated_at; release_for_retry sets both to one
# instant. So a released lease (the attempt failed, a retry may take over) is told apart
# from one that merely expired (its holder could not reach the database for a while).
def _released(entry: DispatchEntry) -> bool:
    return entry.lease_expires_at is not None and entry.lease_expires_at <= entry.updated_at


def _retry_requested(entry: DispatchEntry) -> bool:
    """An operator's retry reopened the row (released, marked ``retry``): one more attempt,
    whatever ``max_attempts`` says."""
    return entry.trigger == Trigger.RETRY and _released(entry)


def retry_changes(now: datetime) -> dict[str, Any]:
    """Reopen a failed occurrence for an operator's retry: ``dispatched`` with its lease
    released at ``now``, so the next delivery takes it over as ``attempt + 1``."""
    return {
        "status": DispatchStatus.DISPATCHED,
        "lease_expires_at": now,
        "updated_at": now,
        "trigger": Trigger.RETRY.value,
        "running_key": None,
    }


def entry_of(row: Any) -> DispatchEntry:
    """A :class:`DispatchEntry` from an ORM object or a Core row (same attribute names)."""
    return DispatchEntry(
        key=row.key,
        fire_time=row.fire_time,
        dispatched_at=row.dispatched_at,
        node_id=row.node_id,
        status=DispatchStatus(row.status),
        attempt=row.attempt,
        lease_expires_at=row.lease_expires_at,
        updated_at=row.updated_at,
        trigger=row.trigger,
        running_key=row.running_key,
    )


# --- argument checks ----------------------------------------------------------------------


def _lease(lease_seconds: float) -> timedelta:
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds: must be positive, got {lease_seconds!r}")
    return timedelta(seconds=lease_seconds)


def _check_max_attempts(max_attempts: int) -> int:
    if max_attempts < 1:
        raise ValueError(f"max_attempts: must be at least 1, got {max_attempts!r}")
    return max_attempts


def _status(value: str) -> DispatchStatus:
    try:
        return DispatchStatus(value)
    except ValueError:
        allowed = ", ".join(status.value for status in DispatchStatus)
        raise ValueError(f"status: {value!r} is not one of {allowed}") from None


def claim_arguments(
    key: str, fire_time: datetime, lease_seconds: float, max_attempts: int, now: datetime
) -> tuple[tuple[str, datetime], datetime, datetime]:
    """Checked claim arguments: the row identity, ``now`` in UTC, and the lease's end."""
    _check_max_attempts(max_attempts)
    now = require_aware("now", now)
    return (key, require_aware("fire_time", fire_time)), now, now + _lease(lease_seconds)


def _cleanup_arguments(
    recovery_window: float, now: datetime | None, clock: Clock
) -> tuple[datetime, datetime]:
    if recovery_window < 0:
        raise ValueError(f"recovery_window: must not be negative, got {recovery_window!r}")
    now = require_aware("now", clock() if now is None else now)
    return now, now - timedelta(seconds=recovery_window)
