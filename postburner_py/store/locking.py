"""All locking in one place: the per-schedule lock that serialises reconcile and chaining.

PostgreSQL: a transaction-scoped advisory lock keyed by a 64-bit hash of the namespace and
schedule id (``pg_advisory_xact_lock``, or ``pg_try_advisory_xact_lock`` when not blocking);
it is released when the session commits or rolls back, and by the server if the process dies.
SQLite: an immediate write transaction (``BEGIN IMMEDIATE``), which excludes every other writer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

#: How long a non-blocking lock waits on SQLite, whose write lock covers every schedule.
SQLITE_TRY_LOCK_MS = 250


def schedule_lock_key(namespace: str, schedule_id: int) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(f"{namespace}:schedule:{schedule_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def begin_locked(
    session: Session, namespace: str, schedule_ids: Iterable[int], *, blocking: bool
) -> bool:
    """Start ``session``'s transaction holding the lock of every schedule in ``schedule_ids``.

    Must be the first thing done with a fresh session. Returns False, with the session's
    transaction rolled back, when ``blocking`` is False and a lock is taken elsewhere.
    Several ids are locked in ascending order so two lockers never deadlock.
    """
    if session.get_bind().dialect.name == "sqlite":
        return _begin_immediate(session, blocking=blocking)
    function = "pg_advisory_xact_lock" if blocking else "pg_try_advisory_xact_lock"
    for schedule_id in sorted(set(schedule_ids)):
        key = schedule_lock_key(namespace, schedule_id)
        acquired = session.execute(text(f"SELECT {function}(:key)"), {"key": key}).scalar()
        if not blocking and not acquired:
            session.rollback()
            return False
    return True


def try_lock_schedules(session: Session, namespace: str, schedule_ids: Iterable[int]) -> set[int]:
    """Inside an open PostgreSQL transaction, take every lock that is free; return those ids.

    Used by batch passes that must not wait on a schedule someone else is repairing.
    SQLite has one writer at a time, so every id is already covered by the transaction.
    """
    ids = sorted(set(schedule_ids))
    if session.get_bind().dialect.name == "sqlite" or not ids:
        return set(ids)
    keys = [schedule_lock_key(namespace, schedule_id) for schedule_id in ids]
    rows = session.execute(
        text("SELECT k, pg_try_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": keys},
    ).all()
    acquired = {key for key, ok in rows if ok}
    return {schedule_id for schedule_id, key in zip(ids, keys, strict=True) if key in acquired}


def _begin_immediate(session: Session, *, blocking: bool) -> bool:
    options = {"sqlite_begin": "IMMEDIATE"}
    if not blocking:
        # SQLite's lock is the whole database: wait out another writer's short transaction,
        # but not a long one.
        options["sqlite_busy_timeout"] = str(SQLITE_TRY_LOCK_MS)
    try:
        session.connection(execution_options=options)
    except OperationalError as exc:
        if blocking or "locked" not in str(exc).lower():
            raise
        session.rollback()
        return False
    return True
