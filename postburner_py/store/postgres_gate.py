"""The gate facet on PostgreSQL: the one-statement batch on top of the generic transaction path."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Connection

from postburner_py.store import postgres_batch
from postburner_py.store.contract.gate import BatchRow
from postburner_py.store.engine import Executor, connection_of
from postburner_py.store.sql.gate import SqlGateStore


class PostgresGateStore(SqlGateStore):
    """:class:`SqlGateStore` whose :meth:`settle_and_admit` is the batch statement of
    :mod:`postburner_py.store.postgres_batch` (data-modifying CTEs over JSON parameters, one
    autocommitted round trip, prepared once per connection and run on libpq)."""

    def prepare_batch_connection(self, connection: Connection) -> None:
        for statement in postgres_batch.SESSION_SETUP:
            connection.exec_driver_sql(statement)

    def settle_and_admit(
        self,
        connection: Executor,
        closings: Sequence[str],
        deliveries: Sequence[str],
        *,
        allowed_prefixes: Sequence[str],
        catch_up_window: timedelta,
    ) -> dict[int, BatchRow]:
        if not self.capabilities.batch_statement:
            return super().settle_and_admit(
                connection,
                closings,
                deliveries,
                allowed_prefixes=allowed_prefixes,
                catch_up_window=catch_up_window,
            )
        return postgres_batch.run_batch(
            connection_of(connection),
            closings,
            deliveries,
            allowed_prefixes=allowed_prefixes,
            catch_up_window=catch_up_window,
        )

    def end_batch(self, connection: Executor) -> None:
        postgres_batch.end_autocommit(connection_of(connection))
