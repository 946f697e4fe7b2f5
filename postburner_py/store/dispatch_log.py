"""The dispatch log: the at-most-once gate of every occurrence (DESIGN section 4, invariant 2).

An occurrence is identified by ``(key, fire_time)``; its row in ``postburner_dispatches`` is
created by an insert that cannot succeed twice, so however often Beanstalkd delivers the job,
exactly one delivery wins the claim. Each attempt holds a lease; a delivery that finds the lease
of a dead worker expired takes the occurrence over as the next attempt with a compare-and-set.

Row life cycle (``attempt`` counts the attempts that were allowed to run)::

    (no row) --claim-------------------> dispatched, attempt 1, lease = now + lease_seconds
    (no row) --record_missed-----------> missed, attempt 0 (never ran: catch_up=False)
    dispatched --renew-----------------> dispatched, lease extended (same attempt)
    dispatched --complete / fail-------> completed / failed (lease cleared)
    dispatched --release_for_retry-----> dispatched, lease = now (next delivery takes over)
    dispatched, lease expired --claim--> dispatched, attempt + 1      (attempt < max_attempts)
    dispatched, lease expired --claim--> failed                       (attempts used up)

A lease is live while ``lease_expires_at > now``; it has expired once ``lease_expires_at <= now``.
A ``dispatched`` row without a lease counts as live: nothing proves its holder dead.

The operations of Kaal's dispatch registry (``find_dispatch``, ``dispatched``, ``find_by_key``,
``find_by_node``, ``find_by_status``, ``cleanup``, and ``clear``/``size`` on the memory backend)
are here in Python spelling. :class:`SqlDispatchRegistry` (PostgreSQL, SQLite) and
:class:`MemoryDispatchRegistry` share one contract test suite.
"""

from __future__ import annotations

import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from postburner_py.clock import Clock, require_aware
from postburner_py.store.dispatch_records import (
    NOT_RUN_STATUSES,
    Claim,
    ClaimOutcome,
    ClaimRequest,
    DispatchEntry,
    DispatchRecord,
    DispatchStatus,
    FinishRequest,
    _check_max_attempts,
    _cleanup_arguments,
    _final_changes,
    _lease,
    _owned_by,
    _released,
    _status,
    claim_arguments,
    claim_changes,
    decide,
    entry_of,
    fresh_row,
    missed_rows,
)
from postburner_py.store.engine import (
    Executor,
    SessionFactory,
    utcnow,
)
from postburner_py.store.registry import store_for

__all__ = [
    "Claim",
    "ClaimOutcome",
    "ClaimRequest",
    "DispatchEntry",
    "DispatchRecord",
    "DispatchRegistry",
    "DispatchStatus",
    "FinishRequest",
    "MemoryDispatchRegistry",
    "SqlDispatchRegistry",
    "claim_arguments",
    "claim_changes",
    "decide",
    "default_node_id",
    "entry_of",
    "fresh_row",
    "insert_missed",
    "missed_rows",
]


def insert_missed(
    session: Executor, key: str, fire_times: Sequence[datetime], *, node_id: str, now: datetime
) -> int:
    """Add ``missed`` rows inside the caller's transaction (no commit); how many were added.

    What :meth:`SqlDispatchRegistry.record_missed` does, for a caller that must record skipped
    occurrences atomically with other writes (a reconcile pass). Known occurrences are skipped.
    """
    occurrences = [(key, fire_time) for fire_time in fire_times]
    return store_for(session).record_missed(session, occurrences, node_id=node_id, now=now)


def default_node_id() -> str:
    """``hostname:pid``, the node id used when none is given."""
    return f"{socket.gethostname()}:{os.getpid()}"


class DispatchRegistry(ABC):
    """The dispatch log of one database (or of one process, for the memory backend)."""

    node_id: str

    @abstractmethod
    def for_node(self, node_id: str) -> DispatchRegistry:
        """The same log seen by another node: claims it makes are recorded as ``node_id``."""

    @abstractmethod
    def claim(
        self,
        key: str,
        fire_time: datetime,
        *,
        lease_seconds: float,
        max_attempts: int,
        now: datetime,
    ) -> Claim:
        """Decide whether this delivery may run the occurrence, durably, before it runs.

        Inserts the row (``acquired``), takes over an expired lease while
        ``attempt < max_attempts`` (``taken_over``), marks an expired row whose attempts are
        used up as failed (``exhausted``), or reports ``busy``/``finished``. Only the
        ``acquired``/``taken_over`` outcomes (:attr:`Claim.should_run`) may run the job.
        """

    def renew(
        self, key: str, fire_time: datetime, *, attempt: int, lease_seconds: float, now: datetime
    ) -> bool:
        """Extend the lease to ``now + lease_seconds`` if ``attempt`` still owns the row.

        Owning means the row is ``dispatched`` with this attempt number: a lease that already
        expired is renewed too as long as nobody took it over (a worker that could not reach
        the database for longer than its lease renews it once the database is back). A lease
        given up by :meth:`release_for_retry` is never renewed: a renewal racing the release
        of its own attempt must not hold the retry off. Returns whether it was renewed.
        """
        now = require_aware("now", now)
        fire_time = require_aware("fire_time", fire_time)
        return self._renew(key, fire_time, attempt, now + _lease(lease_seconds), now)

    def complete(self, key: str, fire_time: datetime, *, attempt: int, now: datetime) -> bool:
        """Mark the occurrence completed if ``attempt`` still owns it; returns whether it did."""
        fire_time, now = require_aware("fire_time", fire_time), require_aware("now", now)
        return self._end(key, fire_time, attempt, DispatchStatus.COMPLETED, now)

    def fail(self, key: str, fire_time: datetime, *, attempt: int, now: datetime) -> bool:
        """Mark the occurrence failed for good if ``attempt`` still owns it."""
        fire_time, now = require_aware("fire_time", fire_time), require_aware("now", now)
        return self._end(key, fire_time, attempt, DispatchStatus.FAILED, now)

    def release_for_retry(
        self,
        key: str,
        fire_time: datetime,
        *,
        attempt: int,
        now: datetime,
        max_attempts: int | None = None,
    ) -> bool:
        """Give up the lease of a failed attempt so the next delivery retries at once.

        Sets ``lease_expires_at = now``: the next :meth:`claim` takes over as ``attempt + 1``.
        Attempts are counted by ``claim``: releasing the last attempt is safe, the next claim
        answers ``exhausted`` and marks the row failed. With ``max_attempts`` the check happens
        here: when ``attempt >= max_attempts`` the row is marked failed right away.
        Returns True when a retry can follow, False when the row was marked failed or
        ``attempt`` no longer owns it.
        """
        if max_attempts is not None and attempt >= _check_max_attempts(max_attempts):
            self.fail(key, fire_time, attempt=attempt, now=now)
            return False
        now = require_aware("now", now)
        return self._release(key, require_aware("fire_time", fire_time), attempt, now)

    @abstractmethod
    def record_missed(self, key: str, fire_times: Sequence[datetime], *, now: datetime) -> int:
        """Record occurrences skipped on purpose (``catch_up=False``) as ``missed``.

        Occurrences that already have a row are left alone. Returns how many rows were added.
        """

    @abstractmethod
    def find_dispatch(self, key: str, fire_time: datetime) -> DispatchEntry | None:
        """The row of one occurrence, or None."""

    def find(
        self,
        *,
        key: str | None = None,
        node_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[DispatchEntry]:
        """Rows matching every given filter (``since <= fire_time < until``), newest
        ``fire_time`` first (then newest row first), at most ``limit``."""
        return self._find(_Filter.of(key, node_id, status, since, until, limit))

    def find_by_key(
        self,
        key: str,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[DispatchEntry]:
        """Rows of one key, newest ``fire_time`` first, with ``since <= fire_time < until``."""
        return self.find(key=key, status=status, since=since, until=until, limit=limit)

    def find_by_node(
        self,
        node_id: str,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[DispatchEntry]:
        """Rows whose latest attempt ran on ``node_id``, newest ``fire_time`` first."""
        return self.find(node_id=node_id, status=status, since=since, until=until, limit=limit)

    def find_by_status(
        self,
        status: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[DispatchEntry]:
        """Rows with ``status``, newest ``fire_time`` first."""
        return self.find(status=status, since=since, until=until, limit=limit)

    @abstractmethod
    def cleanup(self, recovery_window: float = 86400, *, now: datetime | None = None) -> int:
        """Delete rows whose ``fire_time`` is older than ``now - recovery_window`` seconds.

        A ``dispatched`` row whose lease is still live is never deleted: its attempt may be
        running, and deleting the row would let a redelivery claim the occurrence again.
        Returns how many rows were deleted.
        """

    def dispatched(self, key: str, fire_time: datetime) -> bool:
        """True when some attempt claimed the occurrence (whatever came of it).

        An occurrence recorded as ``missed``, ``paused`` or ``skipped`` was never dispatched.
        """
        entry = self.find_dispatch(key, fire_time)
        return entry is not None and entry.status not in NOT_RUN_STATUSES

    @abstractmethod
    def _renew(
        self, key: str, fire_time: datetime, attempt: int, lease_until: datetime, now: datetime
    ) -> bool:
        """Set the lease to ``lease_until`` if the row is ``dispatched`` as ``attempt`` and its
        lease was not given up for a retry; whether it was."""

    @abstractmethod
    def _end(
        self, key: str, fire_time: datetime, attempt: int, status: DispatchStatus, now: datetime
    ) -> bool:
        """Give the row its final ``status`` if it is ``dispatched`` as ``attempt``."""

    @abstractmethod
    def _release(self, key: str, fire_time: datetime, attempt: int, now: datetime) -> bool:
        """End the lease at ``now`` if the row is ``dispatched`` as ``attempt``."""

    @abstractmethod
    def _find(self, criteria: _Filter) -> list[DispatchEntry]:
        """Rows matching ``criteria``, newest ``fire_time`` first (then newest row first)."""


class MemoryDispatchRegistry(DispatchRegistry):
    """A thread-safe, in-process dispatch log with the same semantics as the SQL one.

    For tests and single-process setups: it protects against duplicate deliveries within
    one process only.
    """

    def __init__(self, *, node_id: str | None = None, clock: Clock = utcnow) -> None:
        self.node_id = node_id or default_node_id()
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, datetime], DispatchEntry] = {}

    def for_node(self, node_id: str) -> MemoryDispatchRegistry:
        view = MemoryDispatchRegistry(node_id=node_id, clock=self._clock)
        view._lock, view._rows = self._lock, self._rows
        return view

    def claim(
        self,
        key: str,
        fire_time: datetime,
        *,
        lease_seconds: float,
        max_attempts: int,
        now: datetime,
    ) -> Claim:
        ident, now, lease_until = claim_arguments(key, fire_time, lease_seconds, max_attempts, now)
        with self._lock:
            current = self._rows.get(ident)
            if current is None:
                entry = DispatchEntry(**fresh_row(ident, self.node_id, now, lease_until))
                self._rows[ident] = entry
                return Claim(ClaimOutcome.ACQUIRED, entry)
            outcome = decide(current, now=now, max_attempts=max_attempts)
            changes = claim_changes(outcome, current, self.node_id, now, lease_until)
            if changes is None:
                return Claim(outcome, current)
            self._rows[ident] = replace(current, **changes)
            return Claim(outcome, self._rows[ident], previous=current)

    def record_missed(self, key: str, fire_times: Sequence[datetime], *, now: datetime) -> int:
        occurrences = [(key, fire_time) for fire_time in fire_times]
        rows = missed_rows(occurrences, self.node_id, require_aware("now", now))
        with self._lock:
            fresh = [row for row in rows if (key, row["fire_time"]) not in self._rows]
            for row in fresh:
                self._rows[(key, row["fire_time"])] = DispatchEntry(**row)
        return len(fresh)

    def find_dispatch(self, key: str, fire_time: datetime) -> DispatchEntry | None:
        with self._lock:
            return self._rows.get((key, require_aware("fire_time", fire_time)))

    def cleanup(self, recovery_window: float = 86400, *, now: datetime | None = None) -> int:
        now, cutoff = _cleanup_arguments(recovery_window, now, self._clock)
        with self._lock:
            doomed = [
                ident
                for ident, entry in self._rows.items()
                if entry.fire_time < cutoff and not entry.lease_live(now)
            ]
            for ident in doomed:
                del self._rows[ident]
        return len(doomed)

    def clear(self) -> None:
        """Forget every row."""
        with self._lock:
            self._rows.clear()

    def size(self) -> int:
        """How many rows are stored."""
        with self._lock:
            return len(self._rows)

    def _update_owned(
        self,
        key: str,
        fire_time: datetime,
        attempt: int,
        changes: dict[str, Any],
        *,
        unreleased: bool = False,
    ) -> bool:
        with self._lock:
            current = self._rows.get((key, fire_time))
            if current is None or not _owned_by(current, attempt):
                return False
            if unreleased and _released(current):
                return False
            self._rows[(key, fire_time)] = replace(current, **changes)
            return True

    def _renew(
        self, key: str, fire_time: datetime, attempt: int, lease_until: datetime, now: datetime
    ) -> bool:
        changes = {"lease_expires_at": lease_until, "updated_at": now}
        return self._update_owned(key, fire_time, attempt, changes, unreleased=True)

    def _end(
        self, key: str, fire_time: datetime, attempt: int, status: DispatchStatus, now: datetime
    ) -> bool:
        return self._update_owned(key, fire_time, attempt, _final_changes(status, now))

    def _release(self, key: str, fire_time: datetime, attempt: int, now: datetime) -> bool:
        changes = {"lease_expires_at": now, "updated_at": now}
        return self._update_owned(key, fire_time, attempt, changes)

    def _find(self, criteria: _Filter) -> list[DispatchEntry]:
        with self._lock:
            newest_rows_first = list(reversed(self._rows.values()))
        hits = [entry for entry in newest_rows_first if criteria.matches(entry)]
        # A stable sort keeps equal fire_times newest row first, like the SQL backend's id order.
        hits.sort(key=lambda entry: entry.fire_time, reverse=True)
        return hits[: criteria.limit]


class SqlDispatchRegistry(DispatchRegistry):
    """The dispatch log in ``postburner_dispatches`` (PostgreSQL or SQLite), through the
    store's gate facet (:class:`~postburner_py.store.contract.gate.GateStore`).

    Every mutating call is its own short transaction, committed before it returns, so a claim
    is durable before the job runs. Claims rely on ``INSERT ... ON CONFLICT DO NOTHING`` and
    on compare-and-set updates checked by row count; they assume READ COMMITTED (PostgreSQL's
    default) or SQLite's serialized writers.
    """

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        node_id: str | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.node_id = node_id or default_node_id()
        self._session_factory = session_factory
        self._clock = clock

    def for_node(self, node_id: str) -> SqlDispatchRegistry:
        return SqlDispatchRegistry(self._session_factory, node_id=node_id, clock=self._clock)

    def claim(
        self,
        key: str,
        fire_time: datetime,
        *,
        lease_seconds: float,
        max_attempts: int,
        now: datetime,
    ) -> Claim:
        with self._session_factory() as session, session.begin():
            return self.claim_in(
                session,
                key,
                fire_time,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                now=now,
            )

    def claim_in(
        self,
        session: Executor,
        key: str,
        fire_time: datetime,
        *,
        lease_seconds: float,
        max_attempts: int,
        now: datetime,
    ) -> Claim:
        """:meth:`claim` inside the caller's open transaction (the caller commits).

        The worker uses it to check its execution row and claim the occurrence atomically.
        """
        request = ClaimRequest(key, fire_time, self.node_id, lease_seconds, max_attempts, now)
        return self.claim_many_in(session, [request])[0]

    def claim_many_in(self, session: Executor, requests: Sequence[ClaimRequest]) -> list[Claim]:
        """:meth:`claim_in` for a batch, in the caller's open transaction, answers in order
        (:meth:`~postburner_py.store.contract.gate.GateStore.claim`)."""
        return store_for(session).claim(session, requests)

    def record_missed(self, key: str, fire_times: Sequence[datetime], *, now: datetime) -> int:
        with self._session_factory() as session, session.begin():
            return insert_missed(session, key, fire_times, node_id=self.node_id, now=now)

    def find_dispatch(self, key: str, fire_time: datetime) -> DispatchEntry | None:
        with self._session_factory() as session:
            fire_time = require_aware("fire_time", fire_time)
            return store_for(session).find_dispatch(session, key, fire_time)

    def cleanup(self, recovery_window: float = 86400, *, now: datetime | None = None) -> int:
        now, cutoff = _cleanup_arguments(recovery_window, now, self._clock)
        with self._session_factory() as session, session.begin():
            return store_for(session).delete_dispatches(session, before=cutoff, now=now)

    def _renew(
        self, key: str, fire_time: datetime, attempt: int, lease_until: datetime, now: datetime
    ) -> bool:
        with self._session_factory() as session, session.begin():
            return store_for(session).renew_lease(
                session, key, fire_time, attempt=attempt, lease_until=lease_until, now=now
            )

    def _end(
        self, key: str, fire_time: datetime, attempt: int, status: DispatchStatus, now: datetime
    ) -> bool:
        with self._session_factory() as session, session.begin():
            return store_for(session).end_attempt(
                session, key, fire_time, attempt=attempt, status=status, now=now
            )

    def _release(self, key: str, fire_time: datetime, attempt: int, now: datetime) -> bool:
        with self._session_factory() as session, session.begin():
            return store_for(session).release_lease(
                session, key, fire_time, attempt=attempt, now=now
            )

    def _find(self, criteria: _Filter) -> list[DispatchEntry]:
        with self._session_factory() as session:
            return store_for(session).find(
                session,
                key=criteria.key,
                node_id=criteria.node_id,
                status=criteria.status,
                since=criteria.since,
                until=criteria.until,
                limit=criteria.limit,
            )


@dataclass(frozen=True, slots=True)
class _Filter:
    """Checked criteria of :meth:`DispatchRegistry.find`, applicable in memory and in SQL."""

    key: str | None
    node_id: str | None
    status: DispatchStatus | None
    since: datetime | None
    until: datetime | None
    limit: int

    @classmethod
    def of(
        cls,
        key: str | None,
        node_id: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> _Filter:
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit!r}")
        return cls(
            key,
            node_id,
            None if status is None else _status(status),
            None if since is None else require_aware("since", since),
            None if until is None else require_aware("until", until),
            limit,
        )

    def matches(self, entry: DispatchEntry) -> bool:
        return (
            (self.key is None or entry.key == self.key)
            and (self.node_id is None or entry.node_id == self.node_id)
            and (self.status is None or entry.status is self.status)
            and (self.since is None or entry.fire_time >= self.since)
            and (self.until is None or entry.fire_time < self.until)
        )
