"""The common base of every facet: the store's capabilities and its family's INSERT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import postgresql, sqlite

if TYPE_CHECKING:
    from postburner_py.store.base import Capabilities
    from postburner_py.store.engine import Base


class Facet:
    """Holds the :class:`~postburner_py.store.base.Capabilities` every facet branches on."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities

    def insert_ignoring_conflicts(self, model: type[Base]) -> Any:
        """``INSERT`` into ``model``'s table that skips rows violating a unique constraint.

        Rows that conflict are left as they are and not returned by ``RETURNING``; the others
        are inserted. Concurrent inserters of the same key never both succeed.
        """
        return self._family_insert(model).on_conflict_do_nothing()

    def upsert(
        self,
        model: type[Base],
        keys: Sequence[str],
        row: Mapping[str, Any],
        changes: Mapping[str, Any],
    ) -> Any:
        """``INSERT`` of ``row``, updated with ``changes`` when its ``keys`` conflict (one
        statement: two concurrent upserts of one key leave one row)."""
        statement = self._family_insert(model).values(dict(row))
        return statement.on_conflict_do_update(index_elements=list(keys), set_=dict(changes))

    def _family_insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        # Both dialects spell ON CONFLICT the same way in SQLAlchemy; the family picks which.
        if self.capabilities.family == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)
