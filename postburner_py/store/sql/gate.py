"""The generic SQLAlchemy implementation of the gate facet (SQLite, and PostgreSQL's
transaction path): each batch is one statement (a multi-row INSERT or an executemany UPDATE)
inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from postburner_py.clock import require_aware
from postburner_py.errors import PostburnerError
from postburner_py.store import dispatch_records as log_
from postburner_py.store import history_records as history_
from postburner_py.store.contract.gate import BatchRow, Closing, GateStore
from postburner_py.store.dispatch_records import (
    Claim,
    ClaimOutcome,
    ClaimRequest,
    DispatchEntry,
    DispatchRecord,
    DispatchStatus,
    Overlap,
)
from postburner_py.store.engine import Executor, connection_of
from postburner_py.store.history_records import (
    HistoryEntry,
    HistoryRecord,
    HistoryStatus,
    LostAttempt,
)
from postburner_py.store.models import (
    SCHEDULED,
    DelayedJob,
    DelayedStatus,
    Schedule,
    ScheduleExecution,
)

#: How often a claim re-reads the row after losing a compare-and-set before giving up.
_CLAIM_ROUNDS = 5

_EXECUTION_T = cast(Table, ScheduleExecution.__table__)
_SCHEDULE_T = cast(Table, Schedule.__table__)
_DELAYED_T = cast(Table, DelayedJob.__table__)
_DISPATCH_T = cast(Table, DispatchRecord.__table__)
_HISTORY_T = cast(Table, HistoryRecord.__table__)

# --- admission ----------------------------------------------------------------------------

_LOCK_EXECUTIONS = (
    select(
        _EXECUTION_T.c.id,
        _EXECUTION_T.c.schedule_id,
        _EXECUTION_T.c.run_at,
        _EXECUTION_T.c.next_run_at,
        _EXECUTION_T.c.status,
        _EXECUTION_T.c.cached_schedule,
        _SCHEDULE_T.c.max_attempts,
        _SCHEDULE_T.c.timeout,
        _SCHEDULE_T.c.no_retry_on,
        _SCHEDULE_T.c.overlap,
    )
    .outerjoin(_SCHEDULE_T, _SCHEDULE_T.c.id == _EXECUTION_T.c.schedule_id)
    .where(_EXECUTION_T.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_EXECUTION_T.c.id)
    .with_for_update(of=_EXECUTION_T)
)
_LOCK_DELAYED = (
    select(_DELAYED_T)
    .where(_DELAYED_T.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DELAYED_T.c.id)
    .with_for_update()
)
_FAIL_DELAYED = (
    update(_DELAYED_T)
    .where(_DELAYED_T.c.id == bindparam("b_id"), _DELAYED_T.c.status == DelayedStatus.PENDING)
    .values(status=DelayedStatus.FAILED, updated_at=bindparam("b_updated_at"))
)

# --- settlement ---------------------------------------------------------------------------

#: The row of ``b_key``/``b_fire_time`` while attempt ``b_attempt`` owns it (executemany).
_OWNED_BY_BOUND_ATTEMPT = (
    DispatchRecord.key == bindparam("b_key"),
    DispatchRecord.fire_time == bindparam("b_fire_time"),
    DispatchRecord.status == DispatchStatus.DISPATCHED,
    DispatchRecord.attempt == bindparam("b_attempt"),
)
_FINISH_OWNED = (
    update(DispatchRecord)
    .where(*_OWNED_BY_BOUND_ATTEMPT)
    .values(
        status=bindparam("status"),
        lease_expires_at=bindparam("lease_expires_at"),
        updated_at=bindparam("updated_at"),
        running_key=None,
    )
)
_RELEASE_OWNED = (
    update(DispatchRecord)
    .where(*_OWNED_BY_BOUND_ATTEMPT)
    .values(lease_expires_at=bindparam("lease_expires_at"), updated_at=bindparam("updated_at"))
)
_CLOSE_DELAYED = (
    update(_DELAYED_T)
    .where(_DELAYED_T.c.id == bindparam("b_id"), _DELAYED_T.c.status == DelayedStatus.PENDING)
    .values(status=bindparam("b_status"), updated_at=bindparam("b_updated_at"))
)

# --- history ------------------------------------------------------------------------------

_INSERT_RETURNING_ID = insert(_HISTORY_T).returning(_HISTORY_T.c.id, sort_by_parameter_order=True)
_FINISH_STARTED = (
    update(_HISTORY_T)
    .where(_HISTORY_T.c.id == bindparam("b_id"), _HISTORY_T.c.status == HistoryStatus.STARTED)
    .values({name: bindparam(name) for name in history_.TERMINAL_COLUMNS})
)
_CLOSE_LOST = (
    update(_HISTORY_T)
    .where(
        _HISTORY_T.c.correlation_id == bindparam("b_correlation_id"),
        _HISTORY_T.c.attempt <= bindparam("b_attempt"),
        _HISTORY_T.c.status == HistoryStatus.STARTED,
    )
    .values(
        status=HistoryStatus.FAILED,
        finished_at=bindparam("b_finished_at"),
        error_message=bindparam("b_error_message"),
    )
)


class SqlGateStore(GateStore):
    """:class:`GateStore` in SQLAlchemy Core, branching on capabilities where families differ."""

    _insert_absent_statement: Insert | None = None

    # --- the one-statement batch ------------------------------------------------------------

    def settle_and_admit(
        self,
        connection: Executor,
        closings: Sequence[str],
        deliveries: Sequence[str],
        *,
        allowed_prefixes: Sequence[str],
        catch_up_window: timedelta,
    ) -> dict[int, BatchRow]:
        raise NotImplementedError(
            f"the {self.capabilities.family} store has no one-statement batch: "
            "settle and admit in a transaction"
        )

    def end_batch(self, connection: Executor) -> None:
        return None

    # --- admission ----------------------------------------------------------------------------

    def lock_occurrences(
        self, connection: Executor, *, delayed_ids: Sequence[int], execution_ids: Sequence[int]
    ) -> tuple[list[Any], list[Any]]:
        target = connection_of(connection)
        return (
            _rows(target, _LOCK_DELAYED, delayed_ids),
            _rows(target, _LOCK_EXECUTIONS, execution_ids),
        )

    def claim(self, connection: Executor, requests: Sequence[ClaimRequest]) -> list[Claim]:
        """Occurrences without a row are claimed by one multi-row INSERT that skips existing
        rows (and rows whose schedule's running slot is taken); the rest (already in the log,
        named twice in the batch, or overlapping a running occurrence) are decided one by one
        after it, each by insert-or-compare-and-set."""
        target = connection_of(connection)
        checked = [
            log_.claim_arguments(r.key, r.fire_time, r.lease_seconds, r.max_attempts, r.now)
            for r in requests
        ]
        fresh: dict[tuple[str, datetime], dict[str, Any]] = {}
        for request, (ident, now, lease_until) in zip(requests, checked, strict=True):
            fresh.setdefault(ident, _fresh(request, ident, now, lease_until))
        inserted = self._insert_absent(target, list(fresh.values()))
        claims: list[Claim] = []
        for request, (ident, now, lease_until) in zip(requests, checked, strict=True):
            if ident in inserted:
                inserted.discard(ident)  # only the first request of an occurrence acquired it
                claims.append(Claim(ClaimOutcome.ACQUIRED, DispatchEntry(**fresh[ident])))
            else:
                claims.append(self._claim_one(target, request, ident, now, lease_until))
        return claims

    def _claim_one(
        self,
        connection: Any,
        request: ClaimRequest,
        ident: tuple[str, datetime],
        now: datetime,
        lease_until: datetime,
    ) -> Claim:
        row = _fresh(request, ident, now, lease_until)
        for _ in range(_CLAIM_ROUNDS):
            if self._insert_absent(connection, [row]):
                return Claim(ClaimOutcome.ACQUIRED, DispatchEntry(**row))
            current = self.find_dispatch(connection, *ident)
            if current is None:  # the schedule's running slot is taken
                claim = self._overlapping(connection, request, ident, now)
            elif current.waiting:
                claim = self._promote(connection, request, current, now, lease_until)
            else:
                claim = self._decide_existing(connection, request, current, now, lease_until)
            if claim is not None:
                return claim
        raise PostburnerError(
            f"claim of {ident[0]!r} at {ident[1].isoformat()} did not settle after "
            f"{_CLAIM_ROUNDS} rounds of contention; the delivery must not run"
        )

    def _decide_existing(
        self,
        connection: Any,
        request: ClaimRequest,
        current: DispatchEntry,
        now: datetime,
        lease_until: datetime,
    ) -> Claim | None:
        """Classify an existing row and apply the outcome; None when the row changed meanwhile."""
        outcome = log_.decide(current, now=now, max_attempts=request.max_attempts)
        slot = log_.holds_slot(current.key, request.overlap)
        if outcome is ClaimOutcome.TAKEN_OVER and slot is not None and current.running_key is None:
            holder = self._slot_holder(connection, current.key)
            if holder is not None and holder.lease_live(now):
                return Claim(ClaimOutcome.WAITING, current)  # runs once the other finished
            if holder is not None:
                self._free_slot(connection, holder, now)
        changes = log_.claim_changes(
            outcome, current, request.node_id, now, lease_until, running_key=slot
        )
        if changes is None:
            return Claim(outcome, current)
        statement = (
            update(DispatchRecord)
            .where(
                DispatchRecord.key == current.key,
                DispatchRecord.fire_time == current.fire_time,
                DispatchRecord.status == DispatchStatus.DISPATCHED,
                DispatchRecord.attempt == current.attempt,
                DispatchRecord.lease_expires_at <= now,
            )
            .values(**changes)
        )
        if self._guarded(connection, statement) == 1:
            return Claim(outcome, replace(current, **changes), previous=current)
        return None

    # --- overlap: the schedule's running slot ----------------------------------------------

    def _overlapping(
        self, connection: Any, request: ClaimRequest, ident: tuple[str, datetime], now: datetime
    ) -> Claim | None:
        """A fresh occurrence whose schedule's slot is taken: free a dead holder's slot (None:
        claim again), or decide by the policy while the holder runs."""
        holder = self._slot_holder(connection, ident[0])
        if holder is None:
            return None  # freed meanwhile
        if not holder.lease_live(now):
            self._free_slot(connection, holder, now)
            return None
        if request.overlap == Overlap.WAIT:
            return Claim(ClaimOutcome.WAITING, holder)
        if request.overlap == Overlap.BUFFER_ONE:
            waiting = log_.waiting_row(ident, request.node_id, now, request.trigger)
            if self._insert_absent(connection, [waiting]):
                return Claim(ClaimOutcome.WAITING, DispatchEntry(**waiting))
            if self._replace_dead_waiter(connection, ident, now):
                return None
        return self._skip_overlapping(connection, request, ident, now)

    def _skip_overlapping(
        self, connection: Any, request: ClaimRequest, ident: tuple[str, datetime], now: datetime
    ) -> Claim | None:
        row = log_.not_run_row(
            ident, request.node_id, now, DispatchStatus.SKIPPED_OVERLAP, request.trigger
        )
        if self._insert_absent(connection, [row]):
            return Claim(ClaimOutcome.OVERLAP, DispatchEntry(**row))
        return None

    def _replace_dead_waiter(
        self, connection: Any, ident: tuple[str, datetime], now: datetime
    ) -> bool:
        """Turn the schedule's waiting occurrence ``skipped_overlap`` when its job stopped
        coming back (its place lapsed); whether it did."""
        statement = (
            update(DispatchRecord)
            .where(
                DispatchRecord.key == ident[0],
                DispatchRecord.fire_time != ident[1],
                DispatchRecord.status == DispatchStatus.DISPATCHED,
                DispatchRecord.attempt == 0,
                DispatchRecord.lease_expires_at <= now,
            )
            .values(status=DispatchStatus.SKIPPED_OVERLAP, lease_expires_at=None, updated_at=now)
        )
        return bool(connection.execute(statement).rowcount)

    def _promote(
        self,
        connection: Any,
        request: ClaimRequest,
        current: DispatchEntry,
        now: datetime,
        lease_until: datetime,
    ) -> Claim | None:
        """The waiting occurrence's job came back: run it as attempt 1 once the slot is free,
        or hold its place while the other still runs."""
        ident = (current.key, current.fire_time)
        waiting = _owned_update(current.key, current.fire_time, 0)
        holder = self._slot_holder(connection, current.key)
        if holder is not None and holder.lease_live(now):
            place = now + timedelta(seconds=log_.WAIT_LEASE_SECONDS)
            connection.execute(waiting.values(lease_expires_at=place, updated_at=now))
            return Claim(ClaimOutcome.WAITING, holder)
        if holder is not None:
            self._free_slot(connection, holder, now)
        changes = log_.fresh_row(
            ident, request.node_id, now, lease_until, overlap=Overlap.SKIP, trigger=current.trigger
        )
        del changes["key"], changes["fire_time"]
        if self._guarded(connection, waiting.values(**changes)) == 1:
            return Claim(ClaimOutcome.ACQUIRED, replace(current, **changes))
        return None

    def _slot_holder(self, connection: Any, key: str) -> DispatchEntry | None:
        statement = select(_DISPATCH_T).where(_DISPATCH_T.c.running_key == key)
        row = connection.execute(statement).one_or_none()
        return None if row is None else log_.entry_of(row)

    def _free_slot(self, connection: Any, holder: DispatchEntry, now: datetime) -> None:
        """Take the running slot from an attempt whose lease lapsed (its worker is gone or it
        was released for a retry); a renewal meanwhile keeps it."""
        live = and_(
            DispatchRecord.status == DispatchStatus.DISPATCHED,
            or_(DispatchRecord.lease_expires_at.is_(None), DispatchRecord.lease_expires_at > now),
        )
        statement = (
            update(DispatchRecord)
            .where(
                DispatchRecord.key == holder.key,
                DispatchRecord.fire_time == holder.fire_time,
                DispatchRecord.running_key.is_not(None),
                not_(live),
            )
            .values(running_key=None)
        )
        connection.execute(statement)

    def _guarded(self, connection: Any, statement: Any) -> int:
        """Rows ``statement`` changed; 0 when it would take a running slot another transaction
        took meanwhile (only possible with concurrent writers: a savepoint keeps the rest)."""
        if self.capabilities.single_writer:
            return int(connection.execute(statement).rowcount)
        try:
            with connection.begin_nested():
                return int(connection.execute(statement).rowcount)
        except IntegrityError:
            return 0

    def record_missed(
        self,
        connection: Executor,
        occurrences: Sequence[tuple[str, datetime]],
        *,
        node_id: str,
        now: datetime,
        status: DispatchStatus | None = None,
    ) -> int:
        rows = log_.missed_rows(
            occurrences, node_id, require_aware("now", now), status or DispatchStatus.MISSED
        )
        return len(self._insert_absent(connection_of(connection), rows)) if rows else 0

    def _insert_absent(
        self, connection: Any, rows: list[dict[str, Any]]
    ) -> set[tuple[str, datetime]]:
        """Insert ``rows``, skipping existing occurrences; the ``(key, fire_time)`` that went in.

        Executed as one executemany: SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs of
        a cached statement, paged to the driver's parameter limits, RETURNING what was inserted.
        """
        if not rows:
            return set()
        statement = self._insert_absent_statement
        if statement is None:
            statement = self.insert_ignoring_conflicts(DispatchRecord).returning(
                DispatchRecord.key, DispatchRecord.fire_time
            )
            self._insert_absent_statement = statement
        inserted = connection.execute(statement, rows)
        return {(key, require_aware("fire_time", fire_time)) for key, fire_time in inserted}

    def insert_started(
        self, connection: Executor, entries: Sequence[HistoryEntry]
    ) -> list[HistoryEntry]:
        if not entries:
            return []
        rows = [{name: getattr(entry, name) for name in history_.COLUMNS} for entry in entries]
        ids = connection_of(connection).execute(_INSERT_RETURNING_ID, rows).scalars().all()
        return [replace(entry, id=row_id) for entry, row_id in zip(entries, ids, strict=True)]

    def close_lost(self, connection: Executor, lost: Sequence[LostAttempt]) -> None:
        if not lost:
            return
        params = [
            {
                "b_correlation_id": item.correlation_id,
                "b_attempt": item.attempt,
                "b_finished_at": require_aware("finished_at", item.finished_at),
                "b_error_message": item.error_message,
            }
            for item in lost
        ]
        connection_of(connection).execute(_CLOSE_LOST, params)

    def fail_spent_one_offs(
        self, connection: Executor, spent: Sequence[tuple[int, datetime]]
    ) -> None:
        if spent:
            params = [{"b_id": row_id, "b_updated_at": now} for row_id, now in spent]
            connection_of(connection).execute(_FAIL_DELAYED, params)

    # --- run control --------------------------------------------------------------------------

    def still_scheduled(self, connection: Executor, execution_id: int, run_at: datetime) -> bool:
        statement = select(_EXECUTION_T.c.id).where(
            _EXECUTION_T.c.id == execution_id,
            _EXECUTION_T.c.status == SCHEDULED,
            _EXECUTION_T.c.run_at == run_at,
        )
        return connection_of(connection).execute(statement).first() is not None

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
        target = connection_of(connection)
        statement = _owned_update(key, fire_time, attempt).values(
            status=DispatchStatus.SKIPPED, lease_expires_at=None, updated_at=now, running_key=None
        )
        changed = target.execute(statement).rowcount == 1
        if changed and history_id is not None:
            target.execute(
                delete(_HISTORY_T).where(
                    _HISTORY_T.c.id == history_id, _HISTORY_T.c.status == HistoryStatus.STARTED
                )
            )
        return changed

    def reopen_for_retry(
        self, connection: Executor, key: str, fire_time: datetime, *, now: datetime
    ) -> DispatchEntry | None:
        now = require_aware("now", now)
        statement = (
            update(_DISPATCH_T)
            .where(
                _DISPATCH_T.c.key == key,
                _DISPATCH_T.c.fire_time == require_aware("fire_time", fire_time),
                _DISPATCH_T.c.status == DispatchStatus.FAILED,
            )
            .values(log_.retry_changes(now))
            .returning(*_DISPATCH_T.c)
        )
        row = connection_of(connection).execute(statement).first()
        return None if row is None else log_.entry_of(row)

    def insert_occurrences(
        self, connection: Executor, rows: Sequence[dict[str, Any]]
    ) -> list[tuple[int, datetime]]:
        if not rows:
            return []
        statement = self.insert_ignoring_conflicts(ScheduleExecution).returning(
            _EXECUTION_T.c.id, _EXECUTION_T.c.run_at
        )
        inserted = connection_of(connection).execute(statement, list(rows)).all()
        return [(int(row[0]), require_aware("run_at", row[1])) for row in inserted]

    # --- settlement ---------------------------------------------------------------------------

    def settle(self, connection: Executor, closings: Sequence[Closing]) -> None:
        if not closings:
            return
        target = connection_of(connection)
        target.execute(
            _FINISH_STARTED, [{"b_id": item.history_id, **item.changes} for item in closings]
        )
        final = [
            _owned_params(
                item,
                {"status": item.final_status, "lease_expires_at": None, "updated_at": _at(item)},
            )
            for item in closings
            if item.final_status is not None
        ]
        if final:
            target.execute(_FINISH_OWNED, final)
        released = [
            _owned_params(item, {"lease_expires_at": _at(item), "updated_at": _at(item)})
            for item in closings
            if item.final_status is None
        ]
        if released:
            target.execute(_RELEASE_OWNED, released)
        one_offs = [
            {"b_id": item.delayed_id, "b_status": item.delayed_status, "b_updated_at": _at(item)}
            for item in closings
            if item.delayed_id is not None
        ]
        if one_offs:
            target.execute(_CLOSE_DELAYED, one_offs)

    # --- one attempt's lease ------------------------------------------------------------------

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
        # A claim and a renewal set the lease past updated_at; a release sets both to one
        # instant: so a released lease is told apart from one that merely expired.
        not_released = or_(
            DispatchRecord.lease_expires_at.is_(None),
            DispatchRecord.lease_expires_at > DispatchRecord.updated_at,
        )
        statement = (
            _owned_update(key, fire_time, attempt)
            .where(not_released)
            .values(lease_expires_at=lease_until, updated_at=now)
        )
        return connection_of(connection).execute(statement).rowcount == 1

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
        statement = _owned_update(key, fire_time, attempt).values(
            status=status, lease_expires_at=None, updated_at=now, running_key=None
        )
        return connection_of(connection).execute(statement).rowcount == 1

    def release_lease(
        self, connection: Executor, key: str, fire_time: datetime, *, attempt: int, now: datetime
    ) -> bool:
        statement = _owned_update(key, fire_time, attempt).values(
            lease_expires_at=now, updated_at=now
        )
        return connection_of(connection).execute(statement).rowcount == 1

    # --- the dispatch log, read and trimmed ---------------------------------------------------

    def find_dispatch(
        self, connection: Executor, key: str, fire_time: datetime
    ) -> DispatchEntry | None:
        statement = select(_DISPATCH_T).where(
            _DISPATCH_T.c.key == key, _DISPATCH_T.c.fire_time == fire_time
        )
        row = connection_of(connection).execute(statement).one_or_none()
        return None if row is None else log_.entry_of(row)

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
        conditions: list[ColumnElement[bool]] = []
        if key is not None:
            conditions.append(DispatchRecord.key == key)
        if node_id is not None:
            conditions.append(DispatchRecord.node_id == node_id)
        if status is not None:
            conditions.append(DispatchRecord.status == status)
        if since is not None:
            conditions.append(DispatchRecord.fire_time >= since)
        if until is not None:
            conditions.append(DispatchRecord.fire_time < until)
        statement = (
            select(_DISPATCH_T)
            .where(*conditions)
            .order_by(_DISPATCH_T.c.fire_time.desc(), _DISPATCH_T.c.id.desc())
            .limit(limit)
        )
        return [log_.entry_of(row) for row in connection_of(connection).execute(statement)]

    def delete_dispatches(self, connection: Executor, *, before: datetime, now: datetime) -> int:
        live = and_(
            DispatchRecord.status == DispatchStatus.DISPATCHED,
            or_(DispatchRecord.lease_expires_at.is_(None), DispatchRecord.lease_expires_at > now),
        )
        statement = delete(DispatchRecord).where(DispatchRecord.fire_time < before, not_(live))
        return connection_of(connection).execute(statement).rowcount

    # --- the job history ----------------------------------------------------------------------

    def finish_history(
        self,
        connection: Executor,
        record_id: int,
        changes: dict[str, Any],
        correlation_id: str | None,
    ) -> HistoryEntry:
        """One conditional UPDATE; on a miss, load the row to say precisely what is wrong."""
        values = dict(changes)
        conditions = [HistoryRecord.id == record_id, HistoryRecord.status == HistoryStatus.STARTED]
        if correlation_id is not None:
            values["correlation_id"] = correlation_id
            conditions.append(
                or_(
                    HistoryRecord.correlation_id.is_(None),
                    HistoryRecord.correlation_id == correlation_id,
                )
            )
        target = connection_of(connection)
        statement = update(_HISTORY_T).where(*conditions).values(**values).returning(*_HISTORY_T.c)
        row = target.execute(statement).first()
        if row is not None:
            return history_.entry_of(row)
        current = target.execute(select(_HISTORY_T).where(_HISTORY_T.c.id == record_id)).first()
        if current is None:
            raise LookupError(f"record: no history row with id {record_id}")
        history_.check_open(record_id, current.status, current.correlation_id, correlation_id)
        raise LookupError(f"record: history row {record_id} changed meanwhile")

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
        conditions: list[ColumnElement[bool]] = []
        if job_id is not None:
            conditions.append(HistoryRecord.job_id == job_id)
        if correlation_id is not None:
            conditions.append(HistoryRecord.correlation_id == correlation_id)
        if from_ is not None:
            conditions.append(HistoryRecord.started_at >= from_)
        if to is not None:
            conditions.append(HistoryRecord.started_at < to)
        if task_identifier is not None:
            conditions.append(HistoryRecord.task_identifier == task_identifier)
        if schedule_name is not None:
            conditions.append(HistoryRecord.schedule_name == schedule_name)
        if status is not None:
            conditions.append(HistoryRecord.status == status)
        statement = (
            select(_HISTORY_T)
            .where(*conditions)
            .order_by(_HISTORY_T.c.started_at.desc(), _HISTORY_T.c.id.desc())
            .limit(limit)
        )
        return [history_.entry_of(row) for row in connection_of(connection).execute(statement)]

    def expire_history(self, connection: Executor, *, now: datetime) -> int:
        statement = delete(HistoryRecord).where(HistoryRecord.expires_at <= now)
        return connection_of(connection).execute(statement).rowcount


def _fresh(
    request: ClaimRequest, ident: tuple[str, datetime], now: datetime, lease_until: datetime
) -> dict[str, Any]:
    return log_.fresh_row(
        ident,
        request.node_id,
        now,
        lease_until,
        overlap=request.overlap,
        trigger=request.trigger,
    )


def _rows(connection: Any, statement: Any, ids: Sequence[int]) -> list[Any]:
    return list(connection.execute(statement, {"ids": list(ids)})) if ids else []


def _at(item: Closing) -> datetime:
    """The instant a closing settles at: its history row's ``finished_at``."""
    return require_aware("finished_at", item.changes["finished_at"])


def _owned_params(item: Closing, changes: dict[str, Any]) -> dict[str, Any]:
    """One row's parameters for the statements over :data:`_OWNED_BY_BOUND_ATTEMPT`."""
    return {
        "b_key": item.key,
        "b_fire_time": require_aware("fire_time", item.fire_time),
        "b_attempt": item.attempt,
        **changes,
    }


def _owned_update(key: str, fire_time: datetime, attempt: int) -> Any:
    """UPDATE of the row only while ``attempt`` owns it (``dispatched`` as that attempt)."""
    return update(DispatchRecord).where(
        DispatchRecord.key == key,
        DispatchRecord.fire_time == fire_time,
        DispatchRecord.status == DispatchStatus.DISPATCHED,
        DispatchRecord.attempt == attempt,
    )
