"""The PostgreSQL store: advisory locks, array parameters and the one-statement batch path."""

from __future__ import annotations

from postburner_py.store.base import Capabilities, Store
from postburner_py.store.postgres_gate import PostgresGateStore
from postburner_py.store.sql.reports import SqlReportStore
from postburner_py.store.sql.schedules import SqlScheduleStore

CAPABILITIES = Capabilities(
    family="postgresql",
    advisory_locks=True,
    single_writer=False,
    batch_statement=True,
    array_parameters=True,
    unparsable_instants=False,
    config_digests=True,
)


class PostgresStore(SqlScheduleStore, PostgresGateStore, SqlReportStore, Store):
    """:class:`~postburner_py.store.base.Store` on PostgreSQL."""

    def __init__(self, capabilities: Capabilities = CAPABILITIES) -> None:
        super().__init__(capabilities)
