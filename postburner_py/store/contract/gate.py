"""The gate facet of the storage seam: admission, settlement, leases, dispatch log, history.

The guarantees these contracts carry (``docs/guarantees.md``):

* **one claim**: never two ``dispatched`` attempts, and never two ``started`` history rows of
  one attempt, for one occurrence ``(key, fire_time)``; a claim is durable before its job runs;
* **fencing**: a delivery whose row is gone, no longer live, or live for another ``run_at``
  writes nothing;
* **owned writes**: an attempt's lease, outcome or release is written only while that attempt
  owns the row (``dispatched`` as that attempt number); a taken-over attempt writes nothing;
* **a released lease is never revived**: after ``release_lease`` no renewal of that attempt
  succeeds, so the retry is never held off;
* **a take-over closes the lost attempt**: its ``started`` history row is closed ``failed`` in
  the transaction that takes the occurrence over.

The value types the facet speaks (:class:`Delivery`, :class:`Closing`, :class:`BatchRow`) are
defined here; the dispatch-log and history types live with their tables
(:mod:`postburner_py.store.dispatch_log`, :mod:`postburner_py.store.history`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from postburner_py.store.facet import Facet

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from postburner_py.store.dispatch_records import (
        Claim,
        ClaimRequest,
        DispatchEntry,
        DispatchStatus,
    )
    from postburner_py.store.engine import Executor
    from postburner_py.store.history_records import HistoryEntry, HistoryStatus, LostAttempt


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of an admission batch, with the start record it would get (everything
    about it that does not depend on the row)."""

    kind: str
    id: int
    key: str
    run_at: datetime
    node_id: str
    now: datetime
    correlation_id: str
    started_at: datetime
    queue_time_ms: float
    expires_at: datetime

    def wire(self) -> str:
        """The delivery as the batch statement's JSON takes it (its number is its position)."""
        return json.dumps({name: _json(getattr(self, name)) for name in Delivery.__slots__})


@dataclass(frozen=True, slots=True)
class Closing:
    """One finished attempt to settle.

    ``changes`` are the history row's terminal values (``terminal_changes``; its
    ``finished_at`` is the settlement instant). ``final_status`` is the dispatch row's final
    status, or None to end the lease for a retry; ``delayed_status`` closes a one-off job's
    row (None: not a one-off, or a retry).
    """

    history_id: int
    changes: dict[str, Any]
    key: str
    fire_time: datetime
    attempt: int
    final_status: str | None
    delayed_id: int | None
    delayed_status: str | None

    def wire(self) -> str:
        """The closing as the batch statement's JSON takes it."""
        return json.dumps(
            {
                **{name: _json(value) for name, value in self.changes.items()},
                "history_id": self.history_id,
                "key": self.key,
                "fire_time": self.fire_time.isoformat(),
                "attempt": self.attempt,
                "final_status": self.final_status,
                "delayed_id": self.delayed_id,
                "delayed_status": self.delayed_status,
            }
        )


#: A row of the batch statement's answer, parsed (:func:`admitted_row`).
AdmittedRow = namedtuple(
    "AdmittedRow",
    "id key job_id run_at live job_class args kwargs priority ttr max_attempts "
    "schedule_id next_run_at cached_schedule history_id timeout no_retry_on queue trace_context "
    "overlap",
)
#: A row of the batch statement's answer as the ledger's thread reads it: ``undecided`` (only
#: the admission's transaction can decide the delivery) and the unparsed JSON of the row.
BatchRow = namedtuple("BatchRow", "undecided data")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def admitted_row(data: bytes) -> AdmittedRow:
    """A :class:`BatchRow`'s ``data`` parsed: JSON columns as Python values, instants as UTC
    datetimes."""
    row = AdmittedRow._make(json.loads(data.decode()))
    return row._replace(
        run_at=_instant(row.run_at),
        next_run_at=None if row.next_run_at is None else _instant(row.next_run_at),
    )


def _instant(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=epoch_us)


def _json(value: Any) -> Any:
    """A value as the batch's JSON carries it: instants in ISO 8601, str-enums as strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    return value


class GateStore(Facet, ABC):
    """The at-most-once gate: admit and settle batches, the dispatch log, the job history.

    Every method takes the caller's session (or connection): it runs inside the caller's
    transaction and never commits or rolls it back unless its contract says so (only
    :meth:`settle_and_admit` commits, by being one autocommitted statement).
    """

    def prepare_batch_connection(self, connection: Connection) -> None:
        """Set up a fresh connection once before :meth:`settle_and_admit` uses it.

        Session settings only (no rows are read or written); run again on every new
        connection, since a replaced connection has none of them. The default sets nothing.
        """

    # --- the one-statement batch (capabilities.batch_statement) ---------------------------

    @abstractmethod
    def settle_and_admit(
        self,
        connection: Executor,
        closings: Sequence[str],
        deliveries: Sequence[str],
        *,
        allowed_prefixes: Sequence[str],
        catch_up_window: timedelta,
    ) -> dict[int, BatchRow]:
        """Settle ``closings`` and admit ``deliveries`` (their ``wire()`` forms) in ONE
        autocommitted statement on an idle connection: all of it commits or none of it.

        Settling is :meth:`settle` for each closing. Admitting claims (dispatch row attempt 1
        plus its ``started`` history row) only what it can decide for good: a live row for
        the delivery's key and ``run_at``, never claimed before, named first in the batch,
        whose job class the allow-list admits and that is on time. A fenced delivery writes
        nothing. Answers, by delivery position, the row it names (absent: no such row); a
        row is ``undecided`` when it is live for that ``run_at`` but was not claimed here,
        and the caller must decide it in a transaction (:meth:`claim`). May leave the
        connection in autocommit: :meth:`end_batch` undoes it. Only when
        ``capabilities.batch_statement``; otherwise raises :class:`NotImplementedError`.
        """

    @abstractmethod
    def end_batch(self, connection: Executor) -> None:
        """Undo the connection state :meth:`settle_and_admit` leaves (autocommit) before a
        transaction or the pool sees the connection; a no-op when nothing was left."""

    # --- admission, in the caller's transaction --------------------------------------------

    @abstractmethod
    def lock_occurrences(
        self, connection: Executor, *, delayed_ids: Sequence[int], execution_ids: Sequence[int]
    ) -> tuple[list[Any], list[Any]]:
        """The one-off job rows and the execution rows (each joined to its schedule's
        ``max_attempts``, ``timeout``, ``no_retry_on``, ``overlap``) with these ids, in id
        order, locked until the transaction ends (``FOR UPDATE`` where rows can be locked; a
        single-writer engine's write transaction locks everything). Rows whatever their
        status: the caller fences. Locking serialises admission with ``skip()``."""

    @abstractmethod
    def claim(self, connection: Executor, requests: Sequence[ClaimRequest]) -> list[Claim]:
        """Claim each occurrence, in order, answering a :class:`Claim` for each.

        Overlap (the request's ``overlap``): unless ``allow``, an attempt that may run holds its
        schedule's running slot (``running_key``), which one row at most holds; a fresh
        occurrence that finds it held by a live lease is recorded ``skipped_overlap``
        (``overlap``), or waits (``waiting``: ``buffer_one`` records a ``dispatched`` attempt-0
        row, one per key at most, later ones are skipped; ``wait`` records nothing). A holder
        whose lease lapsed loses the slot to the claim: a dead worker never blocks a schedule
        beyond its TTR. A take-over that needs the slot while another holds it waits.

        No row: insert ``dispatched`` attempt 1 (``acquired``); never two acquired claims of
        one ``(key, fire_time)``, even when a batch names it twice or two transactions race.
        An expired (or released) lease with attempts left is taken over by
        compare-and-set as the next attempt (``taken_over``; ``Claim.previous`` is the lost
        attempt); with none left the row is marked ``failed`` (``exhausted``). A live lease
        answers ``busy``, a closed row ``finished``; both write nothing. Raises
        :class:`~postburner_py.errors.PostburnerError` when contention does not settle."""

    @abstractmethod
    def record_missed(
        self,
        connection: Executor,
        occurrences: Sequence[tuple[str, datetime]],
        *,
        node_id: str,
        now: datetime,
        status: DispatchStatus | None = None,
    ) -> int:
        """Insert not-run rows (attempt 0, no lease) with ``status`` (``missed``, also
        when None; ``paused``; ``skipped``) for the ``(key, fire_time)`` occurrences without a
        row, in one statement inside the caller's transaction; an occurrence that has one
        (claimed, or recorded before) is left alone, and one named twice is inserted once.
        Returns how many were inserted."""

    @abstractmethod
    def insert_started(
        self, connection: Executor, entries: Sequence[HistoryEntry]
    ) -> list[HistoryEntry]:
        """Insert the ``started`` history rows of claims that may run (one statement for the
        batch); the entries with their ids, in order. Called in the transaction of the claims,
        so a claim and its start row commit together."""

    @abstractmethod
    def close_lost(self, connection: Executor, lost: Sequence[LostAttempt]) -> None:
        """Close every ``started`` history row of each lost attempt's occurrence up to its
        attempt as ``failed`` with its explanation; rows already closed are left alone. Called
        in the transaction that takes the occurrences over."""

    @abstractmethod
    def fail_spent_one_offs(
        self, connection: Executor, spent: Sequence[tuple[int, datetime]]
    ) -> None:
        """Mark each one-off job ``(id, now)`` ``failed`` at ``now`` (its attempts are spent)
        while ``pending``, so its job id is free again; other statuses are left alone."""

    # --- run control ----------------------------------------------------------------------

    @abstractmethod
    def still_scheduled(self, connection: Executor, execution_id: int, run_at: datetime) -> bool:
        """Whether execution ``execution_id`` is still ``scheduled`` for ``run_at``: the
        start-instant re-check of an attempt admitted ahead of its start (one primary-key
        read; takes no lock, writes nothing)."""

    @abstractmethod
    def withdraw_attempt(
        self,
        connection: Executor,
        key: str,
        fire_time: datetime,
        *,
        attempt: int,
        history_id: int | None,
        now: datetime,
    ) -> bool:
        """Undo the claim of an attempt that never started (its execution was retired before
        its start instant): while ``attempt`` owns the row it becomes ``skipped`` (lease and
        running slot cleared), and the ``started`` history row ``history_id`` is deleted.
        Whether the dispatch row changed."""

    @abstractmethod
    def reopen_for_retry(
        self, connection: Executor, key: str, fire_time: datetime, *, now: datetime
    ) -> DispatchEntry | None:
        """Reopen a ``failed`` occurrence for an operator's retry: ``dispatched``, trigger
        ``retry``, its lease released at ``now``, so the next delivery takes it over as the
        next attempt (one attempt beyond ``max_attempts``). The row as reopened; None (nothing
        written) when the occurrence has no row or is not ``failed``."""

    @abstractmethod
    def insert_occurrences(
        self, connection: Executor, rows: Sequence[dict[str, Any]]
    ) -> list[tuple[int, datetime]]:
        """Insert execution rows an operator asked for (run now, backfill; their snapshot
        names the ``trigger``), skipping any that the live ``(schedule_id, run_at)`` index
        refuses (that occurrence is queued already); ``(id, run_at)`` of those inserted, in
        one statement."""

    # --- settlement, in the caller's transaction -------------------------------------------

    @abstractmethod
    def settle(self, connection: Executor, closings: Sequence[Closing]) -> None:
        """Record how each attempt ended: its history row closed with its changes (only while
        ``started``: settle records an outcome once), the dispatch row given its final status
        with the lease cleared, or (``final_status`` None) the lease ended at ``finished_at``
        so a retry takes over, and a ``pending`` one-off row closed. Each dispatch write
        happens only while the closing's attempt owns the row: a fenced-out (taken-over)
        attempt changes no dispatch row."""

    # --- one attempt's lease ---------------------------------------------------------------

    @abstractmethod
    def renew_lease(
        self,
        connection: Executor,
        key: str,
        fire_time: datetime,
        *,
        attempt: int,
        lease_until: datetime,
        now: datetime,
    ) -> bool:
        """Extend the lease to ``lease_until`` while ``attempt`` owns the row (an expired
        lease too, when nobody took it over). A released lease is never revived: answers
        False for it. Returns whether the row changed."""

    @abstractmethod
    def end_attempt(
        self,
        connection: Executor,
        key: str,
        fire_time: datetime,
        *,
        attempt: int,
        status: DispatchStatus,
        now: datetime,
    ) -> bool:
        """Give the row its final ``status`` (``completed``/``failed``), clearing the lease,
        while ``attempt`` owns it; whether it did."""

    @abstractmethod
    def release_lease(
        self, connection: Executor, key: str, fire_time: datetime, *, attempt: int, now: datetime
    ) -> bool:
        """End the lease at ``now`` (the next claim takes over as ``attempt + 1``) while
        ``attempt`` owns the row; whether it did."""

    # --- the dispatch log, read and trimmed ------------------------------------------------

    @abstractmethod
    def find_dispatch(
        self, connection: Executor, key: str, fire_time: datetime
    ) -> DispatchEntry | None:
        """The row of one occurrence, or None."""

    @abstractmethod
    def find(
        self,
        connection: Executor,
        *,
        key: str | None = None,
        node_id: str | None = None,
        status: DispatchStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[DispatchEntry]:
        """Rows matching every given filter (``since <= fire_time < until``), newest
        ``fire_time`` first, then newest row first, at most ``limit``."""

    @abstractmethod
    def delete_dispatches(self, connection: Executor, *, before: datetime, now: datetime) -> int:
        """Delete rows whose ``fire_time`` is before ``before``, except a ``dispatched`` row
        whose lease is live at ``now`` (its attempt may be running). How many went."""

    # --- the job history ------------------------------------------------------------------

    @abstractmethod
    def finish_history(
        self,
        connection: Executor,
        record_id: int,
        changes: dict[str, Any],
        correlation_id: str | None,
    ) -> HistoryEntry:
        """Close the ``started`` row ``record_id`` with ``changes``, filling in (or checking)
        ``correlation_id``; the row as stored. A terminal record is written once: raises
        :class:`ValueError` when the row is closed already or its correlation id differs,
        :class:`LookupError` when there is no such row."""

    @abstractmethod
    def find_history(
        self,
        connection: Executor,
        *,
        job_id: str | None = None,
        correlation_id: str | None = None,
        from_: datetime | None = None,
        to: datetime | None = None,
        task_identifier: str | None = None,
        status: HistoryStatus | None = None,
        limit: int | None = None,
        schedule_name: str | None = None,
    ) -> list[HistoryEntry]:
        """History rows matching every given filter (``from_ <= started_at < to``), newest
        ``started_at`` first, then newest row first, at most ``limit`` (None: all)."""

    @abstractmethod
    def expire_history(self, connection: Executor, *, now: datetime) -> int:
        """Delete history rows whose ``expires_at`` is not after ``now``; how many went."""
