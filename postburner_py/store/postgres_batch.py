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
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

import psycopg
from psycopg.pq import ConnStatus, ExecStatus
from psycopg.pq.abc import PGconn, PGresult
from sqlalchemy import Connection

from postburner_py.store import queries
from postburner_py.store.contract.gate import (
    AdmittedRow,
    BatchRow,
    Closing,
    Delivery,
    admitted_row,
)
from postburner_py.validation import JOB_CLASS_PATTERN, allow_rules

__all__ = [
    "SESSION_SETUP",
    "AdmittedRow",
    "BatchRow",
    "Closing",
    "Delivery",
    "admitted_row",
    "allow_parameter",
    "allowed_condition",
    "end_autocommit",
    "run_batch",
]


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

#: The named fragments of the batch statement (``sql_files/postgres_batch.sql``).
_QUERIES = queries.load("postgres_batch")
#: Run once on the ledger's connection (see the query's description).
SESSION_SETUP = (_QUERIES["session_setup"],)
# Data-modifying CTEs run to completion whether or not the answer reads them.
_BATCH = (
    "WITH "
    + _QUERIES["close_ctes"]
    + ",\n"
    + _QUERIES["admit_ctes"].replace("{allowed}", allowed_condition("f.job_class"))
    + "\n"
    + _QUERIES["admit_answer"]
)
#: The name the batch statement is prepared under, once per connection.
_STATEMENT = b"postburner_batch"
_PREPARED = "postburner_batch_prepared"


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
