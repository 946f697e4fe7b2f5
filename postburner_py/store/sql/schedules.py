"""The generic SQLAlchemy implementation of one facet of the storage seam."""

from __future__ import annotations

from postburner_py.store.contract.schedules import ScheduleStore


class SqlScheduleStore(ScheduleStore):
    """:class:`ScheduleStore` in SQLAlchemy Core; branches on capabilities where families differ."""
