"""The per-schedule lock that serialises reconcile and chaining (kept as an import path).

The lock is a method of the store (:meth:`~postburner_py.store.contract.schedules.ScheduleStore.\
lock_schedules`, :meth:`~postburner_py.store.contract.schedules.ScheduleStore.try_lock_schedules`).
PostgreSQL: a transaction-scoped advisory lock keyed by a 64-bit hash of the namespace and
schedule id, released when the session commits or rolls back, and by the server if the process
dies. SQLite: an immediate write transaction (``BEGIN IMMEDIATE``), which excludes every other
writer.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from postburner_py.store.registry import store_for
from postburner_py.store.sql.schedules import SQLITE_TRY_LOCK_MS, schedule_lock_key

__all__ = ["SQLITE_TRY_LOCK_MS", "begin_locked", "schedule_lock_key", "try_lock_schedules"]


def begin_locked(
    session: Session, namespace: str, schedule_ids: Iterable[int], *, blocking: bool
) -> bool:
    """Start ``session``'s transaction holding the lock of every schedule in ``schedule_ids``
    (see ``Store.lock_schedules``)."""
    return store_for(session).lock_schedules(session, namespace, schedule_ids, blocking=blocking)


def try_lock_schedules(session: Session, namespace: str, schedule_ids: Iterable[int]) -> set[int]:
    """Inside an open transaction, take every lock that is free; return those ids
    (see ``Store.try_lock_schedules``)."""
    return store_for(session).try_lock_schedules(session, namespace, schedule_ids)
