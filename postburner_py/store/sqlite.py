"""The SQLite store: the generic implementation under one writer at a time."""

from __future__ import annotations

from postburner_py.store.base import Capabilities, Store
from postburner_py.store.sql.gate import SqlGateStore
from postburner_py.store.sql.reports import SqlReportStore
from postburner_py.store.sql.schedules import SqlScheduleStore

CAPABILITIES = Capabilities(
    family="sqlite",
    advisory_locks=False,
    single_writer=True,
    batch_statement=False,
    array_parameters=False,
    unparsable_instants=True,
    config_digests=False,
)


class SqliteStore(SqlScheduleStore, SqlGateStore, SqlReportStore, Store):
    """:class:`~postburner_py.store.base.Store` on SQLite (``BEGIN IMMEDIATE`` is the lock)."""

    def __init__(self) -> None:
        super().__init__(CAPABILITIES)
