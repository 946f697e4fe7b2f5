"""The worker's batch statements on PostgreSQL: set-based SQL on the raw psycopg connection.

Admission and settlement (:mod:`postburner_py.admission`, :mod:`postburner_py.settlement`)
are the worker's hot path: every job passes through both. On PostgreSQL a batch of them costs
three statements in all: one ``SELECT ... FOR UPDATE`` of the rows, one statement that claims
the fresh occurrences and records their starts (a data-modifying CTE), and one that closes
the history rows, the dispatch rows and the one-off job rows of the finished attempts. A batch
travels as one JSON parameter (``jsonb_to_recordset``): the SQL text never changes, so psycopg
prepares it once, and one string is far cheaper to send than a typed array per column.
SQLite runs the same steps through SQLAlchemy Core (same tables, same results: the worker
tests run on both).
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from psycopg import Cursor
from sqlalchemy import Connection

_LOAD_DELAYED = """
SELECT id, job_id, job_class, args, kwargs, priority, ttr, max_attempts, run_at, status
FROM postburner_delayed_jobs
WHERE id = ANY(%s::bigint[])
ORDER BY id
FOR UPDATE
"""
DelayedRow = namedtuple(
    "DelayedRow",
    "id job_id job_class args kwargs priority ttr max_attempts run_at status",
)

_LOAD_EXECUTIONS = """
SELECT e.id, e.schedule_id, e.run_at, e.next_run_at, e.status, e.cached_schedule,
       s.max_attempts
FROM postburner_schedule_executions AS e
LEFT JOIN postburner_schedules AS s ON s.id = e.schedule_id
WHERE e.id = ANY(%s::bigint[])
ORDER BY e.id
FOR UPDATE OF e
"""
_CURSOR = "postburner_batch_cursor"

ExecutionRow = namedtuple(
    "ExecutionRow", "id schedule_id run_at next_run_at status cached_schedule max_attempts"
)

_CLAIM_AND_START = """
WITH input AS (
    SELECT *
    FROM jsonb_to_recordset(%s::jsonb) AS i(
        key text, fire_time timestamptz, node_id text, lease_until timestamptz,
        now timestamptz, job_id text, task text, correlation_id text,
        started_at timestamptz, queue_time_ms float8, expires_at timestamptz)
), claimed AS (
    INSERT INTO postburner_dispatches
        (key, fire_time, dispatched_at, node_id, status, attempt, lease_expires_at, updated_at)
    SELECT key, fire_time, now, node_id, 'dispatched', 1, lease_until, now FROM input
    ON CONFLICT (key, fire_time) DO NOTHING
    RETURNING key, fire_time
)
INSERT INTO postburner_job_history
    (job_id, correlation_id, task_identifier, schedule_name, status, worker_id, attempt,
     run_at, started_at, queue_time_ms, expires_at)
SELECT i.job_id, i.correlation_id, i.task, i.key, 'started', i.node_id, 1,
       i.fire_time, i.started_at, i.queue_time_ms, i.expires_at
FROM input AS i
JOIN claimed AS c ON c.key = i.key AND c.fire_time = i.fire_time
RETURNING id, schedule_name, run_at
"""

# Closing is three plain statements per attempt, sent as one pipeline (one round trip for the
# batch). Each names its row by primary or unique key and guards the status with
# IS NOT DISTINCT FROM, which no index serves: with "status = 'started'" the planner reached
# the row through the status index (its statistics say few rows have that status), whose dead
# entries pile up under a busy worker until vacuum, and each close got slower than the last.
_CLOSE_HISTORY = """
UPDATE postburner_job_history
SET status = %(status)s, worker_id = %(worker_id)s, finished_at = %(finished_at)s,
    execution_time_ms = %(execution_time_ms)s, started_at = %(started_at)s,
    queue_time_ms = %(queue_time_ms)s, results = %(results)s::jsonb,
    error_message = %(error_message)s, error_stack = %(error_stack)s
WHERE id = %(history_id)s AND status IS NOT DISTINCT FROM 'started'
"""
_CLOSE_DISPATCH = """
UPDATE postburner_dispatches
SET status = coalesce(%(final_status)s, status),
    lease_expires_at = CASE WHEN %(final_status)s::text IS NULL THEN %(finished_at)s END,
    updated_at = %(finished_at)s
WHERE key = %(key)s AND fire_time = %(fire_time)s
  AND status IS NOT DISTINCT FROM 'dispatched' AND attempt = %(attempt)s
"""
_CLOSE_ONE_OFF = """
UPDATE postburner_delayed_jobs
SET status = %(delayed_status)s, updated_at = %(finished_at)s
WHERE id = %(delayed_id)s AND status IS NOT DISTINCT FROM 'pending'
"""


@dataclass(frozen=True, slots=True)
class FreshStart:
    """A claim of a batch that found no row yet, and the start record it comes with."""

    key: str
    fire_time: datetime
    node_id: str
    lease_until: datetime
    now: datetime
    job_id: str
    task: str
    correlation_id: str | None
    started_at: datetime
    queue_time_ms: float | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Closing:
    """One finished attempt, as the settlement statement takes it.

    ``final_status`` is the dispatch row's final status, or None to end the lease for a
    retry; ``delayed_status`` closes a one-off job's row (None: not a one-off, or a retry).
    """

    history_id: int
    changes: dict[str, Any]
    key: str
    fire_time: datetime
    attempt: int
    final_status: str | None
    delayed_id: int | None
    delayed_status: str | None


def cursor_of(connection: Connection) -> Cursor[Any]:
    """The cursor kept on the psycopg connection behind ``connection`` (same transaction;
    made once per connection: a cursor costs more to set up than these statements to send)."""
    cursor = connection.info.get(_CURSOR)
    if cursor is None or cursor.closed:
        driver = connection.connection.driver_connection
        cursor = connection.info[_CURSOR] = driver.cursor()  # type: ignore[union-attr]
    return cast(Cursor[Any], cursor)


def load_locked_rows(
    connection: Connection, delayed_ids: Sequence[int], execution_ids: Sequence[int]
) -> tuple[list[DelayedRow], list[ExecutionRow]]:
    """The one-off job rows and execution rows of those ids, locked in id order; instants
    in UTC."""
    cursor = cursor_of(connection)
    delayed = [DelayedRow._make(row) for row in _fetch(cursor, _LOAD_DELAYED, delayed_ids)]
    executions = [
        ExecutionRow._make(row) for row in _fetch(cursor, _LOAD_EXECUTIONS, execution_ids)
    ]
    return delayed, executions


def claim_and_start(
    connection: Connection, starts: Sequence[FreshStart]
) -> dict[tuple[str, datetime], int]:
    """Insert the claims that find no row and the start record of each claim that went in;
    the history id of each ``(key, fire_time)`` claimed. The others are claimed already."""
    if not starts:
        return {}
    batch = [
        {name: _json(getattr(start, name)) for name in FreshStart.__slots__} for start in starts
    ]
    cursor = cursor_of(connection)
    cursor.execute(_CLAIM_AND_START, (json.dumps(batch),))
    rows = cursor.fetchall()
    return {(key, run_at.astimezone(UTC)): row_id for row_id, key, run_at in rows}


def settle(connection: Connection, closings: Sequence[Closing]) -> None:
    """Close the history rows, dispatch rows and one-off job rows of finished attempts."""
    if not closings:
        return
    rows = [
        {
            "history_id": item.history_id,
            "key": item.key,
            "fire_time": item.fire_time,
            "attempt": item.attempt,
            "final_status": item.final_status,
            "delayed_id": item.delayed_id,
            "delayed_status": item.delayed_status,
            **item.changes,
            "status": str(item.changes["status"]),
            "results": _json_text(item.changes["results"]),
        }
        for item in closings
    ]
    cursor = cursor_of(connection)
    with cursor.connection.pipeline():
        cursor.executemany(_CLOSE_HISTORY, rows)
        cursor.executemany(_CLOSE_DISPATCH, rows)
        one_offs = [row for row in rows if row["delayed_status"] is not None]
        if one_offs:
            cursor.executemany(_CLOSE_ONE_OFF, one_offs)


def _fetch(cursor: Cursor[Any], statement: str, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    if not ids:
        return []
    cursor.execute(statement, (list(ids),))
    return [_in_utc(row) for row in cursor.fetchall()]


def _in_utc(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row with its instants in UTC (psycopg answers in the session's time zone)."""
    return tuple(value.astimezone(UTC) if isinstance(value, datetime) else value for value in row)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _json(value: Any) -> Any:
    """A value as the batch's JSON carries it: instants in ISO 8601, str-enums as strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    return value
