"""The worker's ledger batch on PostgreSQL in one statement, without a transaction around it.

Admission and settlement (:mod:`postburner_py.worker.admission`,
:mod:`postburner_py.worker.settlement`)
are the worker's hot path: every job passes through both. On PostgreSQL a whole ledger batch
of them is one statement (data-modifying CTEs), sent in autocommit: one round trip, no BEGIN
and no COMMIT, all or nothing. It closes the history rows, dispatch rows and one-off job rows
of the finished attempts, and locks the rows the new deliveries name, claims the fresh
occurrences and records their starts. Each half travels as one JSON parameter
(``jsonb_to_recordset``): the SQL text never changes, so it is prepared once per connection
and run on libpq directly, and one string is far cheaper to send than a typed parameter per
column.

The statement only claims what it can decide for good: a live occurrence, never claimed
before, named once in the batch, whose job class the allow-list accepts and that is not too
late. Everything else it leaves to the admission's own transaction (SQLAlchemy Core, the
same code SQLite runs), which decides as it always did.
"""

from __future__ import annotations

import functools
import json
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
from psycopg.pq import ConnStatus, ExecStatus
from psycopg.pq.abc import PGconn, PGresult
from sqlalchemy import Connection

from postburner_py.validation import JOB_CLASS_PATTERN, allow_rules

# Admission: lock the rows the bodies name (in id order, reached by primary key: see _CLOSE_CTES),
# keep those still live for the body's key and run_at, and claim each (first of a batch only)
# with the start record of the claim, all or nothing per occurrence. Only rows whose job class
# the allow-list admits (allowed_condition: the rule of validation.check_job_allowed) and that
# are on time are claimed: for an execution, run_at within the catch-up window and the next one
# not due yet, which implies Admitter._too_late is false (catch_up only ever lets more run,
# and the admission's transaction decides those).
_ADMIT_CTES = """
input AS (
    SELECT (a.o - 1)::int AS n, i.*
    FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS a(j, o),
         jsonb_to_record(a.j) AS i(
             kind text, id bigint, key text, run_at timestamptz, node_id text,
             now timestamptz, correlation_id text, started_at timestamptz,
             queue_time_ms float8, expires_at timestamptz)
), one_offs AS (
    SELECT i.n, j.id, 'job:' || j.job_id AS key, j.job_id AS job_id, j.run_at,
           j.status, 'pending' AS live_status, j.job_class, j.args, j.kwargs, j.priority,
           j.ttr, j.max_attempts, j.timeout, j.no_retry_on,
           NULL::bigint AS schedule_id, NULL::timestamptz AS next_run_at,
           NULL::jsonb AS cached_schedule
    FROM postburner_delayed_jobs AS j
    JOIN input AS i ON i.kind = 'delayed' AND j.id = i.id
    WHERE j.id = ANY(ARRAY(SELECT id FROM input WHERE kind = 'delayed'))
    ORDER BY j.id
    FOR UPDATE OF j
), executions AS (
    SELECT i.n, e.id, e.cached_schedule ->> 'name' AS key, e.id::text AS job_id,
           e.run_at, e.status, 'scheduled' AS live_status,
           e.cached_schedule ->> 'job_class' AS job_class,
           NULL::jsonb AS args, NULL::jsonb AS kwargs, NULL::bigint AS priority,
           NULL::int AS ttr, s.max_attempts, s.timeout, s.no_retry_on, e.schedule_id,
           e.next_run_at, e.cached_schedule
    FROM postburner_schedule_executions AS e
    JOIN input AS i ON i.kind = 'execution' AND e.id = i.id
    LEFT JOIN postburner_schedules AS s ON s.id = e.schedule_id
    WHERE e.id = ANY(ARRAY(SELECT id FROM input WHERE kind = 'execution'))
    ORDER BY e.id
    FOR UPDATE OF e
), found AS (
    SELECT * FROM one_offs UNION ALL SELECT * FROM executions
), fresh AS (
    SELECT DISTINCT ON (f.key, f.run_at)
           f.n, f.key, f.run_at, f.job_class, f.job_id, i.node_id, i.now,
           i.correlation_id, i.started_at, i.queue_time_ms, i.expires_at,
           i.now + make_interval(secs => coalesce(f.ttr, (f.cached_schedule ->> 'ttr')::int, 300))
               AS lease_until
    FROM found AS f
    JOIN input AS i ON i.n = f.n
    WHERE f.status = f.live_status AND f.key = i.key AND f.run_at = i.run_at
      AND {allowed}
      AND (f.live_status = 'pending'
           OR (f.run_at >= i.now - make_interval(secs => $4::float8)
               AND (f.next_run_at IS NULL OR f.next_run_at > i.now)))
    ORDER BY f.key, f.run_at, f.n
), claimed AS (
    INSERT INTO postburner_dispatches
        (key, fire_time, dispatched_at, node_id, status, attempt, lease_expires_at, updated_at)
    SELECT key, run_at, now, node_id, 'dispatched', 1, lease_until, now FROM fresh
    ON CONFLICT (key, fire_time) DO NOTHING
    RETURNING key, fire_time
), started AS (
    INSERT INTO postburner_job_history
        (job_id, correlation_id, task_identifier, schedule_name, status, worker_id, attempt,
         run_at, started_at, queue_time_ms, expires_at, results)
    SELECT f.job_id, f.correlation_id, f.job_class, f.key, 'started', f.node_id, 1,
           f.run_at, f.started_at, f.queue_time_ms, f.expires_at, 'null'::jsonb
    FROM fresh AS f
    JOIN claimed AS c ON c.key = f.key AND c.fire_time = f.run_at
    RETURNING id, schedule_name, run_at
)
"""


def allowed_condition(job_class: str, rules: str = "$3::jsonb") -> str:
    """SQL that is true exactly when :func:`~postburner_py.validation.check_job_allowed` admits
    the job class ``job_class`` (an SQL expression) under ``rules`` (an SQL expression, the
    JSON of :func:`allow_parameter`; in the batch statement its ``$3``): the same spelling
    pattern, then the same whole-segment test on the dotted spelling (``:`` read as ``.``).
    A job class it refuses is not claimed here: the admission's transaction refuses it, with
    the reason."""
    dotted = f"translate({job_class}, ':', '.')"
    return f"""({job_class} ~ '^({JOB_CLASS_PATTERN})$'
           AND ({rules} = '[]'
                OR EXISTS (SELECT FROM jsonb_to_recordset({rules}) AS p(name text, exact bool)
                           WHERE {dotted} = p.name
                              OR (NOT p.exact AND starts_with({dotted}, p.name || '.')))))"""


@functools.lru_cache(maxsize=16)
def allow_parameter(prefixes: tuple[str, ...]) -> bytes:
    """The batch statement's ``$3``: the parsed allow-list as JSON (``[]``: admit any)."""
    rules = allow_rules(prefixes)
    return json.dumps([{"name": rule.name, "exact": rule.exact} for rule in rules]).encode()


# The pattern travels inside an SQL string literal: it has no quote and no backslash to escape.
assert "'" not in JOB_CLASS_PATTERN and "\\" not in JOB_CLASS_PATTERN
_ADMIT_CTES = _ADMIT_CTES.replace("{allowed}", allowed_condition("f.job_class"))

# One row per delivery whose row exists: its number, whether only the admission's transaction
# can decide it (live for the body's run_at but not claimed here), and the row as one JSON
# array (instants as epoch microseconds), parsed by admitted_row on the worker thread that
# asked: the ledger's thread, the one everybody waits for, only reads three text values.
_ADMIT_ANSWER = """
SELECT f.n,
       f.status = f.live_status AND f.run_at = i.run_at AND s.id IS NULL AS undecided,
       json_build_array(
           f.id, f.key, f.job_id, (extract(epoch FROM f.run_at) * 1000000)::bigint,
           f.status = f.live_status, f.job_class, f.args, f.kwargs, f.priority, f.ttr,
           f.max_attempts, f.schedule_id,
           (extract(epoch FROM f.next_run_at) * 1000000)::bigint, f.cached_schedule, s.id,
           f.timeout, f.no_retry_on)
FROM found AS f
JOIN input AS i ON i.n = f.n
LEFT JOIN fresh AS x ON x.n = f.n
LEFT JOIN started AS s ON s.schedule_name = x.key AND s.run_at = x.run_at
"""
#: A row of the answer, parsed (:func:`admitted_row`).
AdmittedRow = namedtuple(
    "AdmittedRow",
    "id key job_id run_at live job_class args kwargs priority ttr max_attempts "
    "schedule_id next_run_at cached_schedule history_id timeout no_retry_on",
)
#: A row of the answer as the ledger's thread reads it: ``undecided`` (see above) and the
#: unparsed JSON of the row.
BatchRow = namedtuple("BatchRow", "undecided data")


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
        """The delivery as the statement's JSON takes it (its number is its position)."""
        return json.dumps({name: _json(getattr(self, name)) for name in Delivery.__slots__})


# Closing: no results are stored as JSON null, as SQLAlchemy stores None in a JSON column
# (so "results IS NULL" means the same for every row). Each UPDATE reaches its rows through
# "key = ANY(ARRAY(SELECT ... FROM the batch))", an index condition on the primary or unique
# key (joined only to a set-returning function, the planner assumes 100 input rows and scans
# the table), and guards the status with IS NOT DISTINCT FROM, which no index serves: with
# "status = 'started'" the planner went through the status indexes, whose dead entries pile
# up under a busy worker until vacuum.
_CLOSE_CTES = """
closed_history AS (
    UPDATE postburner_job_history AS h
    SET status = i.status, worker_id = i.worker_id, finished_at = i.finished_at,
        execution_time_ms = i.execution_time_ms, started_at = i.started_at,
        queue_time_ms = i.queue_time_ms, results = coalesce(i.results, 'null'::jsonb),
        error_message = i.error_message, error_stack = i.error_stack
    FROM jsonb_to_recordset($1::jsonb) AS i(
        history_id bigint, status text, worker_id text, finished_at timestamptz,
        execution_time_ms float8, started_at timestamptz, queue_time_ms float8,
        results jsonb, error_message text, error_stack text)
    WHERE h.id = ANY(ARRAY(
            SELECT (e ->> 'history_id')::bigint FROM jsonb_array_elements($1::jsonb) e))
      AND h.id = i.history_id AND h.status IS NOT DISTINCT FROM 'started'
    RETURNING h.id
), closed_dispatches AS (
    UPDATE postburner_dispatches AS d
    SET status = coalesce(i.final_status, d.status),
        lease_expires_at = CASE WHEN i.final_status IS NULL THEN i.finished_at END,
        updated_at = i.finished_at
    FROM jsonb_to_recordset($1::jsonb) AS i(
        key text, fire_time timestamptz, attempt int, final_status text,
        finished_at timestamptz)
    WHERE d.key = ANY(ARRAY(SELECT e ->> 'key' FROM jsonb_array_elements($1::jsonb) e))
      AND d.key = i.key AND d.fire_time = i.fire_time
      AND d.status IS NOT DISTINCT FROM 'dispatched' AND d.attempt = i.attempt
    RETURNING d.id
), closed_one_offs AS (
    UPDATE postburner_delayed_jobs AS j
    SET status = i.delayed_status, updated_at = i.finished_at
    FROM jsonb_to_recordset($1::jsonb) AS i(
        delayed_id bigint, delayed_status text, finished_at timestamptz)
    WHERE j.id = ANY(ARRAY(
            SELECT (e ->> 'delayed_id')::bigint FROM jsonb_array_elements($1::jsonb) e))
      AND j.id = i.delayed_id AND j.status IS NOT DISTINCT FROM 'pending'
    RETURNING j.id
)
"""
# $1: the closings, $2: the deliveries (JSON arrays), $3: the allow-list's rules
# (allow_parameter), $4: the catch-up window in seconds; all text, sent as they are.
# Data-modifying CTEs run to completion whether or not the answer reads them.
_BATCH = "WITH " + _CLOSE_CTES.strip() + ",\n" + _ADMIT_CTES.strip() + _ADMIT_ANSWER
#: The name the batch statement is prepared under, once per connection.
_STATEMENT = b"postburner_batch"
_PREPARED = "postburner_batch_prepared"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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

    def wire(self) -> str:
        """The closing as the statement's JSON takes it."""
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


def run_batch(
    connection: Connection,
    closings: Sequence[str],
    deliveries: Sequence[str],
    *,
    allowed_prefixes: Sequence[str],
    catch_up_window: timedelta,
) -> dict[int, BatchRow]:
    """Close ``closings`` and admit ``deliveries`` (their :meth:`~Closing.wire` and
    :meth:`~Delivery.wire` forms) in one autocommitted statement, outside any transaction
    (the connection must be idle, and is left in autocommit: see :func:`end_autocommit`).
    Answers the row each delivery names, by position (absent when there is none).

    The statement is prepared once per connection and run on libpq directly, which waits
    for the server without the GIL; psycopg's cursor machinery (query conversion, the
    prepared-statement cache, row loaders) cost the ledger's thread more than the rest of
    the batch's Python work."""
    parameters = [
        ("[" + ",".join(closings) + "]").encode(),
        ("[" + ",".join(deliveries) + "]").encode(),
        allow_parameter(tuple(allowed_prefixes)),
        repr(catch_up_window.total_seconds()).encode(),
    ]
    driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
    if not driver.autocommit:
        # Left on for the next batch: switching costs more than the statement's own work.
        # end_autocommit switches it off before a transaction or the pool sees it.
        driver.autocommit = True
    pgconn = driver.pgconn
    if connection.info.get(_PREPARED) is not pgconn:
        _checked(pgconn, pgconn.prepare(_STATEMENT, _BATCH.encode()), ExecStatus.COMMAND_OK)
        connection.info[_PREPARED] = pgconn
    result = _checked(pgconn, pgconn.exec_prepared(_STATEMENT, parameters), ExecStatus.TUPLES_OK)
    value = result.get_value
    return {
        int(value(row, 0) or b""): BatchRow(value(row, 1) == b"t", value(row, 2))
        for row in range(result.ntuples)
    }


def _checked(pgconn: PGconn, result: PGresult, expected: ExecStatus) -> PGresult:
    """``result``, or its error raised (psycopg's class for its SQLSTATE)."""
    if result.status != expected:
        if pgconn.status != ConnStatus.OK:
            raise psycopg.OperationalError(
                f"the ledger's connection is lost: {pgconn.error_message.decode(errors='replace')}"
            )
        raise psycopg.errors.error_from_result(result, encoding="utf-8")
    return result


def end_autocommit(connection: Connection) -> None:
    """Undo what :func:`run_batch` leaves on, before a transaction or before the connection
    goes back to the pool (where an autocommit connection would commit its users' work
    statement by statement)."""
    driver = connection.connection.driver_connection
    if getattr(driver, "autocommit", False):
        driver.autocommit = False  # type: ignore[union-attr]


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
