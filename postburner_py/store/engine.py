"""Shared SQLAlchemy building blocks: the declarative base and portable column types."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON on every backend, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: 64-bit integer primary keys on PostgreSQL; SQLite needs INTEGER for rowid aliasing.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant stored as UTC.

    PostgreSQL stores ``timestamptz``; SQLite stores text without an offset, which
    is read back as UTC. Naive datetimes are refused: the library never guesses a zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass an aware datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    """Declarative base of every postburner_py table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """The current instant, timezone-aware UTC. The default clock."""
    return datetime.now(UTC)


#: What makes a new ORM session (``Postburner.session``, a sessionmaker).
SessionFactory = Callable[[], Session]
#: Where a statement may run: an ORM session's transaction or a Core connection's.
Executor = Session | Connection


def connection_of(target: Executor) -> Connection:
    """The Core connection behind ``target`` (the worker's hot path skips the ORM)."""
    return target.connection() if isinstance(target, Session) else target
