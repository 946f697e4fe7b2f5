"""The generic SQLAlchemy implementation of one facet of the storage seam."""

from __future__ import annotations

from postburner_py.store.contract.reports import ReportStore


class SqlReportStore(ReportStore):
    """:class:`ReportStore` in SQLAlchemy Core, branching on capabilities where families differ."""
