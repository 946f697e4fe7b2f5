"""Making the engines: the store decides how a database is connected to, once per engine.

:func:`make_engine` builds the engine of a URL with its family's options (SQLite: the
pragmas and SQLAlchemy-issued ``BEGIN``; PostgreSQL: psycopg 3 and a pre-pinged pool);
:func:`writer_engine` is the engine for read-then-write transactions, which on a
single-writer database take the write lock up front.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError

from postburner_py.config import mask_url, redact
from postburner_py.errors import ConfigurationError
from postburner_py.store.registry import store_for

#: How long a SQLite connection waits for the write lock before ``database is locked``.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Run on every new SQLite connection: foreign keys, WAL, and the busy timeout.
SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)


def make_engine(url: str, options: dict[str, Any]) -> Engine:
    """The engine of ``url``; a URL SQLAlchemy cannot use raises ConfigurationError (its
    password masked)."""
    try:
        return _create_engine(url, options)
    except (ArgumentError, ImportError, ValueError) as exc:
        reason = redact(str(exc).splitlines()[0] if str(exc) else "", database_url=url, secret=None)
        raise ConfigurationError(
            f"database_url: {mask_url(url)!r} cannot be used ({reason or type(exc).__name__}); "
            "give a SQLAlchemy URL such as postgresql+psycopg://app@db.example:5432/app "
            "or sqlite:///postburner.sqlite3"
        ) from None


def _create_engine(url: str, options: dict[str, Any]) -> Engine:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_size", 10)
    return create_engine(url, **options)


def writer_engine(engine: Engine) -> Engine:
    """The engine for read-then-write transactions: ``BEGIN IMMEDIATE`` on a single-writer
    database (so a transaction that reads and then writes never fails to upgrade its lock),
    ``engine`` itself elsewhere."""
    if store_for(engine).capabilities.single_writer:
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _begin_sqlite) so transactions are real.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _begin_sqlite(connection: Any) -> None:
    options = connection.get_execution_options()
    mode = options.get("sqlite_begin", "DEFERRED")
    busy_timeout = options.get("sqlite_busy_timeout")
    if busy_timeout is None:
        connection.exec_driver_sql(f"BEGIN {mode}")
        return
    connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy_timeout)}")
    try:
        connection.exec_driver_sql(f"BEGIN {mode}")
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
