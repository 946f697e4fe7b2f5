"""The common base of every facet: the store's capabilities and its family's insert."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Insert, insert

if TYPE_CHECKING:
    from postburner_py.store.base import Capabilities
    from postburner_py.store.engine import Base


class Facet:
    """Holds the :class:`~postburner_py.store.base.Capabilities` every facet branches on."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities

    def insert_ignoring_conflicts(self, model: type[Base]) -> Insert:
        """``INSERT`` into ``model``'s table that skips rows violating a unique constraint.

        Rows that conflict are left as they are and not returned by ``RETURNING``; the others
        are inserted. Concurrent inserters of the same key never both succeed.
        """
        family = self.capabilities.family
        if family == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(model).on_conflict_do_nothing()
        if family == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(model).on_conflict_do_nothing()
        return insert(model)
