"""The generic SQLAlchemy implementation of one facet of the storage seam."""

from __future__ import annotations

from postburner_py.store.contract.gate import GateStore


class SqlGateStore(GateStore):
    """:class:`GateStore` in SQLAlchemy Core, branching on capabilities where families differ."""
