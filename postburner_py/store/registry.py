"""Finding the store of an engine, a connection or a session: one per dialect family."""

from __future__ import annotations

import threading

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from postburner_py.errors import ConfigurationError
from postburner_py.store.base import Store

_stores: dict[str, Store] = {}
_lock = threading.Lock()

Bind = Engine | Connection | Session


def store_for(bind: Bind) -> Store:
    """The :class:`~postburner_py.store.base.Store` for ``bind``'s dialect family.

    Built once per family (its capabilities decided then) and shared by every engine of that
    family; cheap to call on every operation. Raises :class:`ConfigurationError` for a
    dialect no store implements.
    """
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    family = engine.dialect.name
    store = _stores.get(family)
    if store is None:
        with _lock:
            store = _stores.get(family) or _build(family)
            _stores[family] = store
    return store


def _build(family: str) -> Store:
    if family == "postgresql":
        from postburner_py.store.postgresql import PostgresStore

        return PostgresStore()
    if family == "sqlite":
        from postburner_py.store.sqlite import SqliteStore

        return SqliteStore()
    raise ConfigurationError(
        f"database: no store for the {family!r} dialect; use a postgresql:// or sqlite:// URL"
    )
